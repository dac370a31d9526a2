// VM ports on Linux: an AF_PACKET socket bound to the host side of the VM's veth pair, through the
// small N-API addon in site-agent/native (batched recvmmsg/sendmmsg). Received buffers carry a
// virtio_net_hdr; vnet-offload.ts turns them into ordinary frames. See docs/agent.md for why veth.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { PortIO } from "./datapath.js";
import { finishOffloads } from "./vnet-offload.js";

interface AfPacketAddon {
  open(ifname: string, onFrames: (bufs: Buffer[]) => void): object;
  send(handle: object, frames: Buffer[]): number;
  close(handle: object): void;
}

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
  /** Offloaded frames that could not be finished, by reason. */
  readonly drops = new Map<string, number>();

  constructor(readonly name: string) {
    load();
  }

  start(onFrames: (frames: Buffer[]) => void): void {
    if (this.handle) throw new Error(`port ${this.name}: already started`);
    this.handle = load().open(this.name, (bufs) => {
      const frames: Buffer[] = [];
      for (const b of bufs) {
        const r = finishOffloads(b);
        if ("frames" in r) {
          for (const f of r.frames) frames.push(f);
        } else {
          this.drops.set(r.drop, (this.drops.get(r.drop) ?? 0) + 1);
        }
      }
      if (frames.length > 0) onFrames(frames);
    });
  }

  send(frames: Buffer[]): number {
    if (!this.handle || frames.length === 0) return 0;
    return load().send(this.handle, frames);
  }

  close(): void {
    if (!this.handle) return;
    load().close(this.handle);
    this.handle = undefined;
  }
}
