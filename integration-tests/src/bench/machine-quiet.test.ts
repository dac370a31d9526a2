import assert from "node:assert/strict";
import { test } from "node:test";
import { machineDirtyBytes, waitMachineQuiet } from "./machine-quiet.js";

/** A fake clock and CPU counters fed one busy fraction per window. */
function fake(busyPerWindow: number[]) {
  let t = 0;
  let busy = 0;
  let total = 0;
  let i = 0;
  return {
    sample: () => ({ busy, total }),
    sleep: async (ms: number) => {
      t += ms;
      const b = busyPerWindow[Math.min(i++, busyPerWindow.length - 1)]!;
      busy += b * ms * 2;
      total += ms * 2;
    },
    now: () => t,
  };
}

const opts = { maxBusy: 0.2, windows: 3, windowMs: 1_000, timeoutMs: 20_000, maxDirtyBytes: 64 << 20 };
const clean = () => 0;

test("quiet after three quiet windows in a row; a busy window starts the count again", async () => {
  const f = fake([0.9, 0.1, 0.1, 0.5, 0.1, 0.05, 0.1]);
  const r = await waitMachineQuiet(opts, f.sample, f.sleep, f.now, clean);
  assert.equal(r.quiet, true);
  assert.equal(r.seconds, 7);
  assert.ok(Math.abs(r.lastBusy - 0.1) < 1e-9);
});

test("a machine that stays busy is reported as not quiet at the timeout", async () => {
  const f = fake([0.6]);
  const r = await waitMachineQuiet(opts, f.sample, f.sleep, f.now, clean);
  assert.equal(r.quiet, false);
  assert.equal(r.seconds, 20);
  assert.ok(Math.abs(r.lastBusy - 0.6) < 1e-9);
});

test("a quiet CPU with the page cache still writing back a bulk load's pages is not quiet yet", async () => {
  const f = fake([0.05]);
  // Dirty bytes after each window: 300 MB for four windows, then written back.
  const dirty = [300 << 20, 300 << 20, 200 << 20, 100 << 20, 10 << 20, 1 << 20, 0, 0];
  let i = 0;
  const r = await waitMachineQuiet(
    opts,
    f.sample,
    f.sleep,
    f.now,
    () => dirty[Math.min(i++, dirty.length - 1)],
  );
  assert.equal(r.quiet, true);
  assert.equal(r.seconds, 7, "three windows after the last one over the bound");
  assert.equal(r.lastDirtyBytes, 0);
  // Where the kernel says nothing (no /proc/meminfo), only the CPU counts.
  const g = fake([0.05]);
  const plain = await waitMachineQuiet(opts, g.sample, g.sleep, g.now, () => undefined);
  assert.equal(plain.seconds, 3);
  assert.equal(plain.lastDirtyBytes, undefined);
});

test("the machine's dirty bytes are read from /proc/meminfo", (t) => {
  const d = machineDirtyBytes();
  if (process.platform !== "linux") {
    assert.equal(d, undefined);
    return t.skip("no /proc/meminfo here");
  }
  assert.equal(typeof d, "number");
  assert.ok(d! >= 0 && Number.isInteger(d! / 1024), `${d} bytes, a whole number of kB`);
});
