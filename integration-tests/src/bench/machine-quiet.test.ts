import assert from "node:assert/strict";
import { test } from "node:test";
import { waitMachineQuiet } from "./machine-quiet.js";

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

const opts = { maxBusy: 0.2, windows: 3, windowMs: 1_000, timeoutMs: 20_000 };

test("quiet after three quiet windows in a row; a busy window starts the count again", async () => {
  const f = fake([0.9, 0.1, 0.1, 0.5, 0.1, 0.05, 0.1]);
  const r = await waitMachineQuiet(opts, f.sample, f.sleep, f.now);
  assert.equal(r.quiet, true);
  assert.equal(r.seconds, 7);
  assert.ok(Math.abs(r.lastBusy - 0.1) < 1e-9);
});

test("a machine that stays busy is reported as not quiet at the timeout", async () => {
  const f = fake([0.6]);
  const r = await waitMachineQuiet(opts, f.sample, f.sleep, f.now);
  assert.equal(r.quiet, false);
  assert.equal(r.seconds, 20);
  assert.ok(Math.abs(r.lastBusy - 0.6) < 1e-9);
});
