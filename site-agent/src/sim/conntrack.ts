// Connection tracking: a connection is "forward" on the packet that opens it and "return" for
// packets whose reversed 5-tuple matches a committed forward entry in the same zone (the device
// whose chain asked). Entries expire unless refreshed (the agent touches them while flows live)
// and the table is bounded; a full table refuses new connections rather than evicting live ones.
import { formatIp6 } from "../packets/addr.js";
import { tag } from "./topology-view.js";

export interface ConntrackEntry {
  key: string;
  zoneId: string;
  expiresAt: number;
}

/** The tuple fields a key is built from (IPv4 addresses as numbers; IPv6 as 4 words). */
export interface CtTuple {
  ipVersion: number;
  proto: number;
  src: number;
  dst: number;
  src6: ArrayLike<number>;
  dst6: ArrayLike<number>;
  sport: number;
  dport: number;
}

function addr(v: number, ip6: ArrayLike<number>, ver: number): string {
  return ver === 6 ? formatIp6(ip6) : String(v);
}

/** Key of the tuple as seen (forward direction). */
export function ctKey(zone: string, t: CtTuple): string {
  if (t.ipVersion === 4) return `${zone}|${t.proto}|${t.src}|${t.sport}|${t.dst}|${t.dport}`;
  return `${zone}|${t.proto}|${addr(t.src, t.src6, t.ipVersion)}|${t.sport}|${addr(t.dst, t.dst6, t.ipVersion)}|${t.dport}`;
}

/** Key a return packet looks up: its own tuple reversed. */
export function ctReturnKey(zone: string, t: CtTuple): string {
  if (t.ipVersion === 4) return `${zone}|${t.proto}|${t.dst}|${t.dport}|${t.src}|${t.sport}`;
  return `${zone}|${t.proto}|${addr(t.dst, t.dst6, t.ipVersion)}|${t.dport}|${addr(t.src, t.src6, t.ipVersion)}|${t.sport}`;
}

export class ConntrackTable {
  private readonly entries = new Map<string, ConntrackEntry>();
  refused = 0;

  constructor(
    readonly maxEntries: number,
    readonly idleMs: number,
  ) {
    if (!(maxEntries > 0))
      throw new RangeError(`ConntrackTable: maxEntries must be positive, got ${maxEntries}`);
  }

  get size(): number {
    return this.entries.size;
  }

  has(key: string, now: number): boolean {
    const e = this.entries.get(key);
    return e !== undefined && e.expiresAt > now;
  }

  get(key: string): ConntrackEntry | undefined {
    return this.entries.get(key);
  }

  /** Adds or refreshes an entry; null when the table is full. */
  commit(key: string, zoneId: string, now: number): ConntrackEntry | null {
    const e = this.entries.get(key);
    if (e) {
      e.expiresAt = now + this.idleMs;
      return e;
    }
    if (this.entries.size >= this.maxEntries) {
      this.refused++;
      return null;
    }
    const n = { key, zoneId, expiresAt: now + this.idleMs };
    this.entries.set(key, n);
    return n;
  }

  /** Installs an entry learned from a peer agent (flow state); false when full. */
  put(entry: ConntrackEntry): boolean {
    if (!this.entries.has(entry.key) && this.entries.size >= this.maxEntries) {
      this.refused++;
      return false;
    }
    this.entries.set(entry.key, { ...entry });
    return true;
  }

  /** Keeps an entry alive while a flow that uses it is active. */
  touch(key: string, now: number): void {
    const e = this.entries.get(key);
    if (e) e.expiresAt = now + this.idleMs;
  }

  expire(now: number): string[] {
    const out: string[] = [];
    for (const [k, e] of this.entries) {
      if (e.expiresAt > now) continue;
      this.entries.delete(k);
      out.push(tag.ct(k));
    }
    return out;
  }
}
