import assert from "node:assert/strict";
import { test } from "node:test";
import { Registry } from "prom-client";
import { attributePauses, PauseRecorder, type ProcessPause, pauseOverlap } from "./process-pauses.js";

const loop = (start: number, durationMs: number): ProcessPause => ({ kind: "loop", start, durationMs });
const gc = (start: number, durationMs: number, kind = "minor"): ProcessPause => ({
  kind: "gc",
  start,
  durationMs,
  gc: kind,
});

test("the pause ring is bounded: the newest pauses, oldest first, filtered by end time", () => {
  const r = new PauseRecorder({ size: 3 });
  for (let i = 0; i < 10; i++) r.record(loop(i * 100, 10));
  assert.deepEqual(
    r.since().map((p) => p.start),
    [700, 800, 900],
  );
  // A pause that ends after `after` is kept even when it began before it.
  assert.deepEqual(
    r.since(805).map((p) => p.start),
    [800, 900],
  );
  const none = new PauseRecorder({ size: 0 });
  none.record(loop(1, 1));
  assert.deepEqual(none.since(), []);
  assert.throws(() => new PauseRecorder({ size: -1 }), /non-negative/);
});

test("a late probe is a stall ending at the probe, as long as it was late; a punctual one is not", () => {
  const reg = new Registry();
  const r = new PauseRecorder({ size: 10, loopIntervalMs: 10, loopThresholdMs: 5 }).withMetrics(reg);
  r.onProbe(1000, 1012); // 2 ms late: under the threshold
  r.onProbe(1012, 1062); // 40 ms late
  assert.deepEqual(r.since(), [loop(1022, 40)]);
  assert.equal(r.totals.stallCount, 1);
  assert.equal(r.totals.stallMs, 40);
});

test("overlap counts the union of a process's pauses inside the window, by kind", () => {
  const pauses = [loop(100, 50), loop(120, 10), loop(300, 20), gc(105, 30, "major"), gc(310, 5)];
  // Window [110, 310]: loop [110,150] + [300,310] = 50; gc [110,135] + nothing past 310 = 25.
  assert.deepEqual(pauseOverlap(pauses, 110, 310), { loopMs: 50, gcMs: 25, majorGcMs: 25 });
  assert.deepEqual(pauseOverlap(pauses, 0, 1000), { loopMs: 70, gcMs: 35, majorGcMs: 30 });
  assert.deepEqual(pauseOverlap(pauses, 160, 290), { loopMs: 0, gcMs: 0, majorGcMs: 0 });
});

test("a slow window is put down to the most paused process, or to the machine when most stalled at once", () => {
  const byProcess = {
    c1: [loop(0, 30)],
    site1: [gc(10, 45, "major"), loop(10, 40)],
    bench: [loop(200, 100)],
    agent: [],
  };
  // Two of four processes paused >= 10 ms in [0, 60]: half of them at once → the machine.
  assert.equal(attributePauses(byProcess, 0, 60, 10).by, "machine");
  // At a 35 ms minimum only site1 counts (its GC covered 45 ms of the window).
  const a = attributePauses(byProcess, 0, 60, 35);
  assert.equal(a.by, "site1");
  assert.deepEqual(a.overlaps.site1, { loopMs: 40, gcMs: 45, majorGcMs: 45 });
  assert.deepEqual(a.overlaps.c1, { loopMs: 30, gcMs: 0, majorGcMs: 0 });
  assert.equal(attributePauses(byProcess, 100, 150, 10).by, "none");
  assert.equal(attributePauses(byProcess, 0, 60, 50).by, "none");
  assert.equal(attributePauses({ only: [loop(0, 40)] }, 0, 60, 10).by, "only");
});

test("a started recorder sees this process's GC and a blocked event loop", async () => {
  const r = new PauseRecorder({ size: 100, gcThresholdMs: 0 }).start();
  try {
    const t0 = performance.timeOrigin + performance.now();
    await new Promise((res) => setTimeout(res, 30));
    const end = Date.now() + 60;
    while (Date.now() < end) {} // block the loop
    globalThis.gc?.();
    // Junk enough to force scavenges even without --expose-gc.
    let keep: unknown[] = [];
    for (let i = 0; i < 200_000; i++) keep.push({ i });
    keep = [];
    const deadline = Date.now() + 5_000;
    const seen = () =>
      r.since(t0).some((p) => p.kind === "gc") &&
      r.since(t0).some((p) => p.kind === "loop" && p.durationMs >= 40);
    while (Date.now() < deadline && !seen()) await new Promise((res) => setTimeout(res, 20));
    const stalls = r.since(t0).filter((p) => p.kind === "loop");
    assert.ok(
      stalls.some((p) => p.durationMs >= 40),
      `a stall of >= 40 ms: ${JSON.stringify(stalls)}`,
    );
    assert.ok(r.totals.gcCount > 0 && r.since(t0).some((p) => p.kind === "gc"), "a GC entry");
    assert.equal(keep.length, 0);
  } finally {
    r.stop();
  }
});
