// CI proof that the propagation benchmark still runs end to end: quick mode made smaller still
// (3 coordinators, 2 site-controller processes on embedded PostgreSQL, 10 timed changes before
// and after a 100-object bulk load, a 20-port snapshot), results written to a temp dir so the
// committed results and docs stay untouched.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { type PropagationResult, run } from "./propagation.js";

test("the propagation benchmark times admin writes to agents at two sites and a snapshot", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "propagation-bench-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const resultsFile = join(dir, "propagation.json");
  const docsFile = join(dir, "benchmarks.md");
  await run({ quick: true, resultsFile, docsFile, changes: 10, sizes: [100], snapshotPorts: 20 });
  const r = JSON.parse(readFileSync(resultsFile, "utf8")) as PropagationResult;
  assert.deepEqual(r.errors, []);
  assert.deepEqual(
    r.phases.map((p) => [p.sites, p.changes]),
    [
      [2, 10],
      [2, 10],
    ],
  );
  assert.ok(r.phases[1]!.stateObjects >= r.phases[0]!.stateObjects + 100, "the bulk load grew the state");
  for (const p of r.phases) {
    const c = p.commitToEverySite;
    assert.ok(c.p50 > 0 && c.p99 >= c.p50 && c.max >= c.p99, `ordered percentiles: ${JSON.stringify(c)}`);
    assert.ok(p.requestToEverySite.p50 >= p.commit.p50, "request→site includes the commit");
    assert.deepEqual(Object.keys(p.perSite).sort(), ["site1", "site2"]);
  }
  assert.equal(r.bulkLoad[0]?.objects, 100);
  const s = r.snapshot!;
  assert.equal(s.error, undefined);
  assert.ok((s.counts.port ?? 0) >= 20, `snapshot holds the 20 ports: ${JSON.stringify(s.counts)}`);
  assert.ok((s.counts.rule ?? 0) > 20 && s.ms.length === 1 && s.ms[0]! > 0);
  assert.match(
    readFileSync(docsFile, "utf8"),
    /<!-- bench:propagation:start -->[\s\S]*\| 2 \|[\s\S]*<!-- bench:propagation:end -->/,
  );
});
