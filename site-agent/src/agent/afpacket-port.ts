// VM ports on Linux: an AF_PACKET socket bound to the host side of the VM's veth pair, through the
// small N-API addon in site-agent/native (batched recvmmsg/sendmmsg into and out of arenas this
// class owns: one call per batch each way, no Buffer per frame from the addon). Received frames
// carry a virtio_net_hdr; vnet-offload.ts turns offloaded ones into ordinary frames. See
// docs/agent.md for why veth.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { PortIO } from "./datapath.js";
import { finishOffloads, VNET_HDR_LEN } from "./vnet-offload.js";

interface AfPacketAddon {
  openArena(
    ifname: string,
    rx: Buffer,
    slot: number,
    meta: Uint32Array,
    onBatch: (n: number) => void,
  ): object;
  sendArena(handle: object, tx: Buffer, meta: Uint32Array, count: number): number;
  close(handle: object): void;
}

/** A receive slot holds the largest frame a veth hands over (a 64 KiB GSO frame + headers). */
const RX_SLOT = 65536 + 128;
/** Frames per recvmmsg (the addon's batch). */
const RX_SLOTS = 32;
/** Send arena: frames queued by one flush are copied here and written with sendmmsg. */
const TX_ARENA = 1 << 20;
const TX_FRAMES = 256;

const ADDON_PATH = join(
  dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "native",
  "build",
  "Release",
  "isthmus_afpacket.node",
);

let addon: AfPacketAddon | undefined;

export function afPacketAvailable(): boolean {
  return process.platform === "linux" && existsSync(ADDON_PATH);
}

function load(): AfPacketAddon {
  if (addon) return addon;
  if (!afPacketAvailable()) {
    throw new Error(
      `AF_PACKET ports need the native addon at ${ADDON_PATH}; build it with \`npm run build\` (Linux, a C compiler and Node headers)`,
    );
  }
  addon = createRequire(import.meta.url)(ADDON_PATH) as AfPacketAddon;
  return addon;
}

export class AfPacketPort implements PortIO {
  private handle: object | undefined;
  private readonly rx = Buffer.allocUnsafeSlow(RX_SLOT * RX_SLOTS);
  private readonly rxMeta = new Uint32Array(RX_SLOTS);
  private readonly tx = Buffer.allocUnsafeSlow(TX_ARENA);
  private readonly txMeta = new Uint32Array(TX_FRAMES * 2);
  /** Reused for every batch handed to the datapath (it does not keep the array). */
  private readonly batch: Buffer[] = [];
  /** Offloaded frames that could not be finished, by reason. */
  readonly drops = new Map<string, number>();

  constructor(readonly name: string) {
    load();
  }

  /** Frames handed over are views into the receive arena, valid until `onFrames` returns. */
  start(onFrames: (frames: Buffer[]) => void): void {
    if (this.handle) throw new Error(`port ${this.name}: already started`);
    this.handle = load().openArena(this.name, this.rx, RX_SLOT, this.rxMeta, (n) => {
      const frames = this.batch;
      frames.length = 0;
      for (let i = 0; i < n; i++) {
        const base = i * RX_SLOT;
        const len = this.rxMeta[i]!;
        // The common case — no checksum to finish, no segmentation — is the frame after the header.
        if (len >= VNET_HDR_LEN + 14 && this.rx[base] === 0 && this.rx[base + 1] === 0) {
          frames.push(this.rx.subarray(base + VNET_HDR_LEN, base + len));
          continue;
        }
        const r = finishOffloads(this.rx.subarray(base, base + len));
        if ("frames" in r) {
          for (const f of r.frames) frames.push(f);
        } else {
          this.drops.set(r.drop, (this.drops.get(r.drop) ?? 0) + 1);
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
