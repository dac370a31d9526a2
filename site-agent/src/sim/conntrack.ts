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

// The parts of IPv4 keys and tags that repeat from one new connection to the next (all but the
// client's port), cached so a key is three pieces joined rather than eleven: each join past a few
// characters allocates. Direct-mapped and fixed-size; a miss rebuilds the parts. The strings are
// exactly what the one-piece template would build.
const PARTS = 256;
const keyWords4 = new Float64Array(PARTS * 4).fill(-1);
const keyHeads: string[] = [];
const keyTails: string[] = [];
const tagWords4 = new Float64Array(PARTS * 4).fill(-1);
const tagHeads: string[] = [];
for (let i = 0; i < PARTS; i++) {
  keyHeads.push("");
  keyTails.push("");
  tagHeads.push("");
}

function partSlot(a: number, b: number, c: number, d: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b);
  h = Math.imul(h ^ b ^ (h >>> 13), 0xc2b2ae35);
  h = Math.imul(h ^ c ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ d ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) & (PARTS - 1);
}

/** ctKey("", t) of an IPv4 tuple, from its numbers (the agent's zone: every key it makes). */
export function ip4CtKey(proto: number, src: number, sport: number, dst: number, dport: number): string {
  const i = partSlot(proto, src, dst, dport);
  const o = i * 4;
  const w = keyWords4;
  if (w[o] !== proto || w[o + 1] !== src || w[o + 2] !== dst || w[o + 3] !== dport) {
    w[o] = proto;
    w[o + 1] = src;
    w[o + 2] = dst;
    w[o + 3] = dport;
    keyHeads[i] = `|${proto}|${src}|`;
    keyTails[i] = `|${dst}|${dport}`;
  }
  return keyHeads[i]! + sport + keyTails[i]!;
}

