import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { wallNow } from "./wall-clock.js";

test("wallNow is Date.now() with a fraction", () => {
  for (let i = 0; i < 20; i++) {
    const before = Date.now();
    const now = wallNow();
    const after = Date.now();
    // Date.now() truncates: the true time is in [before, after + 1).
    // A clock off by more than a quarter of a millisecond can land outside.
    assert.ok(now >= before - 0.25 && now <= after + 1.25, `${now} outside [${before}, ${after + 1})`);
  }
  assert.notEqual(wallNow() % 1, 0, "has a sub-ms fraction");
});

test("a freshly started process agrees on wallNow", () => {
  // A child prints its wallNow() between two Date.now() readings of its own (after a first call:
  // the first performance.now() of a process takes a few ms).
  const mod = fileURLToPath(new URL("./wall-clock.js", import.meta.url));
  const out = execFileSync(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `const { wallNow } = await import(${JSON.stringify(mod)});
       wallNow(); Date.now();
       const a = Date.now(); const w = wallNow(); const b = Date.now();
       console.log(JSON.stringify({ a, w, b }));`,
    ],
    { encoding: "utf8" },
  );
  const { a, w, b } = JSON.parse(out) as { a: number; w: number; b: number };
  assert.ok(w >= a - 0.25 && w <= b + 1.25, `child's ${w} outside [${a}, ${b + 1})`);
});
