// Router next-hop resolution state: IP → MAC learned from ARP replies (with expiry), and packets
// waiting for a reply — a bounded queue per next hop and overall, with a timeout after which the
// packets are dropped and counted. The ARP request itself is a packet the simulation generates.
// Learned entries are bounded too: a full cache refuses new neighbours (until expiry makes room)
// rather than evicting ones in use.
import type { ResubmitPacket } from "./result.js";
import { tag } from "./topology-view.js";

interface Waiting {
  routerId: string;
  ip: number;
  packets: ResubmitPacket[];
  since: number;
  lastRequest: number;
}

export class ArpCache {
  private readonly entries = new Map<string, Map<number, { mac: number; expiresAt: number }>>();
  private readonly waits = new Map<string, Waiting>();
  private queued = 0;
  private entryCount = 0;
  /** Packets dropped because a queue was full or their wait timed out. */
  dropped = 0;
  /** Replies not learned because the cache was full. */
  refused = 0;

  constructor(
    readonly ttlMs: number,
    readonly waitTimeoutMs: number,
    readonly retryMs: number,
    readonly maxQueuePerHop: number,
    readonly maxQueued: number,
    readonly maxEntries: number,
  ) {
    if (!(maxEntries > 0)) throw new RangeError(`ArpCache: maxEntries must be positive, got ${maxEntries}`);
  }

  get size(): number {
    return this.entryCount;
  }

  /** Whether (router, ip) is known (live or not yet expired away) or has packets waiting for it. */
  expects(routerId: string, ip: number): boolean {
    return this.entries.get(routerId)?.has(ip) === true || this.waits.has(`${routerId}|${ip}`);
  }

  lookup(routerId: string, ip: number, now: number): number {
    const e = this.entries.get(routerId)?.get(ip);
    return e && e.expiresAt > now ? e.mac : -1;
  }

  /**
   * Records a reply; returns the packets that were waiting for it. A new neighbour is refused when
   * the cache is full: its packets keep waiting (and time out) rather than being released only to
   * wait and ask again.
   */
  learn(routerId: string, ip: number, mac: number, now: number): ResubmitPacket[] {
    let m = this.entries.get(routerId);
    const e = m?.get(ip);
    if (e) {
      e.mac = mac;
      e.expiresAt = now + this.ttlMs;
    } else {
      if (this.entryCount >= this.maxEntries) {
        this.refused++;
        return [];
      }
      if (!m) {
        m = new Map();
        this.entries.set(routerId, m);
      }
      m.set(ip, { mac, expiresAt: now + this.ttlMs });
      this.entryCount++;
    }
    const k = `${routerId}|${ip}`;
    const w = this.waits.get(k);
    if (!w) return [];
    this.waits.delete(k);
    this.queued -= w.packets.length;
    return w.packets;
  }

  /**
   * Queues a packet for (router, ip). Returns whether an ARP request should be sent now (first
   * wait or retry interval passed) and whether the packet was queued at all.
   */
  wait(
    routerId: string,
    ip: number,
    pkt: ResubmitPacket,
    now: number,
  ): { queued: boolean; sendRequest: boolean } {
    const k = `${routerId}|${ip}`;
    let w = this.waits.get(k);
    if (!w) {
      // Every wait holds a packet, so there are never more waits than packets queued.
      if (this.queued >= this.maxQueued) {
        this.dropped++;
        return { queued: false, sendRequest: false };
      }
      w = { routerId, ip, packets: [], since: now, lastRequest: -Infinity };
      this.waits.set(k, w);
    }
    let queued = false;
    if (w.packets.length < this.maxQueuePerHop && this.queued < this.maxQueued) {
      w.packets.push(pkt);
      this.queued++;
      queued = true;
    } else this.dropped++;
    const sendRequest = now - w.lastRequest >= this.retryMs;
    if (sendRequest) w.lastRequest = now;
    return { queued, sendRequest };
  }

  get queuedPackets(): number {
    return this.queued;
  }

  /** Drops timed-out waits and expired entries; returns tags of flows that used expired entries. */
  expire(now: number): string[] {
    const out: string[] = [];
    for (const [k, w] of this.waits) {
      if (now - w.since < this.waitTimeoutMs) continue;
      this.waits.delete(k);
      this.queued -= w.packets.length;
      this.dropped += w.packets.length;
    }
    for (const [routerId, m] of this.entries) {
      for (const [ip, e] of m) {
        if (e.expiresAt > now) continue;
        m.delete(ip);
        this.entryCount--;
        out.push(tag.arp(routerId, ip));
      }
      if (m.size === 0) this.entries.delete(routerId);
    }
    return out;
  }
}
