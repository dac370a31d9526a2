// The agent's end of the programs' upcall ring buffer (`upcall_ring` in flow.bpf.c), read by the
// upcallring addon (site-agent/native/upcallring.c) on the event loop: each record arrives as the
// upcall veth would deliver it (`[virtio_net_hdr][upcall_hdr][frame]`, checksums finished), so
// parseUpcall serves both. Misses come this way when they fit a record; the rest, and every frame
// the agent writes back, still use the upcall veth.
import { nativeAddon } from "../native-addon.js";
import { BpfMap } from "./bpf-map.js";

interface UpcallRingAddon {
  open(fd: number, onRecords: (bufs: Buffer[]) => void, times: Float64Array): object;
  stats(handle: object): { malformed: number; pending: number };
  close(handle: object): void;
  finishChecksum(frame: Buffer): void;
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
   * Written by the reader (CLOCK_MONOTONIC ms), valid during the `onBuffers` call: when the event
   * loop last went to wait for events, when the reader was entered for this batch, and when it
   * called back. They split the time from a miss to the agent reading it (see FlowSetupProfile).
   * Over an ArrayBuffer of its own, so its memory never moves.
   */
  readonly times = new Float64Array(new ArrayBuffer(3 * 8));

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

  /** Records the reader refused (a frame length the record cannot hold), and bytes not yet read. */
  stats(): { malformed: number; pending: number } {
    return this.handle ? load().stats(this.handle) : { malformed: 0, pending: 0 };
  }

  close(): void {
    if (!this.handle) return;
    load().close(this.handle);
    this.handle = undefined;
  }
}
