// A batched IPv4 UDP socket over the native addon (site-agent/native/udpbatch.c): datagrams land in
// a receive arena that is reused batch after batch, announced with one callback per batch; sends are
// packed into a send arena and written with one sendmmsg per flush. The VXLAN socket's fast path.
import { nativeAddon } from "./native-addon.js";

interface UdpBatchAddon {
  open(
    ip: string,
    port: number,
    rx: Buffer,
    rxSlot: number,
    rxMeta: Uint32Array,
    tx: Buffer,
    txMeta: Uint32Array,
    onBatch: (count: number) => void,
    bufferBytes: number,
  ): object;
  send(handle: object, count: number): number;
  localPort(handle: object): number;
  close(handle: object): void;
}

const ADDON = nativeAddon<UdpBatchAddon>("isthmus_udpbatch.node", "batched UDP");

/** Largest IPv4 UDP payload; a receive slot holds any datagram whole. */
export const RX_SLOT = 65536;
/** Datagrams per recvmmsg. */
export const RX_SLOTS = 64;
/**
 * Words per received datagram in `rxMeta`: length, source IPv4 (host order), source port,
 * truncated, offset in `rx`. One slot can hold many datagrams (a GRO packet, split by the addon).
 */
export const RX_META = 5;
/** Datagrams per slot the table has room for (the addon's GRO_SEGS: a GRO packet's most). */
const RX_PER_SLOT = 128;
const TX_META = 4;

export interface UdpBatchLimits {
  /** Bytes of queued datagrams before a flush is forced (at least one full datagram). */
  txArenaBytes: number;
  /** Datagrams queued before a flush is forced. */
  txMaxDatagrams: number;
}

export const DEFAULT_UDP_BATCH_LIMITS: UdpBatchLimits = { txArenaBytes: 1 << 20, txMaxDatagrams: 512 };

export function udpBatchAvailable(): boolean {
  return ADDON.available();
}

function load(): UdpBatchAddon {
  return ADDON.load();
}

/** Dotted IPv4 → host-order u32, or undefined when it is not one. */
export function ipv4ToU32(ip: string): number | undefined {
  const parts = ip.split(".");
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const v = Number(p);
    if (v > 255) return undefined;
    n = n * 256 + v;
  }
  return n;
}

export function u32ToIpv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export class UdpBatchSocket {
  /**
   * Received datagram i is rx[o, o + rxMeta[i*RX_META]] with o = rxMeta[i*RX_META + 4] — valid
   * only until the callback returns.
   */
  readonly rx = Buffer.allocUnsafeSlow(RX_SLOT * RX_SLOTS);
  readonly rxMeta = new Uint32Array(RX_SLOTS * RX_PER_SLOT * RX_META);
  private readonly tx: Buffer;
  private readonly txMeta: Uint32Array;
  private txCount = 0;
  private txOff = 0;
  private handle: object | undefined;
  /** Datagrams the kernel refused or had no room for (counted by the caller after each flush). */
  failed = 0;

  constructor(readonly limits: UdpBatchLimits = DEFAULT_UDP_BATCH_LIMITS) {
    if (limits.txArenaBytes < RX_SLOT || limits.txMaxDatagrams < 1) {
      throw new Error(`udp batch: txArenaBytes must be ≥ ${RX_SLOT} and txMaxDatagrams ≥ 1`);
    }
    this.tx = Buffer.allocUnsafeSlow(limits.txArenaBytes);
    this.txMeta = new Uint32Array(limits.txMaxDatagrams * TX_META);
  }

  /** Binds ip:port (0 = any free port) and starts announcing received batches. */
  open(ip: string, port: number, bufferBytes: number, onBatch: (count: number) => void): void {
    if (this.handle) throw new Error("udp batch: already open");
    this.handle = load().open(
      ip,
      port,
      this.rx,
      RX_SLOT,
      this.rxMeta,
      this.tx,
      this.txMeta,
      onBatch,
      bufferBytes,
    );
  }

  get localPort(): number {
    return this.handle ? load().localPort(this.handle) : 0;
  }

  get queued(): number {
    return this.txCount;
  }

  /**
   * Room for a `len`-byte datagram to ip:port (host-order IPv4): returns the offset in `arena` to
   * write it at, flushing first when the batch is full; -1 when it can never fit.
   */
  reserve(len: number, ip: number, port: number): number {
    if (len > RX_SLOT) return -1;
    if (this.txCount >= this.limits.txMaxDatagrams || this.txOff + len > this.tx.length) this.flush();
    const off = this.txOff;
    const m = this.txCount * TX_META;
    this.txMeta[m] = off;
    this.txMeta[m + 1] = len;
    this.txMeta[m + 2] = ip;
    this.txMeta[m + 3] = port;
    this.txCount++;
    this.txOff = off + len;
    return off;
  }

  get arena(): Buffer {
    return this.tx;
  }

  /** Writes everything queued (one sendmmsg per 64 messages; a run to one peer is one message). */
  flush(): void {
    const n = this.txCount;
    if (n === 0) return;
    this.txCount = 0;
    this.txOff = 0;
    if (!this.handle) {
      this.failed += n;
      return;
    }
    const sent = load().send(this.handle, n);
    this.failed += n - sent;
  }

  close(): void {
    if (!this.handle) return;
    load().close(this.handle);
    this.handle = undefined;
    this.txCount = 0;
    this.txOff = 0;
  }
}
