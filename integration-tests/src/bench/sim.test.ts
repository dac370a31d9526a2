import assert from "node:assert/strict";
import { test } from "node:test";
import { buildPath, run } from "./sim.js";

test("bench sim: quick mode runs the fixed path end to end", async () => {
  const { view, vm1 } = buildPath(20);
  assert.ok(view.ports.has(vm1.id));
  const logs: string[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => logs.push(a.join(" "));
  try {
    await run({ quick: true });
  } finally {
    console.log = orig;
  }
  assert.ok(
    logs.some((l) => /N=20: [\d,]+ first-packet sims\/s/.test(l)),
    logs.join("\n"),
  );
});
