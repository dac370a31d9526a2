// VXLAN (RFC 7348) over UDP: an 8-byte header (flags with the I bit, 24-bit VNI) in front of the
// inner Ethernet frame — what Linux's vxlan driver sends and accepts on the same UDP port, so an
// agent and a kernel VXLAN device can talk to each other. The socket is the native batched one
// (udp-batch-socket.ts) when the addon is built, node:dgram otherwise.
import dgram from "node:dgram";
import type { TunnelEndpoint } from "./datapath.js";
import {
  ipv4ToU32,
  RX_META,
  RX_SLOT,
  UdpBatchSocket,
  u32ToIpv4,
  udpBatchAvailable,
} from "./udp-batch-socket.js";

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
  /**
   * "native": the batched socket of site-agent/native/udpbatch.c (recvmmsg/sendmmsg, one callback
   * per batch); "dgram": node:dgram, one event per datagram; "auto" (default): native when built.
   */
  io?: "auto" | "native" | "dgram";
}

/** What the socket hands to its owner. */
export interface VxlanReceiver {
  /** One VXLAN packet. `frame` is valid only during the call: copy what is kept beyond it. */
  packet(vni: number, frame: Buffer, from: TunnelEndpoint): void;
  bad(reason: string, from: TunnelEndpoint): void;
  /** After each received batch (native), or once per event-loop turn with datagrams (dgram). */
  batchEnd(): void;
  /** Datagrams that could not be sent (socket buffer full, refused by the kernel). */
  sendFailed(count: number): void;
}

/** Bounds the caches of peer addresses (parsed IPs, endpoint objects). */
const PEER_CACHE = 4096;
/** Receive views kept for reuse, per receive slot (see onBatch). */
const VIEWS_PER_SLOT = 64;

export class VxlanSocket {
  readonly io: "native" | "dgram";
  private readonly socket: dgram.Socket | undefined;
  private readonly batch: UdpBatchSocket | undefined;
  /** One preallocated header per VNI in use would be faster; a small cache keeps allocation off the path. */
  private readonly headers = new Map<number, Buffer>();
  /** Native receive: one frozen endpoint per (ip, port), so a packet allocates no strings. */
  private readonly endpoints = new Map<number, TunnelEndpoint>();
  /** Native send: dotted IPv4 → host-order u32. */
  private readonly ips = new Map<string, number>();
  private lastEndpointKey = -1;
  private lastEndpoint: TunnelEndpoint | undefined;
  /** Receive views by (slot, datagram in the slot) (see onBatch). */
  private readonly views: (Buffer | undefined)[] = [];
  private receiver: VxlanReceiver | undefined;
  private flushQueued = false;
  private batchEndQueued = false;
  boundPort = 0;

  constructor(private readonly opts: VxlanSocketOptions) {
    const io = opts.io ?? "auto";
    this.io = io === "dgram" || (io === "auto" && !udpBatchAvailable()) ? "dgram" : "native";
    if (this.io === "native") this.batch = new UdpBatchSocket();
    else this.socket = dgram.createSocket({ type: "udp4", reuseAddr: false });
  }

