// When this whole process could not run: garbage-collection pauses (perf_hooks 'gc' entries) and
// event-loop stalls (a 10 ms timer firing late), kept in a bounded ring of Unix-ms intervals so a
// slow change can be matched against the pauses that overlapped it (served as JSON on the
// coordinator's and site controller's metrics port, `/debug/pauses`; the propagation bench).
import { constants, type PerformanceEntry, PerformanceObserver } from "node:perf_hooks";
import { Histogram, Registry } from "prom-client";
import { wallNow, wallOffsetMs } from "./wall-clock.js";

export type PauseKind = "gc" | "loop";

export interface ProcessPause {
  kind: PauseKind;
  /** Unix ms (fractional) the pause began. */
  start: number;
  durationMs: number;
  /** For gc: minor, major, incremental or weakcb. */
  gc?: string;
}

export interface PauseRecorderOptions {
  /** Pauses kept (oldest dropped first). */
  size: number;
  /** Event-loop probe period (ms). */
  loopIntervalMs?: number;
  /** A probe this much late or more is kept as a stall (ms). */
  loopThresholdMs?: number;
  /** GC pauses this long or more are kept in the ring (every one is counted in the metrics). */
  gcThresholdMs?: number;
}

const GC_KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: "minor",
  [constants.NODE_PERFORMANCE_GC_MAJOR]: "major",
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: "weakcb",
};

/** The newest pauses of this process, oldest first; start() begins observing. */
export class PauseRecorder {
  private readonly ring: ProcessPause[] = [];
  private next = 0;
  private observer: PerformanceObserver | undefined;
  private timer: NodeJS.Timeout | undefined;
  private histogram: Histogram<"kind"> | undefined;
  /** Where the pause histogram is registered (withMetrics). */
  registry = new Registry();
  readonly loopIntervalMs: number;
  readonly loopThresholdMs: number;
  readonly gcThresholdMs: number;
  /** Totals since start (every GC, every kept stall). */
  readonly totals = { gcCount: 0, gcMs: 0, stallCount: 0, stallMs: 0 };

  constructor(readonly opts: PauseRecorderOptions) {
    if (!Number.isInteger(opts.size) || opts.size < 0)
      throw new RangeError(`pause ring size must be a non-negative integer, got ${opts.size}`);
    this.loopIntervalMs = opts.loopIntervalMs ?? 10;
    this.loopThresholdMs = opts.loopThresholdMs ?? 5;
    this.gcThresholdMs = opts.gcThresholdMs ?? 1;
  }

  /** Also counts every pause into `isthmus_process_pause_seconds{kind}` of `registry` (or its own). */
  withMetrics(registry: Registry = this.registry): this {
    this.registry = registry;
    this.histogram = new Histogram({
      name: "isthmus_process_pause_seconds",
      help: "Pauses of this whole process: gc_minor/gc_major/... (perf_hooks GC entries) and loop (event-loop stalls of 5 ms or more, a 10 ms probe firing late; includes GC and the OS not scheduling the process)",
      labelNames: ["kind"],
      buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
      registers: [registry],
    });
    return this;
  }

  start(): this {
    if (this.observer) return this;
    this.observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) this.onGc(e);
    });
    this.observer.observe({ entryTypes: ["gc"] });
    // The loop was busy (or the process not scheduled) for at least as long as the probe was late:
    // the timer would have fired at any free moment after it was due.
    let last = wallNow();
    this.timer = setInterval(() => {
      const now = wallNow();
      this.onProbe(last, now);
      last = now;
    }, this.loopIntervalMs);
    this.timer.unref();
    return this;
  }

  stop(): void {
    this.observer?.disconnect();
    this.observer = undefined;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** A probe that ran at `now`, the previous one at `prev` (exposed for tests). */
  onProbe(prev: number, now: number): void {
    const late = now - prev - this.loopIntervalMs;
    if (late < this.loopThresholdMs) return;
    this.totals.stallCount++;
    this.totals.stallMs += late;
    this.histogram?.observe({ kind: "loop" }, late / 1000);
    this.record({ kind: "loop", start: now - late, durationMs: late });
  }

  private onGc(e: PerformanceEntry): void {
    const detail = (e as PerformanceEntry & { detail?: { kind?: number } }).detail;
    const kind = GC_KINDS[detail?.kind ?? -1] ?? "other";
    this.totals.gcCount++;
    this.totals.gcMs += e.duration;
    this.histogram?.observe({ kind: `gc_${kind}` }, e.duration / 1000);
    if (e.duration >= this.gcThresholdMs)
      this.record({
        kind: "gc",
        start: wallOffsetMs() + e.startTime,
        durationMs: e.duration,
        gc: kind,
      });
  }

  record(p: ProcessPause): void {
    if (this.opts.size === 0) return;
    if (this.ring.length < this.opts.size) this.ring.push(p);
    else this.ring[this.next] = p;
    this.next = (this.next + 1) % this.opts.size;
  }

  /** Pauses that ended after Unix ms `after`, oldest first (by when they were recorded). */
  since(after = 0): ProcessPause[] {
    const ordered =
      this.ring.length < this.opts.size
        ? this.ring
        : [...this.ring.slice(this.next), ...this.ring.slice(0, this.next)];
    return ordered.filter((p) => p.start + p.durationMs > after);
  }

  /** JSON for `/debug/pauses?after=<unix ms>`: settings, totals and the pauses. */
  report(after = 0): PauseReport {
    return {
      pid: process.pid,
      loopIntervalMs: this.loopIntervalMs,
      loopThresholdMs: this.loopThresholdMs,
      gcThresholdMs: this.gcThresholdMs,
      totals: { ...this.totals },
      at: wallNow(),
      cpuMs: cpuMs(),
      pauses: this.since(after),
    };
  }
}

