import assert from "node:assert/strict";
import { test } from "node:test";
import { FlowSetupProfile, SETUP_STAGES, WAKE_PARTS } from "./flow-setup-profile.js";

const sample = (base: number) => ({
  arrivedAt: base,
  // The loop went to wait before the miss; the reader ran 0.12 ms after it and called back 0.03 later.
  loopIdleAt: base - 1,
  readerAt: base + 0.12,
  calledAt: base + 0.15,
  polled: 0,
  readAt: base + 0.2,
  offeredAt: base + 0.25,
  handledAt: base + 0.26,
  decidedAt: base + 0.46,
  installedAt: base + 0.5,
  encodedAt: base + 0.53,
  writtenAt: base + 0.6,
});

test("a flow setup splits into stages that add up to the latency from the miss", () => {
  const p = new FlowSetupProfile(4);
  try {
    p.record(sample(-3000));
    const mark = p.total;
    p.record(sample(-2000));
    p.record(sample(-1000));
    const r = p.since(mark);
    assert.equal(r.total, 3);
    assert.equal(r.fromMiss.length, 2);
    assert.ok(Math.abs(r.fromMiss[0]! - 0.6) < 1e-9);
    assert.ok(Math.abs(r.fromRead[0]! - 0.35) < 1e-9);
    assert.deepEqual(Object.keys(r.stages), [...SETUP_STAGES]);
    const expected = {
      wake: 0.2,
      parse: 0.05,
      queue: 0.01,
      simulate: 0.2,
      install: 0.04,
      encode: 0.03,
      mapUpdate: 0.07,
    };
    for (const s of SETUP_STAGES) {
      assert.equal(r.stages[s].length, 2);
      assert.ok(Math.abs(r.stages[s][1]! - expected[s]) < 1e-9, `${s}: ${r.stages[s][1]}`);
    }
    const sum = SETUP_STAGES.reduce((a, s) => a + r.stages[s][0]!, 0);
    assert.ok(Math.abs(sum - r.fromMiss[0]!) < 1e-9, "stages cover miss → written");
    assert.deepEqual(r.gcMs.length, 2);
    // Samples before the process started: no GC pause it observed can overlap them.
    assert.deepEqual(r.gcMs, [0, 0]);
  } finally {
    p.close();
  }
});

test("wake splits into the loop busy, the thread's wake-up, the reader and its callback", () => {
  const p = new FlowSetupProfile(8);
  try {
    p.record(sample(-5000));
    // The loop was busy until 0.08 ms after this miss: that much is busy, the rest the thread's.
    // Read by busy polling: the loop never went to wait, and the reader says so.
    p.record({ ...sample(-4000), loopIdleAt: -4000 + 0.08, polled: 1 });
    // Up the veth: no reader stamps, every part unknown.
    p.record({
      ...sample(-3000),
      loopIdleAt: Number.NaN,
      readerAt: Number.NaN,
      calledAt: Number.NaN,
      polled: Number.NaN,
    });
    const r = p.since(0);
    assert.deepEqual(Object.keys(r.wakeParts), [...WAKE_PARTS]);
    const near = (got: number | undefined, want: number, what: string) =>
      assert.ok(Math.abs(got! - want) < 1e-9, `${what}: ${got} (want ${want})`);
    near(r.wakeParts.busy[0], 0, "busy, loop idle before the miss");
    near(r.wakeParts.thread[0], 0.12, "thread");
    near(r.wakeParts.busy[1], 0.08, "busy");
    near(r.wakeParts.thread[1], 0.04, "thread after the loop's work");
    for (const i of [0, 1]) {
      near(r.wakeParts.reader[i], 0.03, "reader");
      near(r.wakeParts.call[i], 0.05, "call");
      const sum = WAKE_PARTS.reduce((a, k) => a + r.wakeParts[k][i]!, 0);
      near(sum, r.stages.wake[i]!, "the parts add up to wake");
    }
    for (const k of WAKE_PARTS) assert.ok(Number.isNaN(r.wakeParts[k][2]), `${k} from the veth`);
    assert.deepEqual(r.polled, [0, 1, Number.NaN], "woken, polled, unknown (veth) per setup");
  } finally {
    p.close();
  }
});

test("the agent's own periodic work is charged to the setups it overlapped", () => {
  const p = new FlowSetupProfile(8);
  try {
    p.record(sample(-5000));
    p.record(sample(-4000));
    // A read-back chunk from 0.1 ms after the first miss to 0.3 ms after: 0.2 ms of its setup.
    p.busy(-5000 + 0.1, -5000 + 0.3);
    // One that ends before the second miss overlaps nothing.
    p.busy(-4001, -4000.5);
    const r = p.since(0);
    assert.equal(r.syncMs.length, 2);
    assert.ok(Math.abs(r.syncMs[0]! - 0.2) < 1e-9, `${r.syncMs[0]}`);
    assert.equal(r.syncMs[1], 0);
    assert.deepEqual(r.gcWakeMs, [0, 0]);
  } finally {
    p.close();
  }
});
