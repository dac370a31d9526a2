// VXLAN (RFC 7348) over a node:dgram UDP socket: an 8-byte header (flags with the I bit, 24-bit
// VNI) in front of the inner Ethernet frame. What Linux's vxlan driver sends and accepts on the
// same UDP port, so an agent and a kernel VXLAN device can talk to each other.
import dgram from "node:dgram";
import type { TunnelEndpoint } from "./datapath.js";

export const VXLAN_HEADER = 8;
export const VXLAN_FLAG_I = 0x08;
/** Inner frames shorter than an Ethernet header are not frames. */
const MIN_INNER = 14;

export function vxlanHeader(vni: number): Buffer {
  const h = Buffer.alloc(VXLAN_HEADER);
  h[0] = VXLAN_FLAG_I;
  h.writeUInt32BE(((vni & 0xffffff) << 8) >>> 0, 4);
  return h;
}

export type VxlanParse = { ok: true; vni: number; frame: Buffer } | { ok: false; reason: string };

export function parseVxlan(msg: Buffer): VxlanParse {
  if (msg.length < VXLAN_HEADER) return { ok: false, reason: "vxlan_truncated" };
  if ((msg[0]! & VXLAN_FLAG_I) === 0) return { ok: false, reason: "vxlan_no_vni_flag" };
  const vni = msg.readUInt32BE(4) >>> 8;
  const frame = msg.subarray(VXLAN_HEADER);
  // Flow-state messages carry a protobuf, not a frame, so only frames need an Ethernet header.
  if (vni !== 0xffffff && frame.length < MIN_INNER) return { ok: false, reason: "vxlan_truncated" };
  return { ok: true, vni, frame };
}

export interface VxlanSocketOptions {
  address: string;
  port: number;
  /** SO_RCVBUF/SO_SNDBUF bytes (bursts beyond it are lost in the kernel). */
  bufferBytes?: number;
}

export class VxlanSocket {
  private readonly socket: dgram.Socket;
  /** One preallocated header per VNI in use would be faster; a small cache keeps allocation off the path. */
  private readonly headers = new Map<number, Buffer>();
  boundPort = 0;

  constructor(private readonly opts: VxlanSocketOptions) {
    this.socket = dgram.createSocket({ type: "udp4", reuseAddr: false });
  }

  async start(
    onPacket: (vni: number, frame: Buffer, from: TunnelEndpoint) => void,
    onBad: (reason: string, from: TunnelEndpoint) => void,
  ): Promise<void> {
    this.socket.on("message", (msg, rinfo) => {
      const from = { ip: rinfo.address, port: rinfo.port };
      const p = parseVxlan(msg);
      if (p.ok) onPacket(p.vni, p.frame, from);
      else onBad(p.reason, from);
    });
    await new Promise<void>((resolve, reject) => {
      this.socket.once("error", reject);
      this.socket.bind(this.opts.port, this.opts.address, () => {
        this.socket.off("error", reject);
        resolve();
      });
    });
    this.socket.on("error", () => {
      // Sends to unreachable peers surface as async errors; they are counted by the caller's
      // send bookkeeping, and must not crash the agent.
    });
    const buf = this.opts.bufferBytes ?? 4 * 1024 * 1024;
    try {
      this.socket.setRecvBufferSize(buf);
      this.socket.setSendBufferSize(buf);
    } catch {
      // The kernel caps these at net.core.{r,w}mem_max; the default still works.
    }
    this.boundPort = this.socket.address().port;
  }

  send(vni: number, payload: Buffer, remoteIp: string, remotePort: number): void {
    let h = this.headers.get(vni);
    if (!h) {
      h = vxlanHeader(vni);
      if (this.headers.size < 4096) this.headers.set(vni, h);
    }
    this.socket.send([h, payload], remotePort, remoteIp);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      try {
        this.socket.close(() => resolve());
      } catch {
        resolve();
      }
    });
  }
}