export interface PauseReport {
  pid: number;
  loopIntervalMs: number;
  loopThresholdMs: number;
  gcThresholdMs: number;
  totals: PauseRecorder["totals"];
  /** Unix ms of the report, and the CPU time (user + system) this process has used by then. */
  at: number;
  cpuMs: number;
  pauses: ProcessPause[];
}

/** CPU time this process has used (user + system, ms): a cost that load does not stretch. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

export interface PauseOverlap {
  /** ms of [from, to] covered by the process's event-loop stalls (GC included). */
  loopMs: number;
  /** ms of [from, to] covered by its GC pauses. */
  gcMs: number;
  /** Of the GC ms, major collections. */
  majorGcMs: number;
}

/** Length of the union of `intervals` clipped to [from, to]. */
function coveredMs(intervals: [number, number][], from: number, to: number): number {
  const clipped = intervals
    .map(([a, b]): [number, number] => [Math.max(a, from), Math.min(b, to)])
    .filter(([a, b]) => b > a)
    .sort((x, y) => x[0] - y[0]);
  let total = 0;
  let curA = Number.NaN;
  let curB = Number.NaN;
  for (const [a, b] of clipped) {
    if (Number.isNaN(curA) || a > curB) {
      if (!Number.isNaN(curA)) total += curB - curA;
      curA = a;
      curB = b;
    } else curB = Math.max(curB, b);
  }
  if (!Number.isNaN(curA)) total += curB - curA;
  return total;
}

/** How much of the window [from, to] (Unix ms) each kind of the process's pauses covered. */
export function pauseOverlap(pauses: readonly ProcessPause[], from: number, to: number): PauseOverlap {
  const span = (p: ProcessPause): [number, number] => [p.start, p.start + p.durationMs];
  const gc = pauses.filter((p) => p.kind === "gc");
  return {
    loopMs: coveredMs(pauses.filter((p) => p.kind === "loop").map(span), from, to),
    gcMs: coveredMs(gc.map(span), from, to),
    majorGcMs: coveredMs(gc.filter((p) => p.gc === "major").map(span), from, to),
  };
}

/**
 * What a slow window [from, to] is put down to: "machine" when at least half of the processes
 * (and two or more) were each paused `minMs` or more in it — they all stalled at once, which is
 * the OS not running them (CPU contention), not one heap's GC; otherwise the process whose pauses
 * (stall or GC ms, whichever is larger) covered most of it, if `minMs` or more; else "none".
 */
export function attributePauses(
  byProcess: Record<string, readonly ProcessPause[]>,
  from: number,
  to: number,
  minMs: number,
): { by: string; overlaps: Record<string, PauseOverlap> } {
  const overlaps: Record<string, PauseOverlap> = {};
  let best: { name: string; ms: number } | undefined;
  let paused = 0;
  const names = Object.keys(byProcess);
  for (const name of names) {
    const o = pauseOverlap(byProcess[name]!, from, to);
    overlaps[name] = o;
    const ms = Math.max(o.loopMs, o.gcMs);
    if (ms < minMs) continue;
    paused++;
    if (!best || ms > best.ms) best = { name, ms };
  }
  const by = paused >= 2 && paused * 2 >= names.length ? "machine" : (best?.name ?? "none");
  return { by, overlaps };
}
