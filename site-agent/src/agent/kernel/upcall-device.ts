// The agent's end of the upcall veth, read and written through the AF_PACKET addon
// (site-agent/native/afpacket.c): batches of raw `[virtio_net_hdr][upcall_hdr][frame]` buffers in,
// batches of `[frame][reinject trailer]` out. The socket is created inside the datapath's network
// namespace when one is given.
import { nativeAddon } from "../native-addon.js";

interface AfPacketAddon {
  open(ifname: string, onFrames: (bufs: Buffer[]) => void, netns?: string): object;
  send(handle: object, frames: Buffer[]): number;
  close(handle: object): void;
}

const ADDON = nativeAddon<AfPacketAddon>("isthmus_afpacket.node", "the kernel datapath's upcall device");

export function upcallDeviceAvailable(): boolean {
  return ADDON.available();
}

export class UpcallDevice {
  private handle: object | undefined;
  private readonly addon: AfPacketAddon;

  constructor(
    readonly ifname: string,
    private readonly netns: string | undefined,
  ) {
    this.addon = ADDON.load();
  }

  start(onBuffers: (bufs: Buffer[]) => void): void {
    if (this.handle) throw new Error(`upcall device ${this.ifname}: already started`);
    this.handle = this.addon.open(this.ifname, onBuffers, this.netns);
  }

  /** Writes frames (each already carrying its trailer); returns how many were written. */
  send(frames: Buffer[]): number {
    if (!this.handle || frames.length === 0) return 0;
    return this.addon.send(this.handle, frames);
  }

  close(): void {
    if (!this.handle) return;
    this.addon.close(this.handle);
    this.handle = undefined;
  }
}
