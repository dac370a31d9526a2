// Where a kernel flow's setup time goes: for each simulated upcall whose flow was written to the
// BPF map, the latency from the program's miss and from the agent's read, split into stages, with
// the garbage collection that overlapped it. Served on the agent's
// admin endpoint (/flow-setup) so a benchmark can tell which stage a slow setup spent its time in.
import { PerformanceObserver } from "node:perf_hooks";
import type { UpcallTiming } from "../upcall-pump.js";
import { LatencyRing } from "./latency-ring.js";

/**
 * wake: miss in the program → the agent reading the batch (veth, socket, the thread's wake-up, or
 * the event loop busy with something else); parse: read → frame queued (upcall header, offloads,
 * flow key); queue: queued → handler called; simulate: the handler (simulation, flow state encoding);
 * install: the userspace flow table; encode: the kernel key and value; mapUpdate: the bpf() syscall.
 */
export const SETUP_STAGES = ["wake", "parse", "queue", "simulate", "install", "encode", "mapUpdate"] as const;
export type SetupStage = (typeof SETUP_STAGES)[number];

/**
 * *wake* split by what the ring reader stamps (NaN for frames that came up the veth): busy, the
 * event loop still doing something else after the miss; thread, from then (or the miss) to the
 * reader running (the thread's wake-up and epoll); reader, the reader's own work on the batch
 * (copies, checksums); call, the reader's callback into JavaScript.
 */
export const WAKE_PARTS = ["busy", "thread", "reader", "call"] as const;
export type WakePart = (typeof WAKE_PARTS)[number];

export interface SetupSample extends UpcallTiming {
  /** performance.now() when the agent started reading the batch the frame came in. */
  readAt: number;
  /** The ring reader's stamps for the batch, on performance.now()'s scale (NaN when unknown):
   * when the event loop last went to wait, when the reader was entered, when it called back. */
  loopIdleAt: number;
  readerAt: number;
  calledAt: number;
  /** 1 when the ring reader read the batch during a busy-poll window (the event loop had not
   * blocked, so no wake-up), 0 after a wake-up, NaN from the veth. */
  polled: number;
  encodedAt: number;
  writtenAt: number;
}

export interface FlowSetupReport {
  total: number;
  /** Miss → entry written (ms). */
  fromMiss: number[];
  /** Frame queued by the agent → entry written (ms): the agent's share. */
  fromRead: number[];
  stages: Record<SetupStage, number[]>;
  /** *wake* split (WAKE_PARTS; NaN for frames that came up the veth). */
  wakeParts: Record<WakePart, number[]>;
  /** Per setup: 1 when its miss was read by busy polling (no wake-up), 0 after a wake-up, NaN from
   * the veth. */
  polled: number[];
  /** Garbage collection (ms, any kind) that overlapped read → written. */
  gcMs: number[];
  /** Garbage collection that overlapped miss → read: the frame waited while the thread collected. */
  gcWakeMs: number[];
  /** The agent's own periodic work (counter read-back chunks) that overlapped miss → written. */
  syncMs: number[];
  /** Every GC pause (ms) from the first sample's read to the last one's write, in or between them. */
  gcPauses: number[];
}

/** The GC pauses kept to correlate with samples (a few seconds' worth at any realistic rate). */
const GC_RING = 1024;

export class FlowSetupProfile {
  private readonly fromMiss: LatencyRing;
  private readonly fromRead: LatencyRing;
  private readonly stages: Record<SetupStage, LatencyRing>;
  private readonly wakeParts: Record<WakePart, LatencyRing>;
  private readonly polled: LatencyRing;
  private readonly readAt: LatencyRing;
  private readonly writtenAt: LatencyRing;
  private readonly gcStart: LatencyRing;
  private readonly gcDuration: LatencyRing;
  private readonly arrivedAt: LatencyRing;
  private readonly busyStart: LatencyRing;
  private readonly busyDuration: LatencyRing;
  private readonly observer: PerformanceObserver;

