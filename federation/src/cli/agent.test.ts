import assert from "node:assert/strict";
import { test } from "node:test";
import { MALLOC_HUGE_PAGES_TUNABLE, MEMORY_REDUCER_ENV, NO_MEMORY_REDUCER_FLAG } from "@isthmus/schema";
import { agentReexec, KERNEL_AGENT_MIN_SEMI_SPACE_MB } from "./agent.js";

const HUGE = { GLIBC_TUNABLES: MALLOC_HUGE_PAGES_TUNABLE };
/** Node flags the agent has when started as it should be on every path but the kernel's. */
const NO_REDUCER = [NO_MEMORY_REDUCER_FLAG];

test("a kernel-path agent re-executes once with a young-generation floor; others and re-executed ones do not", () => {
  assert.deepEqual(agentReexec("kernel", NO_REDUCER, HUGE, "linux"), {
    flags: [`--min-semi-space-size=${KERNEL_AGENT_MIN_SEMI_SPACE_MB}`],
    env: HUGE,
  });
  assert.equal(agentReexec("userspace", NO_REDUCER, HUGE, "linux"), undefined);
  assert.equal(agentReexec("auto", NO_REDUCER, HUGE, "linux"), undefined);
  assert.equal(
    agentReexec("kernel", [], { ISTHMUS_AGENT_REEXEC: "1" }, "linux"),
    undefined,
    "the child itself",
  );
  assert.equal(
    agentReexec("kernel", ["--min-semi-space-size=32", ...NO_REDUCER], HUGE, "linux"),
    undefined,
    "an operator's own size wins",
  );
});

test("an agent started with V8's memory reducer re-executes without it, unless told to keep it", () => {
  assert.deepEqual(agentReexec("userspace", [], HUGE, "linux"), { flags: NO_REDUCER, env: HUGE });
  assert.deepEqual(agentReexec("kernel", [], HUGE, "linux"), {
    flags: [`--min-semi-space-size=${KERNEL_AGENT_MIN_SEMI_SPACE_MB}`, ...NO_REDUCER],
    env: HUGE,
  });
  const keep = { ...HUGE, [MEMORY_REDUCER_ENV]: "1" };
  assert.equal(agentReexec("userspace", [], keep, "linux"), undefined);
  assert.equal(agentReexec("userspace", ["--memory-reducer"], HUGE, "linux"), undefined);
  assert.throws(
    () => agentReexec("userspace", [], { ...HUGE, [MEMORY_REDUCER_ENV]: "2" }, "linux"),
    /must be 0 or 1/,
  );
});

test("an agent started without malloc's huge pages re-executes with them (Linux), keeping other tunables", () => {
  assert.deepEqual(agentReexec("userspace", NO_REDUCER, { PATH: "/bin" }, "linux"), {
    flags: [],
    env: { PATH: "/bin", GLIBC_TUNABLES: MALLOC_HUGE_PAGES_TUNABLE },
  });
  assert.deepEqual(
    agentReexec("kernel", NO_REDUCER, { GLIBC_TUNABLES: "glibc.malloc.arena_max=2" }, "linux"),
    {
      flags: [`--min-semi-space-size=${KERNEL_AGENT_MIN_SEMI_SPACE_MB}`],
      env: { GLIBC_TUNABLES: `glibc.malloc.arena_max=2:${MALLOC_HUGE_PAGES_TUNABLE}` },
    },
  );
  assert.equal(
    agentReexec("userspace", NO_REDUCER, { GLIBC_TUNABLES: "glibc.malloc.hugetlb=0" }, "linux"),
    undefined,
    "an operator's own setting wins",
  );
  assert.equal(agentReexec("userspace", NO_REDUCER, {}, "darwin"), undefined, "not glibc");
});
