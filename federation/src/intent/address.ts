// IPv4/IPv6 addresses and CIDR prefixes as bigints, for intent validation (containment, overlap,
// host bits). Pure: no I/O. Returns undefined on malformed input so callers can name the field.
import { isIP } from "node:net";

export type Family = 4 | 6;

export interface Address {
  family: Family;
  value: bigint;
}

export interface Prefix {
  family: Family;
  /** The network address (host bits zero when `exact`). */
  network: bigint;
  /** The address as written (host bits kept), e.g. for "198.51.100.2/24" the router's own address. */
  address: bigint;
  length: number;
  /** True when the written address had no host bits set. */
  exact: boolean;
}

const BITS: Record<Family, number> = { 4: 32, 6: 128 };

export function parseAddress(text: string): Address | undefined {
  const family = isIP(text);
  if (family === 4) {
    let v = 0n;
    for (const part of text.split(".")) v = (v << 8n) | BigInt(Number(part));
    return { family: 4, value: v };
  }
  if (family === 6) return { family: 6, value: parseV6(text) };
  return undefined;
}

function parseV6(text: string): bigint {
  // isIP has validated the syntax; expand "::" and an embedded dotted quad.
  let s = text;
  const pct = s.indexOf("%");
  if (pct >= 0) s = s.slice(0, pct);
  const groups: number[] = [];
  const toGroups = (part: string): number[] => {
    if (part === "") return [];
    const out: number[] = [];
    for (const g of part.split(":")) {
      if (g.includes(".")) {
        const v4 = parseAddress(g);
        const n = Number(v4?.value ?? 0n);
        out.push((n >>> 16) & 0xffff, n & 0xffff);
      } else out.push(Number.parseInt(g, 16));
    }
    return out;
  };
  const dbl = s.indexOf("::");
  if (dbl >= 0) {
    const head = toGroups(s.slice(0, dbl));
    const tail = toGroups(s.slice(dbl + 2));
    groups.push(...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail);
  } else groups.push(...toGroups(s));
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  return v;
}

export function parsePrefix(text: string): Prefix | undefined {
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const addr = parseAddress(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  if (!addr || !/^\d{1,3}$/.test(lenText)) return undefined;
  const length = Number(lenText);
  const bits = BITS[addr.family];
  if (length > bits) return undefined;
  const network = addr.value & mask(addr.family, length);
  return { family: addr.family, network, address: addr.value, length, exact: network === addr.value };
}

function mask(family: Family, length: number): bigint {
  const bits = BigInt(BITS[family]);
  const all = (1n << bits) - 1n;
  return (all >> BigInt(length)) ^ all;
}

export function prefixContains(p: Prefix, a: Address): boolean {
  return p.family === a.family && (a.value & mask(p.family, p.length)) === p.network;
}

export function prefixesOverlap(a: Prefix, b: Prefix): boolean {
  if (a.family !== b.family) return false;
  const shorter = Math.min(a.length, b.length);
  const m = mask(a.family, shorter);
  return (a.network & m) === (b.network & m);
}

export function formatAddress(family: Family, value: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 0xffn)).join(".");
  }
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((value >> BigInt(i * 16)) & 0xffffn).toString(16));
  return groups.join(":");
}

export function formatPrefix(p: Prefix): string {
  return `${formatAddress(p.family, p.network)}/${p.length}`;
}

/** True for the network's own address or (IPv4) its broadcast address, which hosts cannot use. */
export function isReservedInPrefix(p: Prefix, a: Address): boolean {
  if (a.value === p.network) return p.family === 4 ? p.length < 31 : p.length < 127;
  if (p.family !== 4 || p.length >= 31) return false;
  const broadcast = p.network | ((1n << BigInt(32 - p.length)) - 1n);
  return a.value === broadcast;
}