  constructor(readonly capacity: number) {
    this.fromMiss = new LatencyRing(capacity);
    this.fromRead = new LatencyRing(capacity);
    this.readAt = new LatencyRing(capacity);
    this.writtenAt = new LatencyRing(capacity);
    this.stages = Object.fromEntries(SETUP_STAGES.map((s) => [s, new LatencyRing(capacity)])) as Record<
      SetupStage,
      LatencyRing
    >;
    this.wakeParts = Object.fromEntries(WAKE_PARTS.map((s) => [s, new LatencyRing(capacity)])) as Record<
      WakePart,
      LatencyRing
    >;
    this.polled = new LatencyRing(capacity);
    this.gcStart = new LatencyRing(GC_RING);
    this.gcDuration = new LatencyRing(GC_RING);
    this.arrivedAt = new LatencyRing(capacity);
    this.busyStart = new LatencyRing(GC_RING);
    this.busyDuration = new LatencyRing(GC_RING);
    this.observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        this.gcStart.record(e.startTime);
        this.gcDuration.record(e.duration);
      }
    });
    this.observer.observe({ entryTypes: ["gc"] });
  }

  get total(): number {
    return this.fromMiss.total;
  }

  record(s: SetupSample): void {
    this.fromMiss.record(s.writtenAt - s.arrivedAt);
    this.fromRead.record(s.writtenAt - s.offeredAt);
    const st = this.stages;
    st.wake.record(s.readAt - s.arrivedAt);
    st.parse.record(s.offeredAt - s.readAt);
    st.queue.record(s.handledAt - s.offeredAt);
    st.simulate.record(s.decidedAt - s.handledAt);
    st.install.record(s.installedAt - s.decidedAt);
    st.encode.record(s.encodedAt - s.installedAt);
    st.mapUpdate.record(s.writtenAt - s.encodedAt);
    const w = this.wakeParts;
    // The loop went to wait after the miss: it was busy until then, and the thread's wait starts there.
    // (Math.max keeps a NaN stamp, from the veth, so every part is NaN then.)
    const waitFrom = Math.max(s.loopIdleAt, s.arrivedAt);
    w.busy.record(waitFrom - s.arrivedAt);
    w.thread.record(s.readerAt - waitFrom);
    w.reader.record(s.calledAt - s.readerAt);
    w.call.record(s.readAt - s.calledAt);
    this.polled.record(s.polled);
    this.readAt.record(s.readAt);
    this.writtenAt.record(s.writtenAt);
    this.arrivedAt.record(s.arrivedAt);
  }

  /** A stretch (performance.now() ms) in which the agent's thread did its own periodic work. */
  busy(start: number, end: number): void {
    this.busyStart.record(start);
    this.busyDuration.record(end - start);
  }

  /** The samples recorded since `total` was `mark`, oldest first. */
  since(mark = 0): FlowSetupReport {
    const reads = this.readAt.since(mark);
    const written = this.writtenAt.since(mark);
    const gcStart = this.gcStart.since(0);
    const gcDuration = this.gcDuration.since(0);
    const arrived = this.arrivedAt.since(mark);
    const busyStart = this.busyStart.since(0);
    const busyDuration = this.busyDuration.since(0);
    const overlap = (from: number, to: number, starts: number[], durations: number[]) => {
      let sum = 0;
      for (let g = 0; g < starts.length; g++) {
        const a = Math.max(from, starts[g]!);
        const b = Math.min(to, starts[g]! + durations[g]!);
        if (b > a) sum += b - a;
      }
      return sum;
    };
    const gcMs = reads.map((from, i) => overlap(from, written[i]!, gcStart, gcDuration));
    const gcWakeMs = reads.map((to, i) => overlap(arrived[i]!, to, gcStart, gcDuration));
    const syncMs = written.map((to, i) => overlap(arrived[i]!, to, busyStart, busyDuration));
    const first = reads[0] ?? Number.POSITIVE_INFINITY;
    const last = written.at(-1) ?? Number.NEGATIVE_INFINITY;
    const gcPauses = gcStart.flatMap((t, g) => (t >= first && t <= last ? [gcDuration[g]!] : []));
    return {
      total: this.total,
      fromMiss: this.fromMiss.since(mark),
      fromRead: this.fromRead.since(mark),
      stages: Object.fromEntries(SETUP_STAGES.map((s) => [s, this.stages[s].since(mark)])) as Record<
        SetupStage,
        number[]
      >,
      wakeParts: Object.fromEntries(WAKE_PARTS.map((s) => [s, this.wakeParts[s].since(mark)])) as Record<
        WakePart,
        number[]
      >,
      polled: this.polled.since(mark),
      gcMs,
      gcWakeMs,
      syncMs,
      gcPauses,
    };
  }

  close(): void {
    this.observer.disconnect();
  }
}
