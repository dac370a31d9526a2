// Address representations used on the packet path: MACs as 48-bit integers, IPv4 addresses as
// unsigned 32-bit integers, IPv6 addresses as four 32-bit words. Numbers compare and hash without
// allocating; the string forms exist for topology objects, tags and humans.

export const MAC_BROADCAST = 0xffffffffffff;

/** A hex digit's value, or -1 (for a character code). */
function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/**
 * Parses "aa:bb:cc:dd:ee:ff" (or with "-"); returns -1 when malformed. Character by character: a
 * snapshot parses tens of thousands of MACs (ports, MAC entries) before the agent can forward.
 */
export function parseMac(s: string): number {
  if (s.length !== 17) return -1;
  let v = 0;
  for (let i = 0; i < 17; i += 3) {
    const hi = hexDigit(s.charCodeAt(i));
    const lo = hexDigit(s.charCodeAt(i + 1));
    if (hi < 0 || lo < 0) return -1;
    if (i < 15) {
      const sep = s.charCodeAt(i + 2);
      if (sep !== 58 && sep !== 45) return -1; // ":" or "-"
    }
    v = v * 256 + hi * 16 + lo;
  }
  return v;
}

export function formatMac(m: number): string {
  let s = "";
  for (let i = 5; i >= 0; i--) {
    const b = Math.floor(m / 2 ** (8 * i)) % 256;
    s += (b < 16 ? "0" : "") + b.toString(16) + (i > 0 ? ":" : "");
  }
  return s;
}

/** Group bit (I/G): broadcast and multicast frames. */
export function isMulticastMac(m: number): boolean {
  return Math.floor(m / 2 ** 40) % 2 === 1;
}

export function readMac(b: Uint8Array, off: number): number {
  return (b[off]! * 2 ** 40 +
    b[off + 1]! * 2 ** 32 +
    ((b[off + 2]! << 24) >>> 0) +
    (b[off + 3]! << 16) +
    (b[off + 4]! << 8) +
    b[off + 5]!) as number;
}

export function writeMac(b: Uint8Array, off: number, m: number): void {
  const hi = Math.floor(m / 2 ** 32);
  const lo = m >>> 0;
  b[off] = (hi >>> 8) & 0xff;
  b[off + 1] = hi & 0xff;
  b[off + 2] = lo >>> 24;
  b[off + 3] = (lo >>> 16) & 0xff;
  b[off + 4] = (lo >>> 8) & 0xff;
  b[off + 5] = lo & 0xff;
}

/**
 * Parses dotted-quad IPv4 (four parts of one to three digits, each at most 255); returns -1 when
 * malformed. Character by character, as parseMac.
 */
export function parseIp4(s: string): number {
  let v = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (++digits > 3) return -1;
      part = part * 10 + (c - 48);
    } else if (c === 46 && digits > 0 && dots < 3) {
      if (part > 255) return -1;
      v = v * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else return -1;
  }
  if (dots !== 3 || digits === 0 || part > 255) return -1;
  return v * 256 + part;
}

export function formatIp4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

export function readU32(b: Uint8Array, off: number): number {
  return ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0;
}

export function writeU32(b: Uint8Array, off: number, v: number): void {
  b[off] = v >>> 24;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}

export function readU16(b: Uint8Array, off: number): number {
  return (b[off]! << 8) | b[off + 1]!;
}

export function writeU16(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 8) & 0xff;
  b[off + 1] = v & 0xff;
}

/** Parses an IPv6 address (with "::" compression and an optional dotted IPv4 tail) into 4 words. */
export function parseIp6(s: string): Uint32Array | null {
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (h: string): number[] | null => {
    if (h === "") return [];
    const out: number[] = [];
    const parts = h.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIp4(p);
        if (v4 < 0) return null;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
        out.push(Number.parseInt(p, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const w = new Uint32Array(4);
  for (let i = 0; i < 4; i++) w[i] = ((all[2 * i]! << 16) | all[2 * i + 1]!) >>> 0;
  return w;
}

export function formatIp6(w: ArrayLike<number>): string {
  const g: string[] = [];
  for (let i = 0; i < 4; i++) g.push((w[i]! >>> 16).toString(16), (w[i]! & 0xffff).toString(16));
  // Compress the longest run of zero groups (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === "0") j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return g.join(":");
  return `${g.slice(0, best).join(":")}::${g.slice(best + bestLen).join(":")}`;
}

/** An IPv4 prefix: `addr` already masked. */
export interface Cidr4 {
  addr: number;
  len: number;
  mask: number;
}

export function prefixMask4(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

/** Parses "a.b.c.d/n" or a bare address (/32); null when malformed. */
export function parseCidr4(s: string): Cidr4 | null {
  const slash = s.indexOf("/");
  const ip = parseIp4(slash < 0 ? s : s.slice(0, slash));
  if (ip < 0) return null;
  // The prefix length: one or two digits, at most 32.
  let len = 32;
  if (slash >= 0) {
    const digits = s.length - slash - 1;
    if (digits < 1 || digits > 2) return null;
    len = 0;
    for (let i = slash + 1; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) return null;
      len = len * 10 + (c - 48);
    }
    if (len > 32) return null;
  }
  const mask = prefixMask4(len);
  return { addr: (ip & mask) >>> 0, len, mask };
}

export interface Cidr6 {
  addr: Uint32Array;
  len: number;
}

export function parseCidr6(s: string): Cidr6 | null {
  const slash = s.indexOf("/");
  const w = parseIp6(slash < 0 ? s : s.slice(0, slash));
  if (!w) return null;
  const lenStr = slash < 0 ? "128" : s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenStr)) return null;
  const len = Number(lenStr);
  if (len > 128) return null;
  for (let i = 0; i < 4; i++) w[i] = (w[i]! & prefixMask4(Math.max(0, Math.min(32, len - 32 * i)))) >>> 0;
  return { addr: w, len };
}

export function inCidr6(c: Cidr6, w: ArrayLike<number>): boolean {
  for (let i = 0; i < 4; i++) {
    const m = prefixMask4(Math.max(0, Math.min(32, c.len - 32 * i)));
    if ((w[i]! & m) >>> 0 !== c.addr[i]) return false;
  }
  return true;
}
