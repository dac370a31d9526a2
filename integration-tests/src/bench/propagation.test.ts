// CI proof that the propagation benchmark still runs end to end: quick mode made smaller still
// (3 coordinators, 2 site-controller processes on embedded PostgreSQL, 10 timed changes before
// and after a 100-object bulk load, a 20-port snapshot), results written to a temp dir so the
// committed results and docs stay untouched.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { type PropagationResult, run, SEGMENTS } from "./propagation.js";

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
    // The per-change timeline: every change, both sites' segments, adding up to the slowest arrival.
    const tl = p.timeline!;
    assert.equal(tl.rows.length, p.changes);
    for (const row of tl.rows) {
      assert.equal(row.length, 4 + 2 * SEGMENTS.length);
      assert.ok(
        row.every((x) => typeof x === "number"),
        `no missing timings: ${JSON.stringify(row)}`,
      );
      const perSite = [0, 1].map((k) =>
        (row.slice(4 + k * SEGMENTS.length, 4 + (k + 1) * SEGMENTS.length) as number[]).reduce(
          (a, b) => a + b,
          0,
        ),
      );
      assert.ok(Math.abs(Math.max(...perSite) - row[3]!) < 1, `segments add up: ${JSON.stringify(row)}`);
    }
    assert.equal(tl.slowest[0]!.everySiteMs, Math.max(...tl.rows.map((row) => row[3]!)));
    // Every process's pauses were read: coordinators, controllers, the agents' watcher processes
    // and the benchmark itself; each change over 50 ms is put down to one of them (or none).
    const pp = p.pauses!;
    assert.deepEqual(pp.missing, []);
    assert.deepEqual(Object.keys(pp.processes).sort(), [
      "bench",
      "c1",
      "c2",
      "c3",
      "site1",
      "site1-agent",
      "site2",
      "site2-agent",
    ]);
    // CPU per change: every process did some work for the phase's changes (the coordinators and
    // controllers apply and stream each one; the watchers decode it).
    for (const [name, st] of Object.entries(pp.processes))
      assert.ok(
        st.cpuMsPerChange !== undefined && st.cpuMsPerChange > 0,
        `${name} cpu: ${JSON.stringify(st)}`,
      );
    const slowCount = tl.rows.filter((row) => row[3]! > 50).length;
    assert.equal(pp.slow.length, slowCount);
    assert.equal(
      Object.values(pp.overGoalBy).reduce((a, b) => a + b, 0),
      slowCount,
    );
  }
  assert.equal(r.bulkLoad[0]?.objects, 100);
  // The site databases were vacuumed after the load: the step ran and reported its time.
  assert.ok((r.bulkLoad[0]?.vacuumSeconds ?? -1) >= 0, JSON.stringify(r.bulkLoad));
  assert.match(readFileSync(docsFile, "utf8"), /then VACUUM \(ANALYZE\) of every site database/);
  const s = r.snapshot!;
  assert.equal(s.error, undefined);
  assert.ok((s.counts.port ?? 0) >= 20, `snapshot holds the 20 ports: ${JSON.stringify(s.counts)}`);
  assert.ok((s.counts.rule ?? 0) > 20 && s.ms.length === 1 && s.ms[0]! > 0);
  // Each try runs in a new process, as a new agent would (snapshot-child.ts reports its CPU time).
  assert.ok((s.attempts?.[0]?.cpuMs ?? 0) > 0, `the try's own process: ${JSON.stringify(s.attempts)}`);
  // Timed after waiting for the machine to be quiet (or saying it did not get quiet).
  const quiet = s.attempts?.[0]?.quiet;
  assert.ok(quiet && typeof quiet.quiet === "boolean" && quiet.seconds >= 0, JSON.stringify(s.attempts));
  assert.match(readFileSync(docsFile, "utf8"), /Before each, the machine was waited for/);
  assert.match(
    readFileSync(docsFile, "utf8"),
    /<!-- bench:propagation:start -->[\s\S]*\| 2 \|[\s\S]*Per-change timeline[\s\S]*<!-- bench:propagation:end -->/,
  );
});