/** tag.ct(ip4CtKey(…)), built from cached parts (the packet path tags every key it looks up). */
export function ip4CtTag(proto: number, src: number, sport: number, dst: number, dport: number): string {
  // Return keys end with the client's port: the rest is the cached head.
  const i = partSlot(proto, src, sport, dst);
  const o = i * 4;
  const w = tagWords4;
  if (w[o] !== proto || w[o + 1] !== src || w[o + 2] !== sport || w[o + 3] !== dst) {
    w[o] = proto;
    w[o + 1] = src;
    w[o + 2] = sport;
    w[o + 3] = dst;
    tagHeads[i] = `ct:|${proto}|${src}|${sport}|${dst}|`;
  }
  return tagHeads[i]! + dport;
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

/** The key string of index words (the inverse of keyWords: canonical keys round-trip exactly). */
function wordsKey(a: number, b: number, c: number, d: number): string {
  return ip4CtKey(a, b, d >>> 16, c, d & 0xffff);
}

/** Distinct zone ids the table names before it drops those no entry uses any more. */
const ZONE_NAMES = 4096;

/**
 * Entries are stored by key; IPv4 keys of the agent's zone (every key the simulation makes for
 * IPv4) live in a TupleIndex the packet path queries by numbers (`hasTuple`, `commitTuple`) —
 * tuple, zone number and expiry in typed arrays, no object or string per connection — the rest
 * in a Map. A key string always lands in the same store, whichever method is used. Entries
 * returned by `get` and `commit` are copies: the table changes only through its methods.
 */
export class ConntrackTable {
  private readonly other = new Map<string, ConntrackEntry>();
  /** Id: the entry's zone (an index into zoneNames, from 1); number: its expiry. */
  private readonly v4 = new TupleIndex();
  private zoneNames: string[] = [""];
  private zoneIds = new Map<string, number>();
  private zoneLimit = ZONE_NAMES;
  private readonly w: number[] = [0, 0, 0, 0];
  refused = 0;
  /** Zone of the entry the last successful IPv4 commit created or refreshed. */
  committedZone = "";

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

  /** The id of a zone name (device ids: few, and the same ones again and again). */
  private zoneId(zone: string): number {
    const id = this.zoneIds.get(zone);
    if (id !== undefined) return id;
    if (this.zoneNames.length > this.zoneLimit) this.compactZones();
    const n = this.zoneNames.length;
    this.zoneNames.push(zone);
    this.zoneIds.set(zone, n);
    return n;
  }

  /** Renumbers the zones live entries use, forgetting the rest (bounds the name table). */
  private compactZones(): void {
    const names: string[] = [""];
    const ids = new Map<string, number>();
    const old = this.zoneNames;
    this.v4.forEach((_a, _b, _c, _d, id, _n, slot) => {
      const name = old[id]!;
      let n = ids.get(name);
      if (n === undefined) {
        n = names.length;
        names.push(name);
        ids.set(name, n);
      }
      this.v4.setIdAt(slot, n);
    });
    this.zoneNames = names;
    this.zoneIds = ids;
    this.zoneLimit = Math.max(ZONE_NAMES, 2 * names.length);
  }

  get(key: string): ConntrackEntry | undefined {
    const w = this.w;
    if (!keyWords(key, w)) {
      const e = this.other.get(key);
      return e && { ...e };
    }
    const i = this.v4.slot(w[0]!, w[1]!, w[2]!, w[3]!);
    return i < 0 ? undefined : { key, zoneId: this.zoneNames[this.v4.idAt(i)]!, expiresAt: this.v4.numAt(i) };
  }

  has(key: string, now: number): boolean {
    const w = this.w;
    if (!keyWords(key, w)) {
      const e = this.other.get(key);
      return e !== undefined && e.expiresAt > now;
    }
    const i = this.v4.slot(w[0]!, w[1]!, w[2]!, w[3]!);
    return i >= 0 && this.v4.numAt(i) > now;
  }

  /** `has` for the IPv4 key ctKey("", {proto, src, sport, dst, dport}) would build. */
  hasTuple(proto: number, src: number, sport: number, dst: number, dport: number, now: number): boolean {
    const i = this.v4.slot(proto, src, dst, ((sport << 16) | dport) >>> 0);
    return i >= 0 && this.v4.numAt(i) > now;
  }

  /** Adds or refreshes an entry; null when the table is full. */
  commit(key: string, zoneId: string, now: number): ConntrackEntry | null {
    const w = this.w;
    if (keyWords(key, w)) {
      const expiresAt = this.commitWords(w[0]!, w[1]!, w[2]!, w[3]!, zoneId, now);
      return expiresAt < 0 ? null : { key, zoneId: this.committedZone, expiresAt };
    }
    const e = this.other.get(key);
    if (e) {
      e.expiresAt = now + this.idleMs;
      return { ...e };
    }
    if (this.size >= this.maxEntries) {
      this.refused++;
      return null;
    }
    const n = { key, zoneId, expiresAt: now + this.idleMs };
    this.other.set(key, n);
    return { ...n };
  }

  /**
   * `commit` of the IPv4 key ctKey("", {proto, src, sport, dst, dport}) would build: the entry's
   * expiry, or -1 when the table is full. A known entry keeps the zone it was created in
   * (`committedZone` says which).
   */
  commitTuple(
    proto: number,
    src: number,
    sport: number,
    dst: number,
    dport: number,
    zoneId: string,
    now: number,
  ): number {
    return this.commitWords(proto, src, dst, ((sport << 16) | dport) >>> 0, zoneId, now);
  }

  private commitWords(a: number, b: number, c: number, d: number, zoneId: string, now: number): number {
    const expiresAt = now + this.idleMs;
    const i = this.v4.slot(a, b, c, d);
    if (i >= 0) {
      this.v4.setNumAt(i, expiresAt);
      this.committedZone = this.zoneNames[this.v4.idAt(i)]!;
      return expiresAt;
    }
    if (this.size >= this.maxEntries) {
      this.refused++;
      return -1;
    }
    this.v4.set(a, b, c, d, this.zoneId(zoneId), expiresAt);
    this.committedZone = zoneId;
    return expiresAt;
  }

  /** Installs an entry learned from a peer agent (flow state); false when full. */
  put(entry: ConntrackEntry): boolean {
    const w = this.w;
    const v4 = keyWords(entry.key, w);
    const exists = v4 ? this.v4.slot(w[0]!, w[1]!, w[2]!, w[3]!) >= 0 : this.other.has(entry.key);
    if (!exists && this.size >= this.maxEntries) {
      this.refused++;
      return false;
    }
    if (v4) this.v4.set(w[0]!, w[1]!, w[2]!, w[3]!, this.zoneId(entry.zoneId), entry.expiresAt);
    else this.other.set(entry.key, { ...entry });
    return true;
  }

  /** Keeps an entry alive while a flow that uses it is active. */
  touch(key: string, now: number): void {
    const w = this.w;
    if (!keyWords(key, w)) {
      const e = this.other.get(key);
      if (e) e.expiresAt = now + this.idleMs;
      return;
    }
    const i = this.v4.slot(w[0]!, w[1]!, w[2]!, w[3]!);
    if (i >= 0) this.v4.setNumAt(i, now + this.idleMs);
  }

  expire(now: number): string[] {
    const out: string[] = [];
    for (const [k, e] of this.other) {
      if (e.expiresAt > now) continue;
      this.other.delete(k);
      out.push(tag.ct(k));
    }
    // Collected first: a deletion shifts later entries of its probe run back.
    const stale: number[] = [];
    this.v4.forEach((a, b, c, d, _zone, expiresAt) => {
      if (expiresAt <= now) stale.push(a, b, c, d);
    });
    for (let i = 0; i < stale.length; i += 4) {
      this.v4.delete(stale[i]!, stale[i + 1]!, stale[i + 2]!, stale[i + 3]!);
      out.push(tag.ct(wordsKey(stale[i]!, stale[i + 1]!, stale[i + 2]!, stale[i + 3]!)));
    }
    return out;
  }
}