  async start(receiver: VxlanReceiver): Promise<void> {
    this.receiver = receiver;
    const bufferBytes = this.opts.bufferBytes ?? 4 * 1024 * 1024;
    if (this.batch) {
      this.batch.open(this.opts.address, this.opts.port, bufferBytes, (n) => this.onBatch(n));
      this.boundPort = this.batch.localPort;
      return;
    }
    const socket = this.socket!;
    socket.on("message", (msg, rinfo) => {
      const from = { ip: rinfo.address, port: rinfo.port };
      const p = parseVxlan(msg);
      if (p.ok) receiver.packet(p.vni, p.frame, from);
      else receiver.bad(p.reason, from);
      if (!this.batchEndQueued) {
        // Datagrams arrive one event each; ending the batch once per loop turn still writes
        // every frame read in this poll phase with one sendmmsg per port.
        this.batchEndQueued = true;
        setImmediate(() => {
          this.batchEndQueued = false;
          receiver.batchEnd();
        });
      }
    });
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(this.opts.port, this.opts.address, () => {
        socket.off("error", reject);
        resolve();
      });
    });
    socket.on("error", () => {
      // Sends to unreachable peers surface as async errors; they must not crash the agent.
    });
    try {
      socket.setRecvBufferSize(bufferBytes);
      socket.setSendBufferSize(bufferBytes);
    } catch {
      // The kernel caps these at net.core.{r,w}mem_max; the default still works.
    }
    this.boundPort = socket.address().port;
  }

  private onBatch(n: number): void {
    const r = this.receiver!;
    const b = this.batch!;
    const rx = b.rx;
    const meta = b.rxMeta;
    const views = this.views;
    let inSlot = 0;
    for (let i = 0; i < n; i++) {
      const m = i * RX_META;
      const len = meta[m]!;
      const base = meta[m + 4]!;
      // The k-th datagram of slot s (more than one when the kernel handed over a GRO packet).
      inSlot = base % RX_SLOT === 0 ? 0 : inSlot + 1;
      const cached = inSlot < VIEWS_PER_SLOT ? ((base / RX_SLOT) | 0) * VIEWS_PER_SLOT + inSlot : -1;
      const from = this.endpoint(meta[m + 1]!, meta[m + 2]!);
      if (len < VXLAN_HEADER || meta[m + 3] !== 0) {
        r.bad("vxlan_truncated", from);
        continue;
      }
      if ((rx[base]! & VXLAN_FLAG_I) === 0) {
        r.bad("vxlan_no_vni_flag", from);
        continue;
      }
      const vni = (rx[base + 4]! << 16) | (rx[base + 5]! << 8) | rx[base + 6]!;
      if (vni !== 0xffffff && len - VXLAN_HEADER < MIN_INNER) {
        r.bad("vxlan_truncated", from);
        continue;
      }
      // The k-th datagram of a slot usually sits where it did in the last batch, with the same
      // length (steady traffic: same sizes, same GRO segment size): its view is reused rather
      // than a Buffer object made per datagram (a view's bytes are only valid during the callback
      // either way).
      let v = cached >= 0 ? views[cached] : undefined;
      if (v === undefined || v.byteOffset !== base + VXLAN_HEADER || v.length !== len - VXLAN_HEADER) {
        v = rx.subarray(base + VXLAN_HEADER, base + len);
        if (cached >= 0) views[cached] = v;
      }
      r.packet(vni, v, from);
    }
    r.batchEnd();
  }

  private endpoint(ip: number, port: number): TunnelEndpoint {
    const k = ip * 65536 + port;
    // Datagrams come in runs from one peer.
    if (k === this.lastEndpointKey) return this.lastEndpoint!;
    let e = this.endpoints.get(k);
    if (e === undefined) {
      e = Object.freeze({ ip: u32ToIpv4(ip), port });
      if (this.endpoints.size < PEER_CACHE) this.endpoints.set(k, e);
    }
    this.lastEndpointKey = k;
    this.lastEndpoint = e;
    return e;
  }

  /** Queues one VXLAN datagram; `payload` is copied before this returns. */
  send(vni: number, payload: Buffer, remoteIp: string, remotePort: number): void {
    const b = this.batch;
    if (b === undefined) {
      let h = this.headers.get(vni);
      if (!h) {
        h = vxlanHeader(vni);
        if (this.headers.size < 4096) this.headers.set(vni, h);
      }
      // node:dgram may hold the buffers until the kernel takes them; the payload can be a view
      // into a port's receive arena that the next batch reuses, so it goes out as a copy.
      this.socket!.send(Buffer.concat([h, payload]), remotePort, remoteIp);
      return;
    }
    let ip = this.ips.get(remoteIp);
    if (ip === undefined) {
      ip = ipv4ToU32(remoteIp);
      if (ip === undefined) {
        this.receiver?.sendFailed(1);
        return;
      }
      if (this.ips.size < PEER_CACHE) this.ips.set(remoteIp, ip);
    }
    const off = b.reserve(VXLAN_HEADER + payload.length, ip, remotePort);
    if (off < 0) {
      this.receiver?.sendFailed(1);
      return;
    }
    const a = b.arena;
    a[off] = VXLAN_FLAG_I;
    a[off + 1] = 0;
    a[off + 2] = 0;
    a[off + 3] = 0;
    a[off + 4] = (vni >>> 16) & 0xff;
    a[off + 5] = (vni >>> 8) & 0xff;
    a[off + 6] = vni & 0xff;
    a[off + 7] = 0;
    a.set(payload, off + VXLAN_HEADER);
    if (!this.flushQueued) {
      // Everything sent in this callback (a received batch, an upcall's outputs) leaves together
      // when it returns: one sendmmsg instead of one syscall per datagram.
      this.flushQueued = true;
      queueMicrotask(() => this.flush());
    }
  }

  /** Writes queued datagrams now (native; dgram sends immediately). */
  flush(): void {
    this.flushQueued = false;
    const b = this.batch;
    if (b === undefined) return;
    b.flush();
    if (b.failed > 0) {
      const n = b.failed;
      b.failed = 0;
      this.receiver?.sendFailed(n);
    }
  }

  close(): Promise<void> {
    if (this.batch) {
      this.flush();
      this.batch.close();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      try {
        this.socket!.close(() => resolve());
      } catch {
        resolve();
      }
    });
  }
}
