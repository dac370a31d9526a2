// Waiting for the machine to be quiet before a benchmark phase: after a bulk load and the sites'
// catch-up, the processes go on digesting it for a while (change-log reads, GC of the catch-up's
// garbage, PostgreSQL's writes), and a phase started then measures that aftermath instead of the
// steady state the phase is about. Quiet = the whole machine's CPU (every process, PostgreSQL too)
// below a bound for a few one-second windows in a row, and the kernel's dirty pages written back.
//
// The second condition: the CPU goes quiet seconds after a bulk load, but the pages PostgreSQL
// wrote stay dirty in the page cache until the kernel writes them back, ~30 s after they were
// dirtied (vm.dirty_expire_centisecs). Measured on this VM (vmstat, 13:31 UTC): 76–364 MB went
// out in single seconds during the 100k phase that followed, and the commits waiting on the disk
// behind them took 50–100 ms — the phase's slowest changes.
import { readFileSync } from "node:fs";
import { cpus } from "node:os";

export interface QuietOptions {
  /** Busy fraction of all CPUs (0..1) a window must stay under. */
  maxBusy: number;
  /** Windows in a row that must be quiet. */
  windows: number;
  windowMs: number;
  timeoutMs: number;
  /** Dirty and under-writeback page-cache bytes a window must end below (Infinity: not checked). */
  maxDirtyBytes: number;
}

export const DEFAULT_QUIET: QuietOptions = {
  maxBusy: 0.2,
  windows: 3,
  windowMs: 1_000,
  timeoutMs: 120_000,
  maxDirtyBytes: 64 * 1024 * 1024,
};

export interface QuietResult {
  /** Whether it got quiet before the timeout (a phase then still runs, and says it was not). */
  quiet: boolean;
  seconds: number;
  /** Busy fraction of the last window. */
  lastBusy: number;
  /** Dirty + writeback bytes at the end of the last window (undefined where the kernel does not say). */
  lastDirtyBytes?: number;
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

/** Page-cache bytes dirty or being written back (/proc/meminfo), or undefined where there is none. */
export type DirtySampler = () => number | undefined;

export function machineDirtyBytes(): number | undefined {
  let text: string;
  try {
    text = readFileSync("/proc/meminfo", "utf8");
  } catch {
    return undefined;
  }
  let bytes = 0;
  for (const field of ["Dirty", "Writeback"]) {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(text);
    if (!m) return undefined;
    bytes += Number(m[1]) * 1024;
  }
  return bytes;
}

export async function waitMachineQuiet(
  o: QuietOptions = DEFAULT_QUIET,
  sample: CpuSampler = machineCpu,
  sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  now: () => number = Date.now,
  dirty: DirtySampler = machineDirtyBytes,
): Promise<QuietResult> {
  const t0 = now();
  let quietInRow = 0;
  let lastBusy = 1;
  let lastDirtyBytes: number | undefined;
  let prev = sample();
  const result = (quiet: boolean): QuietResult => ({
    quiet,
    seconds: (now() - t0) / 1000,
    lastBusy,
    ...(lastDirtyBytes === undefined ? {} : { lastDirtyBytes }),
  });
  while (now() - t0 < o.timeoutMs) {
    await sleep(o.windowMs);
    const cur = sample();
    const total = cur.total - prev.total;
    lastBusy = total > 0 ? (cur.busy - prev.busy) / total : 0;
    prev = cur;
    lastDirtyBytes = dirty();
    const written = lastDirtyBytes === undefined || lastDirtyBytes < o.maxDirtyBytes;
    quietInRow = lastBusy < o.maxBusy && written ? quietInRow + 1 : 0;
    if (quietInRow >= o.windows) return result(true);
  }
  return result(false);
}

/** Why a wait ended not quiet, for a log line: the last window's CPU and dirty pages. */
export function notQuietWhy(q: QuietResult): string {
  const dirty = q.lastDirtyBytes === undefined ? "" : `, ${(q.lastDirtyBytes / 1048576).toFixed(0)} MB dirty`;
  return `busy ${(q.lastBusy * 100).toFixed(0)} %${dirty}`;
}
