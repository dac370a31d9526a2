import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { MALLOC_HUGE_PAGES_TUNABLE, mallocHugePagesEnv, withMallocHugePages } from "./malloc-env.js";

test("withMallocHugePages adds the tunable once, keeps others, and leaves an explicit setting alone", () => {
  assert.deepEqual(withMallocHugePages({ A: "1" }, "linux"), {
    A: "1",
    GLIBC_TUNABLES: MALLOC_HUGE_PAGES_TUNABLE,
  });
  assert.deepEqual(withMallocHugePages({ GLIBC_TUNABLES: "glibc.malloc.arena_max=2:" }, "linux"), {
    GLIBC_TUNABLES: `glibc.malloc.arena_max=2:${MALLOC_HUGE_PAGES_TUNABLE}`,
  });
  assert.equal(withMallocHugePages({ GLIBC_TUNABLES: MALLOC_HUGE_PAGES_TUNABLE }, "linux"), undefined);
  assert.equal(withMallocHugePages({ GLIBC_TUNABLES: "glibc.malloc.hugetlb=0" }, "linux"), undefined);
  assert.equal(withMallocHugePages({}, "darwin"), undefined);
  const env = { GLIBC_TUNABLES: "glibc.malloc.hugetlb=0" };
  assert.equal(mallocHugePagesEnv(env), env);
});

/** The kernel's THP mode ("always", "madvise" or "never"), or undefined without THP. */
function thpMode(): string | undefined {
  try {
    return /\[(\w+)\]/.exec(readFileSync("/sys/kernel/mm/transparent_hugepage/enabled", "utf8"))?.[1];
  } catch {
    return undefined;
  }
}

// Page faults are counted, not timed: 64 MiB of buffers touched in 64 KiB pieces (malloc's heap).
const FAULTS = `
const r0 = process.resourceUsage().minorPageFault;
const keep = [];
for (let i = 0; i < 1024; i++) keep.push(Buffer.allocUnsafe(64 * 1024).fill(1));
process.stdout.write(String(process.resourceUsage().minorPageFault - r0));
`;

test("a process started with the tunable faults its buffers in huge pages", (t) => {
  const mode = thpMode();
  if (process.platform !== "linux" || mode === undefined || mode === "never") {
    t.skip(`transparent huge pages are off here (${process.platform}, THP ${mode ?? "absent"})`);
    return;
  }
  const faults = (env: NodeJS.ProcessEnv) =>
    Number(execFileSync(process.execPath, ["-e", FAULTS], { env, encoding: "utf8" }));
  const { GLIBC_TUNABLES: _, ...plain } = process.env;
  const without = faults(plain);
  const withHuge = faults(withMallocHugePages(plain)!);
  // 64 MiB is 16 384 small pages, or 32 huge ones (plus the heap's first pages and node's own).
  assert.ok(without > 8_000, `without the tunable: ${without} faults`);
  assert.ok(withHuge * 4 < without, `with the tunable: ${withHuge} faults, without: ${without}`);
});
