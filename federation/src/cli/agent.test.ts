import assert from "node:assert/strict";
import { test } from "node:test";
import { MALLOC_HUGE_PAGES_TUNABLE } from "@isthmus/schema";
import { agentReexec, KERNEL_AGENT_MIN_SEMI_SPACE_MB } from "./agent.js";

const HUGE = { GLIBC_TUNABLES: MALLOC_HUGE_PAGES_TUNABLE };

test("a kernel-path agent re-executes once with a young-generation floor; others and re-executed ones do not", () => {
  assert.deepEqual(agentReexec("kernel", [], HUGE, "linux"), {
    flags: [`--min-semi-space-size=${KERNEL_AGENT_MIN_SEMI_SPACE_MB}`],
    env: HUGE,
  });
  assert.equal(agentReexec("userspace", [], HUGE, "linux"), undefined);
  assert.equal(agentReexec("auto", [], HUGE, "linux"), undefined);
  assert.equal(
    agentReexec("kernel", [], { ISTHMUS_AGENT_REEXEC: "1" }, "linux"),
    undefined,
    "the child itself",
  );
  assert.equal(
    agentReexec("kernel", ["--min-semi-space-size=32"], HUGE, "linux"),
    undefined,
    "an operator's own size wins",
  );
});

test("an agent started without malloc's huge pages re-executes with them (Linux), keeping other tunables", () => {
  assert.deepEqual(agentReexec("userspace", [], { PATH: "/bin" }, "linux"), {
    flags: [],
    env: { PATH: "/bin", GLIBC_TUNABLES: MALLOC_HUGE_PAGES_TUNABLE },
  });
  assert.deepEqual(agentReexec("kernel", [], { GLIBC_TUNABLES: "glibc.malloc.arena_max=2" }, "linux"), {
    flags: [`--min-semi-space-size=${KERNEL_AGENT_MIN_SEMI_SPACE_MB}`],
    env: { GLIBC_TUNABLES: `glibc.malloc.arena_max=2:${MALLOC_HUGE_PAGES_TUNABLE}` },
  });
  assert.equal(
    agentReexec("userspace", [], { GLIBC_TUNABLES: "glibc.malloc.hugetlb=0" }, "linux"),
    undefined,
    "an operator's own setting wins",
  );
  assert.equal(agentReexec("userspace", [], {}, "darwin"), undefined, "not glibc");
});
