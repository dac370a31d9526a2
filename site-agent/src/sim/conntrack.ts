// Connection tracking: a connection is "forward" on the packet that opens it and "return" for
// packets whose reversed 5-tuple matches a committed forward entry in the same zone (the device
// whose chain asked). Entries expire unless refreshed (the agent touches them while flows live)
// and the table is bounded; a full table refuses new connections rather than evicting live ones.
import { formatIp6 } from "../packets/addr.js";
import { tag } from "./topology-view.js";
import { TupleIndex } from "./tuple-index.js";

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

/**
 * The index words of an IPv4 key in the agent's zone ("|proto|src|sport|dst|dport", canonical
 * numbers), written to `out`; false for any other key (IPv6, another zone, not canonical).
 */
function keyWords(key: string, out: number[]): boolean {
  if (key.charCodeAt(0) !== 124 /* | */ || key.includes(":")) return false;
  const p = key.split("|");
  if (p.length !== 6) return false;
  const n = [0, 0, 0, 0, 0];
  const max = [255, 0xffffffff, 65535, 0xffffffff, 65535];
  for (let i = 0; i < 5; i++) {
    const v = Number(p[i + 1]);
    if (!Number.isInteger(v) || v < 0 || v > max[i]! || String(v) !== p[i + 1]) return false;
    n[i] = v;
  }
  out[0] = n[0]!;
  out[1] = n[1]!;
  out[2] = n[3]!;
  out[3] = ((n[2]! << 16) | n[4]!) >>> 0;
  return true;
}

/**
 * Entries are stored by key; IPv4 keys of the agent's zone (every key the simulation makes for
 * IPv4) live in a TupleIndex the packet path queries by numbers (`hasTuple`, `commitTuple`), the
 * rest in a Map. A key string always lands in the same store, whichever method is used.
 */
export class ConntrackTable {
  private readonly other = new Map<string, ConntrackEntry>();
  private readonly v4 = new TupleIndex<ConntrackEntry>();
  private readonly w: number[] = [0, 0, 0, 0];
  refused = 0;

  constructor(
    readonly maxEntries: number,
    readonly idleMs: number,
  ) {
    if (!(maxEntries > 0))
      throw new RangeError(`ConntrackTable: maxEntries must be positive, got ${maxEntries}`);
  }

  get size(): number {
    return this.other.size + this.v4.size;
  }

  get(key: string): ConntrackEntry | undefined {
    const w = this.w;
    return keyWords(key, w) ? this.v4.get(w[0]!, w[1]!, w[2]!, w[3]!) : this.other.get(key);
  }

  has(key: string, now: number): boolean {
    const e = this.get(key);
    return e !== undefined && e.expiresAt > now;
  }

  /** `has` for the IPv4 key ctKey("", {proto, src, sport, dst, dport}) would build. */
  hasTuple(proto: number, src: number, sport: number, dst: number, dport: number, now: number): boolean {
    const e = this.v4.get(proto, src, dst, ((sport << 16) | dport) >>> 0);
    return e !== undefined && e.expiresAt > now;
  }

  /** Adds or refreshes an entry; null when the table is full. */
  commit(key: string, zoneId: string, now: number): ConntrackEntry | null {
    const w = this.w;
    if (keyWords(key, w)) return this.commitWords(w[0]!, w[1]!, w[2]!, w[3]!, key, zoneId, now);
    const e = this.other.get(key);
    if (e) {
      e.expiresAt = now + this.idleMs;
      return e;
    }
    if (this.size >= this.maxEntries) {
      this.refused++;
      return null;
    }
    const n = { key, zoneId, expiresAt: now + this.idleMs };
    this.other.set(key, n);
    return n;
  }

  /** `commit` of the IPv4 tuple whose ctKey("", …) is `key` (the caller built both). */
  commitTuple(
    proto: number,
    src: number,
    sport: number,
    dst: number,
    dport: number,
    key: string,
    zoneId: string,
    now: number,
  ): ConntrackEntry | null {
    return this.commitWords(proto, src, dst, ((sport << 16) | dport) >>> 0, key, zoneId, now);
  }

  private commitWords(
    a: number,
    b: number,
    c: number,
    d: number,
    key: string,
    zoneId: string,
    now: number,
  ): ConntrackEntry | null {
    const e = this.v4.get(a, b, c, d);
    if (e) {
      e.expiresAt = now + this.idleMs;
      return e;
    }
    if (this.size >= this.maxEntries) {
      this.refused++;
      return null;
    }
    const n = { key, zoneId, expiresAt: now + this.idleMs };
    this.v4.set(a, b, c, d, n);
    return n;
  }

  /** Installs an entry learned from a peer agent (flow state); false when full. */
  put(entry: ConntrackEntry): boolean {
    const w = this.w;
    const v4 = keyWords(entry.key, w);
    const exists = v4 ? this.v4.get(w[0]!, w[1]!, w[2]!, w[3]!) !== undefined : this.other.has(entry.key);
    if (!exists && this.size >= this.maxEntries) {
      this.refused++;
      return false;
    }
    if (v4) this.v4.set(w[0]!, w[1]!, w[2]!, w[3]!, { ...entry });
    else this.other.set(entry.key, { ...entry });
    return true;
  }

  /** Keeps an entry alive while a flow that uses it is active. */
  touch(key: string, now: number): void {
    const e = this.get(key);
    if (e) e.expiresAt = now + this.idleMs;
  }

  expire(now: number): string[] {
    const out: string[] = [];
    for (const [k, e] of this.other) {
      if (e.expiresAt > now) continue;
      this.other.delete(k);
      out.push(tag.ct(k));
    }
    const w = this.w;
    for (const e of this.v4.values()) {
      if (e.expiresAt > now) continue;
      keyWords(e.key, w);
      this.v4.delete(w[0]!, w[1]!, w[2]!, w[3]!);
      out.push(tag.ct(e.key));
    }
    return out;
  }
}
