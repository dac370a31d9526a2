import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { buildPath, run, writeSection } from "./sim.js";

test("bench sim: quick mode runs the fixed path end to end", async () => {
  const { view, vm1 } = buildPath(20);
  assert.ok(view.ports.has(vm1.id));
  const logs: string[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => logs.push(a.join(" "));
  let rows: Awaited<ReturnType<typeof run>>["rows"];
  try {
    ({ rows } = await run({ quick: true }));
  } finally {
    console.log = orig;
  }
  assert.ok(
    logs.some((l) => /N=20: [\d,]+ first-packet sims\/s/.test(l)),
    logs.join("\n"),
  );
  // Rates are not asserted (a quick, unwarmed run on a shared machine swings tenfold); allocation
  // is steady (about 0.9-1.1 kB per simulation) and must stay small: 3,354 B before the
  // allocation work of 2026-11-24.
  const row = rows.find((r) => r.rules === 20)!;
  assert.ok(row.bytesPerSim > 0 && row.bytesPerSim < 3000, `${row.bytesPerSim} B allocated per simulation`);
  assert.ok(row.hitsPerSec > 0 && row.simsPerSec > 0);
});

test("bench sim: its docs section is replaced in place and never takes the next section's marker", () => {
  const dir = mkdtempSync(join(tmpdir(), "sim-docs-"));
  try {
    const file = join(dir, "benchmarks.md");
    const next = "<!-- bench:propagation:start -->\n## propagation\n\nkept\n<!-- bench:propagation:end -->\n";
    const result = {
      date: "2026-11-24T00:00:00Z",
      cpu: "test CPU",
      node: "v20",
      loadAverage: [1, 2, 3],
      path: "a path",
      rows: [],
      ratioToGoal: 1.5,
      ratioToMidonetCited: 9,
    };
    // An older file: the heading without markers, straight before another section's marker.
    writeFileSync(file, `# Benchmarks\n\n## sim — packet simulation\n\nold numbers\n${next}`);
    writeSection(file, result);
    writeSection(file, { ...result, ratioToGoal: 2.5 });
    const doc = readFileSync(file, "utf8");
    assert.ok(doc.endsWith(next), doc);
    assert.equal(doc.split("## sim — packet simulation").length, 2, "one sim section");
    assert.ok(!doc.includes("old numbers") && !doc.includes("1.5×") && doc.includes("2.5×"), doc);
    assert.equal(doc.split("<!-- bench:sim:start -->").length, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
