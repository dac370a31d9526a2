// The agent's end of the programs' upcall ring buffer (`upcall_ring` in flow.bpf.c), read by the
// upcallring addon (site-agent/native/upcallring.c) on the event loop: each record arrives as the
// upcall veth would deliver it (`[virtio_net_hdr][upcall_hdr][frame]`, checksums finished), so
// parseUpcall serves both. Misses come this way when they fit a record; the rest, and every frame
// the agent writes back, still use the upcall veth.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { BpfMap } from "./bpf-map.js";

interface UpcallRingAddon {
  open(fd: number, onRecords: (bufs: Buffer[]) => void): object;
  stats(handle: object): { malformed: number; pending: number };
  close(handle: object): void;
  finishChecksum(frame: Buffer): void;
}

const ADDON_PATH = join(
  dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "..",
  "native",
  "build",
  "Release",
  "isthmus_upcallring.node",
);

/** Longest frame a ring record carries (RING_FRAME_MAX in flow.bpf.c); longer ones take the veth. */
export const RING_FRAME_MAX = 1600;

let addon: UpcallRingAddon | undefined;

export function upcallRingAvailable(): boolean {
  return process.platform === "linux" && existsSync(ADDON_PATH);
}

function load(): UpcallRingAddon {
  if (addon) return addon;
  if (!upcallRingAvailable()) {
    throw new Error(
      `the upcall ring needs the native addon at ${ADDON_PATH}; build it with \`npm run build\``,
    );
  }
  addon = createRequire(import.meta.url)(ADDON_PATH) as UpcallRingAddon;
  return addon;
}

/** The ring reader's TCP/UDP checksum completion on one frame (in place), for tests. */
export function finishRingChecksum(frame: Buffer): void {
  load().finishChecksum(frame);
}

export class UpcallRing {
  private map: BpfMap | undefined;
  private handle: object | undefined;

  /** `path`: the pinned `upcall_ring` map. */
  constructor(readonly path: string) {}

  start(onBuffers: (bufs: Buffer[]) => void): void {
    if (this.handle) throw new Error(`upcall ring ${this.path}: already started`);
    const a = load();
    this.map = BpfMap.openPinned(this.path, 0, 0);
    try {
      this.handle = a.open(this.map.descriptor, onBuffers);
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
