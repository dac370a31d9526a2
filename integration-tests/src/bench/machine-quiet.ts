// Waiting for the machine to be quiet before a benchmark phase: after a bulk load and the sites'
// catch-up, the processes go on digesting it for a while (change-log reads, GC of the catch-up's
// garbage, PostgreSQL's writes), and a phase started then measures that aftermath instead of the
// steady state the phase is about. Quiet = the whole machine's CPU (every process, PostgreSQL too)
// below a bound for a few one-second windows in a row.
import { cpus } from "node:os";

export interface QuietOptions {
  /** Busy fraction of all CPUs (0..1) a window must stay under. */
  maxBusy: number;
  /** Windows in a row that must be quiet. */
  windows: number;
  windowMs: number;
  timeoutMs: number;
}

export const DEFAULT_QUIET: QuietOptions = { maxBusy: 0.2, windows: 3, windowMs: 1_000, timeoutMs: 120_000 };

export interface QuietResult {
  /** Whether it got quiet before the timeout (a phase then still runs, and says it was not). */
  quiet: boolean;
  seconds: number;
  /** Busy fraction of the last window. */
  lastBusy: number;
}

/** CPU time so far, summed over every CPU: busy and total (ms). */
export type CpuSampler = () => { busy: number; total: number };

export function machineCpu(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const c of cpus()) {
    const t = c.times;
    busy += t.user + t.nice + t.sys + t.irq;
    total += t.user + t.nice + t.sys + t.irq + t.idle;
  }
  return { busy, total };
}

export async function waitMachineQuiet(
  o: QuietOptions = DEFAULT_QUIET,
  sample: CpuSampler = machineCpu,
  sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  now: () => number = Date.now,
): Promise<QuietResult> {
  const t0 = now();
  let quietInRow = 0;
  let lastBusy = 1;
  let prev = sample();
  while (now() - t0 < o.timeoutMs) {
    await sleep(o.windowMs);
    const cur = sample();
    const total = cur.total - prev.total;
    lastBusy = total > 0 ? (cur.busy - prev.busy) / total : 0;
    prev = cur;
    quietInRow = lastBusy < o.maxBusy ? quietInRow + 1 : 0;
    if (quietInRow >= o.windows) return { quiet: true, seconds: (now() - t0) / 1000, lastBusy };
  }
  return { quiet: false, seconds: (now() - t0) / 1000, lastBusy };
}
