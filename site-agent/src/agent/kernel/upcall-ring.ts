// The agent's end of the programs' upcall ring buffer (`upcall_ring` in flow.bpf.c), read by the
// upcallring addon (site-agent/native/upcallring.c) on the event loop: each record arrives as the
// upcall veth would deliver it (`[virtio_net_hdr][upcall_hdr][frame]`, checksums finished), so
// parseUpcall serves both. Misses come this way when they fit a record; the rest, and every frame
// the agent writes back, still use the upcall veth.
import { nativeAddon } from "../native-addon.js";
import { BpfMap } from "./bpf-map.js";

/** The reader's counters (see upcallring.c). */
export interface UpcallRingStats {
  /** Records refused: a frame length the record cannot hold. */
  malformed: number;
  /** Bytes submitted by the programs and not read yet. */
  pending: number;
  /** The busy-poll window after each batch (µs; 0 = off). */
  busyPollUs: number;
  /** Whether a window is open now (the event loop is not blocking). */
  polling: boolean;
  /** Windows opened (each by a batch read while none was open). */
  pollWindows: number;
  /** Time spent with a window open (ms; the open one included): the CPU time busy polling costs. */
  pollMs: number;
  /** Turns of the event loop that polled the ring. */
  pollTurns: number;
  /** Records read while a window was open: misses that needed no wake-up. */
  recordsPolled: number;
  /** Records read after the event loop had blocked (the ring's fd woke it). */
  recordsWoken: number;
  /** Windows ended because the thread lost its CPU while polling (then none opens for 100 ms). */
  pollPreempted: number;
  /** The SCHED_FIFO priority the thread polls at (0: as it runs otherwise). */
  realtimePriority: number;
  /** Changes of scheduling class the kernel refused (the first one turns real-time polling off). */
  realtimeFailures: number;
}

interface UpcallRingAddon {
  open(fd: number, onRecords: (bufs: Buffer[]) => void, times: Float64Array): object;
  stats(handle: object): UpcallRingStats;
  setBusyPoll(handle: object, us: number, pauseUs?: number, rtPriority?: number): void;
  close(handle: object): void;
  finishChecksum(frame: Buffer): void;
}

/** The longest busy-poll window the reader accepts (µs). */
export const UPCALL_BUSY_POLL_MAX_US = 1_000_000;

/** The counters of a reader that is not running (all zero). */
export function idleUpcallRingStats(): UpcallRingStats {
  return {
    malformed: 0,
    pending: 0,
    busyPollUs: 0,
    polling: false,
    pollWindows: 0,
    pollMs: 0,
    pollTurns: 0,
    recordsPolled: 0,
    recordsWoken: 0,
    pollPreempted: 0,
    realtimePriority: 0,
    realtimeFailures: 0,
  };
}

const ADDON = nativeAddon<UpcallRingAddon>("isthmus_upcallring.node", "the upcall ring");

/** Longest frame a ring record carries (RING_FRAME_MAX in flow.bpf.c); longer ones take the veth. */
export const RING_FRAME_MAX = 1600;

export function upcallRingAvailable(): boolean {
  return ADDON.available();
}

function load(): UpcallRingAddon {
  return ADDON.load();
}

/** The ring reader's TCP/UDP checksum completion on one frame (in place), for tests. */
export function finishRingChecksum(frame: Buffer): void {
  load().finishChecksum(frame);
}

export class UpcallRing {
  private map: BpfMap | undefined;
  private handle: object | undefined;
  /**
   * Written by the reader, valid during the `onBuffers` call: when the event loop last went to wait
   * for events, when the reader was entered for this batch, and when it called back
   * (CLOCK_MONOTONIC ms), then 1 when the batch was read while a busy-poll window was open (no
   * wake-up), else 0. They split the time from a miss to the agent reading it (see
   * FlowSetupProfile). Over an ArrayBuffer of its own, so its memory never moves.
   */
  readonly times = new Float64Array(new ArrayBuffer(4 * 8));

  /** `path`: the pinned `upcall_ring` map. */
  constructor(readonly path: string) {}

  start(onBuffers: (bufs: Buffer[]) => void): void {
    if (this.handle) throw new Error(`upcall ring ${this.path}: already started`);
    const a = load();
    this.map = BpfMap.openPinned(this.path, 0, 0);
    try {
      this.handle = a.open(this.map.descriptor, onBuffers, this.times);
    } finally {
      // The reader holds its own descriptor.
      this.map.close();
      this.map = undefined;
    }
  }

  /** The reader's counters (all zero before start and after close). */
  stats(): UpcallRingStats {
    return this.handle ? load().stats(this.handle) : idleUpcallRingStats();
  }

  /**
   * Busy polling: after each batch the event loop keeps reading the ring for `us` µs without
   * blocking (0 = off, the default). A window also ends when the thread is seen to have lost its
   * CPU while polling, and none opens for `pauseUs` after that (default 100 ms). `rtPriority`
   * > 0: the thread polls at that SCHED_FIFO priority (its own attributes back when the window
   * closes). Throws a RangeError (code INVALID_ARGUMENT) for `us` not an integer from 0 to
   * UPCALL_BUSY_POLL_MAX_US, `pauseUs` not one from 0 to 60 s, or `rtPriority` not one from 0 to 99.
   */
  setBusyPoll(us: number, pauseUs?: number, rtPriority?: number): void {
    if (!this.handle) throw new Error(`upcall ring ${this.path}: not started`);
    load().setBusyPoll(this.handle, us, pauseUs, rtPriority);
  }

  close(): void {
    if (!this.handle) return;
    load().close(this.handle);
    this.handle = undefined;
  }
}
