import assert from "node:assert/strict";
import { test } from "node:test";
import { agentNodeFlags, KERNEL_AGENT_MIN_SEMI_SPACE_MB } from "./agent.js";

test("a kernel-path agent re-executes once with a young-generation floor; others and re-executed ones do not", () => {
  assert.deepEqual(agentNodeFlags("kernel", [], {}), [
    `--min-semi-space-size=${KERNEL_AGENT_MIN_SEMI_SPACE_MB}`,
  ]);
  assert.equal(agentNodeFlags("userspace", [], {}), undefined);
  assert.equal(agentNodeFlags("auto", [], {}), undefined);
  assert.equal(agentNodeFlags("kernel", [], { ISTHMUS_AGENT_REEXEC: "1" }), undefined, "the child itself");
  assert.equal(
    agentNodeFlags("kernel", ["--min-semi-space-size=32"], {}),
    undefined,
    "an operator's own size wins",
  );
});
