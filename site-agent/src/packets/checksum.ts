// Internet checksums (RFC 1071) over byte ranges, with the IPv4/IPv6 pseudo-headers TCP, UDP and
// ICMPv6 need, plus the incremental update (RFC 1624) used when a single field is rewritten.
import { readU16 } from "./addr.js";
import { FRAG_NONE, type Packet, PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP } from "./packet.js";

/** One's-complement sum of b[off, off+len) folded into 16 bits, not yet inverted. */
export function onesSum(b: Uint8Array, off: number, len: number, initial = 0): number {
  let sum = initial;
  const end = off + len - 1;
  let i = off;
  for (; i < end; i += 2) sum += (b[i]! << 8) | b[i + 1]!;
  if (i === end) sum += b[i]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

export function finishChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Pseudo-header sum for IPv4 TCP/UDP: addresses, protocol and L4 length. */
export function pseudoSum4(src: number, dst: number, proto: number, l4len: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + proto + l4len;
}

/** Pseudo-header sum for IPv6 upper layers; src/dst are byte offsets into b. */
export function pseudoSum6(
  b: Uint8Array,
  srcOff: number,
  dstOff: number,
  proto: number,
  l4len: number,
): number {
  let s = onesSum(b, srcOff, 16) + onesSum(b, dstOff, 16);
  s += (l4len >>> 16) + (l4len & 0xffff) + proto;
  return s;
}

/**
 * RFC 1624 eqn. 3: new checksum after a 16-bit word changes from `old` to `now` (the agent's
 * rewrites use it, agent/flow-actions.ts; a property test holds it to a full recomputation).
 */
export function updateChecksum16(check: number, old: number, now: number): number {
  let sum = (~check & 0xffff) + (~old & 0xffff) + now;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export function updateChecksum32(check: number, old: number, now: number): number {
  return updateChecksum16(updateChecksum16(check, old >>> 16, now >>> 16), old & 0xffff, now & 0xffff);
}

/**
 * Why a parsed packet's checksums are wrong (IPv4 header; TCP, UDP, ICMP and ICMPv6 over their
 * pseudo-headers), or null when they verify. Fragments' L4 checksums cover the whole datagram and
 * are not checked; an IPv4 UDP checksum of 0 means "none". For tests and diagnostics, not the
 * packet path (the datapath forwards what it receives, as OVS does).
 */
export function checksumError(p: Packet): string | null {
  if (p.error) return `packet did not parse: ${p.error}`;
  const b = p.buf;
  if (p.ipVersion === 4 && onesSum(b, p.l3Off, p.ipHeaderLen) !== 0xffff) return "ipv4: header checksum";
  if (p.ipVersion === 0 || p.nwFrag !== FRAG_NONE || p.l4Off < 0) return null;
  const len = p.ipEnd - p.l4Off;
  const proto = p.nwProto;
  let initial: number;
  if (proto === PROTO_ICMP) initial = 0;
  else if (proto === PROTO_TCP || proto === PROTO_UDP || proto === PROTO_ICMP6) {
    if (proto === PROTO_UDP && p.ipVersion === 4 && readU16(b, p.l4Off + 6) === 0) return null;
    initial =
      p.ipVersion === 4
        ? pseudoSum4(p.nwSrc, p.nwDst, proto, len)
        : pseudoSum6(b, p.l3Off + 8, p.l3Off + 24, proto, len);
  } else return null;
  return onesSum(b, p.l4Off, len, initial) === 0xffff ? null : `protocol ${proto}: checksum`;
}
