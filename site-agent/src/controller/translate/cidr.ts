// IPv4/IPv6 address and prefix arithmetic the translation needs: a subnet's network address, the
// prefix an address belongs to, and containment. Addresses are BigInts so both families share code.
import { isIP } from "node:net";

export interface IpAddress {
  family: 4 | 6;
  value: bigint;
}

export interface Cidr {
  family: 4 | 6;
  /** The address as written (host bits may be set, e.g. "198.51.100.2/24"). */
  address: bigint;
  prefix: number;
}

const bits = (family: 4 | 6): number => (family === 4 ? 32 : 128);

/** Parses a plain IPv4 or IPv6 address; undefined when it is not one. */
export function parseIp(text: string): IpAddress | undefined {
  const family = isIP(text);
  if (family === 4) {
    let value = 0n;
    for (const part of text.split(".")) value = (value << 8n) | BigInt(Number(part));
    return { family, value };
  }
  if (family === 6) {
    let t = text;
    const zone = t.indexOf("%");
    if (zone >= 0) t = t.slice(0, zone);
    // An embedded dotted quad ("::ffff:1.2.3.4") becomes two hex groups.
    const lastColon = t.lastIndexOf(":");
    const tail = t.slice(lastColon + 1);
    if (tail.includes(".")) {
      const v4 = parseIp(tail)!.value;
      t = `${t.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
    }
    const [head, rest] = t.split("::") as [string, string | undefined];
    const headGroups = head === "" ? [] : head.split(":");
    const restGroups = rest === undefined || rest === "" ? [] : rest.split(":");
    const missing = 8 - headGroups.length - restGroups.length;
    const groups =
      rest === undefined ? headGroups : [...headGroups, ...Array(missing).fill("0"), ...restGroups];
    let value = 0n;
    for (const g of groups) value = (value << 16n) | BigInt(Number.parseInt(g, 16));
    return { family, value };
  }
  return undefined;
}

/** Parses "address/prefix"; undefined when malformed or the prefix is out of range. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const ip = parseIp(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > bits(ip.family)) return undefined;
  return { family: ip.family, address: ip.value, prefix };
}

function mask(family: 4 | 6, prefix: number): bigint {
  const width = BigInt(bits(family));
  const all = (1n << width) - 1n;
  return (all << (width - BigInt(prefix))) & all;
}

export function formatIp(ip: IpAddress): string {
  if (ip.family === 4) {
    const v = ip.value;
    return [24n, 16n, 8n, 0n].map((s) => ((v >> s) & 0xffn).toString()).join(".");
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip.value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (length ≥ 2) of zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/** "198.51.100.2/24" → "198.51.100.0/24"; undefined when malformed. */
export function networkOf(cidrText: string): string | undefined {
  const c = parseCidr(cidrText);
  if (!c) return undefined;
  const net = c.address & mask(c.family, c.prefix);
  return `${formatIp({ family: c.family, value: net })}/${c.prefix}`;
}

/** Whether `ipText` lies inside `cidrText` (false when either is malformed or families differ). */
export function cidrContains(cidrText: string, ipText: string): boolean {
  const c = parseCidr(cidrText);
  const ip = parseIp(ipText);
  if (!c || !ip || c.family !== ip.family) return false;
  const m = mask(c.family, c.prefix);
  return (c.address & m) === (ip.value & m);
}

/** The single-address prefix of an address: "10.0.0.5" → "10.0.0.5/32", v6 → "/128". */
export function hostPrefix(ipText: string): string | undefined {
  const ip = parseIp(ipText);
  if (!ip) return undefined;
  return `${formatIp(ip)}/${bits(ip.family)}`;
}

/** Canonical text of an address (so "::0:1" and "::1" compare equal); undefined when malformed. */
export function canonicalIp(ipText: string): string | undefined {
  // A security group's address group is rebuilt from every member's addresses when one member
  // changes; parsing them all again each time was most of that cost. Pure, so memoized (bounded).
  const known = canonicalMemo.get(ipText);
  if (known !== undefined) return known === "" ? undefined : known;
  const ip = parseIp(ipText);
  const out = ip ? formatIp(ip) : undefined;
  if (canonicalMemo.size >= CANONICAL_MEMO_MAX) canonicalMemo.clear();
  canonicalMemo.set(ipText, out ?? "");
  return out;
}

/** Addresses whose canonical form is remembered (then the memo starts over). */
const CANONICAL_MEMO_MAX = 200_000;
const canonicalMemo = new Map<string, string>();

/** Canonical, de-duplicated addresses in first-seen order; malformed ones go to `onInvalid`. */
export function canonicalIpList(ips: Iterable<string>, onInvalid: (text: string) => void): string[] {
  const out = new Set<string>();
  for (const text of ips) {
    const ip = canonicalIp(text);
    if (ip === undefined) onInvalid(text);
    else out.add(ip);
  }
  return [...out];
}
