// CI proof that the raft benchmark still runs end to end (quick mode, two client levels, results
// written to a temp dir so the committed results and docs stay untouched).
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { type BenchRepetition, type BenchRow, etcdInstalled, run } from "./raft.js";

test("the raft benchmark runs raft-ts and etcd side by side and reports ratios", async (t) => {
  if (!etcdInstalled()) {
    if (process.env.CI) assert.fail("etcd must be installed in CI (.ci/run installs etcd-server)");
    t.skip("etcd is not installed here (apt-get install -y etcd-server); CI runs this");
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "raft-bench-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const resultsFile = join(dir, "raft.json");
  const docsFile = join(dir, "benchmarks.md");
  await run({ quick: true, resultsFile, docsFile, concurrency: [1, 16] });
  const out = JSON.parse(readFileSync(resultsFile, "utf8")) as {
    rows: BenchRow[];
    ratios: { clients: number; throughput: number }[];
    repetitions: BenchRepetition[];
  };
  // Quick mode: two interleaved repetitions per level, each system going first once.
  for (const c of [1, 16]) {
    const reps = out.repetitions.filter((r) => r.clients === c);
    assert.deepEqual(reps.map((r) => r.first).sort(), ["etcd", "raft-ts"]);
    for (const r of reps)
      assert.equal(r.ratio, Number((r.raftTs.writesPerSec / r.etcd.writesPerSec).toFixed(3)));
  }
  assert.equal(out.rows.length, 4);
  for (const r of out.rows) {
    assert.ok(r.writesPerSec > 0, `${r.system} at ${r.clients} clients committed no writes`);
    assert.ok(r.p99Ms >= r.p50Ms, `${r.system} p99 below p50`);
  }
  assert.deepEqual(
    out.ratios.map((q) => q.clients),
    [1, 16],
  );
  assert.ok(out.ratios.every((q) => Number.isFinite(q.throughput) && q.throughput > 0));
  const md = readFileSync(docsFile, "utf8");
  assert.match(md, /<!-- bench:raft:start -->[\s\S]*\| 16 \|[\s\S]*<!-- bench:raft:end -->/);
  assert.match(md, /- 16 clients: \d+ \/ \d+ \([\d.]+\)\*?, \d+ \/ \d+/);
});
