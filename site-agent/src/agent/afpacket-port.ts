// VM ports on Linux: an AF_PACKET socket bound to the host side of the VM's veth pair, through the
// small N-API addon in site-agent/native (batched recvmmsg/sendmmsg into and out of arenas this
// class owns: one call per batch each way, no Buffer per frame from the addon). Received frames
// carry a virtio_net_hdr; the addon finishes offloaded ones (native/vnet-offload.h, the same rules as
// vnet-offload.ts) into ordinary frames. See docs/agent.md for why veth.
import type { PortIO } from "./datapath.js";
import { nativeAddon } from "./native-addon.js";

interface AfPacketAddon {
  openArena(
    ifname: string,
    arena: Buffer,
    slot: number,
    slots: number,
    meta: Uint32Array,
    onBatch: (n: number) => void,
  ): object;
  sendArena(handle: object, tx: Buffer, meta: Uint32Array, count: number): number;
  finishOffloads(arena: Buffer, len: number, segStart: number, meta: Uint32Array): number;
  close(handle: object): void;
}

/** A receive slot holds the largest frame a veth hands over (a 64 KiB GSO frame + headers). */
const RX_SLOT = 65536 + 128;
/** Frames per recvmmsg (the addon's batch). */
const RX_SLOTS = 32;
/**
 * After the slots: where the addon writes the MSS segments of TSO super-frames. A full batch of
 * 64 KiB super-frames at a 1400-byte MSS needs about 2.3 MiB; a frame that does not fit is dropped
 * (`gso_no_room`), which takes an MSS far below any real link's.
 */
const SEG_AREA = 4 << 20;
/** (offset, length) entries per batch: frames and segments. */
const OUT_ENTRIES = 8192;
/** Drop codes of native/vnet-offload.h, by value. */
const OFFLOAD_DROPS = [
  "",
  "malformed_frame",
  "malformed_offload",
  "gso_ufo_unsupported",
  "gso_unsupported",
  "gso_no_room",
];
/** Send arena: frames queued by one flush are copied here and written with sendmmsg. */
const TX_ARENA = 1 << 20;
const TX_FRAMES = 256;
/** Batch entries whose receive view is kept for reuse. */
const VIEW_CACHE = 256;

const ADDON = nativeAddon<AfPacketAddon>("isthmus_afpacket.node", "AF_PACKET ports");

export function afPacketAvailable(): boolean {
  return ADDON.available();
}

function load(): AfPacketAddon {
  return ADDON.load();
}

export class AfPacketPort implements PortIO {
  private handle: object | undefined;
  private readonly rx = Buffer.allocUnsafeSlow(RX_SLOT * RX_SLOTS + SEG_AREA);
  private readonly rxMeta = new Uint32Array(OUT_ENTRIES * 2);
  private readonly tx = Buffer.allocUnsafeSlow(TX_ARENA);
  private readonly txMeta = new Uint32Array(TX_FRAMES * 2);
  /** Reused for every batch handed to the datapath (it does not keep the array). */
  private readonly batch: Buffer[] = [];
  /** Receive views by batch entry, reused while an entry's place and length stay the same. */
  private readonly views: (Buffer | undefined)[] = [];
  /** Offloaded frames that could not be finished, by reason. */
  readonly drops = new Map<string, number>();

  constructor(readonly name: string) {
    load();
  }

  /** Frames handed over are views into the receive arena, valid until `onFrames` returns. */
  start(onFrames: (frames: Buffer[]) => void): void {
    if (this.handle) throw new Error(`port ${this.name}: already started`);
    this.handle = load().openArena(this.name, this.rx, RX_SLOT, RX_SLOTS, this.rxMeta, (n) => {
      // The addon finished offloads (checksums, TSO segmentation; see native/vnet-offload.h):
      // each entry is a ready frame in the arena, or a drop.
      const frames = this.batch;
      frames.length = 0;
      const meta = this.rxMeta;
      const views = this.views;
      for (let i = 0; i < n; i++) {
        const off = meta[2 * i]!;
        const len = meta[2 * i + 1]!;
        if (len === 0) {
          const reason = OFFLOAD_DROPS[off] ?? "malformed_offload";
          this.drops.set(reason, (this.drops.get(reason) ?? 0) + 1);
        } else {
          // Entry i usually sits where it did last batch with the same length (a slot start, for
          // frames that needed no segmenting): reuse its view instead of making a Buffer per frame.
          let v = i < VIEW_CACHE ? views[i] : undefined;
          if (v === undefined || v.byteOffset !== off || v.length !== len) {
            v = this.rx.subarray(off, off + len);
            if (i < VIEW_CACHE) views[i] = v;
          }
          frames.push(v);
        }
      }
      if (frames.length > 0) onFrames(frames);
      frames.length = 0;
    });
  }

  send(frames: Buffer[]): number {
    if (!this.handle || frames.length === 0) return 0;
    const addon = load();
    let written = 0;
    let n = 0;
    let off = 0;
    for (const f of frames) {
      if (n === TX_FRAMES || off + f.length > TX_ARENA) {
        const w = addon.sendArena(this.handle, this.tx, this.txMeta, n);
        written += w;
        if (w < n) return written;
        n = 0;
        off = 0;
      }
      if (f.length > TX_ARENA) break; // cannot be a frame; counted as not written
      this.tx.set(f, off);
      this.txMeta[2 * n] = off;
      this.txMeta[2 * n + 1] = f.length;
      n++;
      off += f.length;
    }
    if (n > 0) written += addon.sendArena(this.handle, this.tx, this.txMeta, n);
    return written;
  }

  close(): void {
    if (!this.handle) return;
    load().close(this.handle);
    this.handle = undefined;
  }
}

/**
 * The addon's offload finishing on one `[virtio_net_hdr][frame]` buffer, as frames or a drop reason
 * (the result shape of vnet-offload.ts's finishOffloads, for tests holding the two together).
 */
export function nativeFinishOffloads(buf: Buffer): { frames: Buffer[] } | { drop: string } {
  const arena = Buffer.alloc(buf.length + SEG_AREA);
  buf.copy(arena, 0);
  const meta = new Uint32Array(OUT_ENTRIES * 2);
  const n = load().finishOffloads(arena, buf.length, buf.length, meta);
  const frames: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const off = meta[2 * i]!;
    const len = meta[2 * i + 1]!;
    if (len === 0) return { drop: OFFLOAD_DROPS[off] ?? "malformed_offload" };
    frames.push(Buffer.from(arena.subarray(off, off + len)));
  }
  return { frames };
}
