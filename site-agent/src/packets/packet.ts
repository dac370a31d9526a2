// Zero-copy frame parser: fills a reusable Packet with header offsets and the numeric fields the
// simulation matches on, reading the caller's buffer in place. Malformed input never throws: the
// Packet's `error` names what was wrong and how far parsing got (the layers before it stay valid).
import { readMac, readU16, readU32 } from "./addr.js";

export const ETH_IP4 = 0x0800;
export const ETH_ARP = 0x0806;
export const ETH_VLAN = 0x8100;
export const ETH_QINQ = 0x88a8;
export const ETH_IP6 = 0x86dd;

export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_ICMP6 = 58;

export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;

/** Fragment state of an IP packet (as OVS's nw_frag). */
export const FRAG_NONE = 0;
/** First fragment: carries the L4 header. */
export const FRAG_FIRST = 1;
/** Later fragment: no L4 header, ports are unknown (0). */
export const FRAG_LATER = 2;

export const ICMP6_NS = 135;
export const ICMP6_NA = 136;

const ETH_HEADER = 14;
const MAX_IP6_EXT_HEADERS = 8;

export class Packet {
  buf: Uint8Array = new Uint8Array(0);
  /** Frame length (buf may be longer when the caller reuses a buffer). */
  length = 0;
  /** Null when the frame parsed completely; otherwise why it was rejected. */
  error: string | null = null;

  ethDst = 0;
  ethSrc = 0;
  /** 802.1Q VLAN id (0 when untagged or priority-tagged). */
  vlan = 0;
  hasVlan = false;
  vlanPcp = 0;
  /** Offset of the 802.1Q tag when present. */
  vlanOff = -1;
  etherType = 0;
  l3Off = 0;

  arpOp = 0;
  arpSha = 0;
  arpSpa = 0;
  arpTha = 0;
  arpTpa = 0;

  /** 4, 6, or 0 when not IP. */
  ipVersion = 0;
  nwSrc = 0;
  nwDst = 0;
  readonly nwSrc6 = new Uint32Array(4);
  readonly nwDst6 = new Uint32Array(4);
  nwProto = 0;
  nwTos = 0;
  nwTtl = 0;
  ipId = 0;
  ipHeaderLen = 0;
  ipOptionsLen = 0;
  /** End of the IP packet (offset) as its length field says. */
  ipEnd = 0;
  nwFrag = FRAG_NONE;
  fragOffset = 0;
  moreFragments = false;
  dontFragment = false;

  l4Off = -1;
  tpSrc = 0;
  tpDst = 0;
  tcpFlags = 0;
  tcpSeq = 0;
  tcpAck = 0;
  icmpType = 0;
  icmpCode = 0;
  icmpId = 0;
  icmpSeq = 0;
  payloadOff = -1;

  /** ICMPv6 neighbor discovery: target address and link-layer address option (0 if absent). */
  readonly ndTarget = new Uint32Array(4);
  ndLinkAddr = 0;

  reset(buf: Uint8Array, length: number): void {
    // Only an IPv6 parse writes the address arrays (after setting ipVersion): clear them then.
    if (this.ipVersion === 6) {
      this.nwSrc6.fill(0);
      this.nwDst6.fill(0);
      this.ndTarget.fill(0);
    }
    this.buf = buf;
    this.length = length;
    this.error = null;
    this.ethDst = this.ethSrc = this.vlan = this.vlanPcp = this.etherType = 0;
    this.hasVlan = false;
    this.vlanOff = -1;
    this.l3Off = 0;
    this.arpOp = this.arpSha = this.arpSpa = this.arpTha = this.arpTpa = 0;
    this.ipVersion = this.nwSrc = this.nwDst = this.nwProto = this.nwTos = this.nwTtl = this.ipId = 0;
    this.ipHeaderLen = this.ipOptionsLen = this.ipEnd = this.fragOffset = 0;
    this.nwFrag = FRAG_NONE;
    this.moreFragments = this.dontFragment = false;
    this.l4Off = this.payloadOff = -1;
    this.tpSrc = this.tpDst = this.tcpFlags = this.tcpSeq = this.tcpAck = 0;
    this.icmpType = this.icmpCode = this.icmpId = this.icmpSeq = 0;
    this.ndLinkAddr = 0;
  }

  isIp4(): boolean {
    return this.ipVersion === 4;
  }
}

function fail(p: Packet, why: string): Packet {
  p.error = why;
  return p;
}

/**
 * Parses `buf[0, length)` into `out` (a fresh Packet when omitted). Never throws for any input;
 * check `out.error`.
 */
export function parsePacket(buf: Uint8Array, out: Packet = new Packet(), length = buf.length): Packet {
  const p = out;
  p.reset(buf, Math.min(length, buf.length));
  const len = p.length;
  if (len < ETH_HEADER) return fail(p, `ethernet: frame of ${len} bytes is shorter than 14`);
  p.ethDst = readMac(buf, 0);
  p.ethSrc = readMac(buf, 6);
  let off = 12;
  let type = readU16(buf, off);
  if (type === ETH_VLAN || type === ETH_QINQ) {
    if (len < ETH_HEADER + 4) return fail(p, "802.1Q: frame too short for the VLAN tag");
    const tci = readU16(buf, 14);
    p.hasVlan = true;
    p.vlanOff = 12;
    p.vlan = tci & 0x0fff;
    p.vlanPcp = tci >>> 13;
    off += 4;
    type = readU16(buf, off);
    if (type === ETH_VLAN || type === ETH_QINQ) return fail(p, "802.1Q: stacked VLAN tags are not supported");
  }
  if (type < 0x0600) return fail(p, `ethernet: length field ${type} (802.3 LLC frames are not supported)`);
  p.etherType = type;
  p.l3Off = off + 2;
  if (type === ETH_ARP) return parseArp(p);
  if (type === ETH_IP4) return parseIp4(p);
  if (type === ETH_IP6) return parseIp6(p);
  return p;
}

function parseArp(p: Packet): Packet {
  const b = p.buf;
  const o = p.l3Off;
  if (p.length < o + 28) return fail(p, "arp: packet shorter than 28 bytes");
  if (readU16(b, o) !== 1 || readU16(b, o + 2) !== ETH_IP4 || b[o + 4] !== 6 || b[o + 5] !== 4) {
    return fail(p, "arp: only Ethernet/IPv4 ARP is supported");
  }
  p.arpOp = readU16(b, o + 6);
  p.arpSha = readMac(b, o + 8);
  p.arpSpa = readU32(b, o + 14);
  p.arpTha = readMac(b, o + 18);
  p.arpTpa = readU32(b, o + 24);
  if (p.arpOp !== ARP_REQUEST && p.arpOp !== ARP_REPLY) return fail(p, `arp: unknown operation ${p.arpOp}`);
  return p;
}

function parseIp4(p: Packet): Packet {
  const b = p.buf;
  const o = p.l3Off;
  if (p.length < o + 20) return fail(p, "ipv4: packet shorter than the 20-byte header");
  const vihl = b[o]!;
  if (vihl >>> 4 !== 4) return fail(p, `ipv4: version field is ${vihl >>> 4}`);
  const ihl = (vihl & 0x0f) * 4;
  if (ihl < 20) return fail(p, `ipv4: header length ${ihl} is below 20`);
  const total = readU16(b, o + 2);
  if (total < ihl) return fail(p, `ipv4: total length ${total} is below the header length ${ihl}`);
  if (o + total > p.length) return fail(p, `ipv4: total length ${total} exceeds the frame`);
  p.ipVersion = 4;
  p.ipHeaderLen = ihl;
  p.ipOptionsLen = ihl - 20;
  p.ipEnd = o + total;
  p.nwTos = b[o + 1]!;
  p.ipId = readU16(b, o + 4);
  const ff = readU16(b, o + 6);
  p.dontFragment = (ff & 0x4000) !== 0;
  p.moreFragments = (ff & 0x2000) !== 0;
  p.fragOffset = ff & 0x1fff;
  p.nwTtl = b[o + 8]!;
  p.nwProto = b[o + 9]!;
  p.nwSrc = readU32(b, o + 12);
  p.nwDst = readU32(b, o + 16);
  if (p.ipOptionsLen > 0) {
    const err = checkIp4Options(b, o + 20, p.ipOptionsLen);
    if (err) return fail(p, err);
  }
  p.nwFrag = p.fragOffset > 0 ? FRAG_LATER : p.moreFragments ? FRAG_FIRST : FRAG_NONE;
  p.l4Off = o + ihl;
  if (p.nwFrag === FRAG_LATER) {
    p.payloadOff = p.l4Off;
    return p;
  }
  return parseL4(p, p.nwProto);
}

/** Walks IPv4 options so a truncated or looping option list is rejected rather than trusted. */
function checkIp4Options(b: Uint8Array, off: number, len: number): string | null {
  let i = off;
  const end = off + len;
  while (i < end) {
    const kind = b[i]!;
    if (kind === 0) return null; // end of options
    if (kind === 1) {
      i++;
      continue;
    }
    if (i + 1 >= end) return `ipv4: option ${kind} is truncated`;
    const olen = b[i + 1]!;
    if (olen < 2 || i + olen > end) return `ipv4: option ${kind} has bad length ${olen}`;
    i += olen;
  }
  return null;
}

function parseIp6(p: Packet): Packet {
  const b = p.buf;
  const o = p.l3Off;
  if (p.length < o + 40) return fail(p, "ipv6: packet shorter than the 40-byte header");
  if (b[o]! >>> 4 !== 6) return fail(p, `ipv6: version field is ${b[o]! >>> 4}`);
  const payloadLen = readU16(b, o + 4);
  if (o + 40 + payloadLen > p.length) return fail(p, `ipv6: payload length ${payloadLen} exceeds the frame`);
  p.ipVersion = 6;
  p.ipHeaderLen = 40;
  p.ipEnd = o + 40 + payloadLen;
  p.nwTos = ((b[o]! & 0x0f) << 4) | (b[o + 1]! >>> 4);
  p.nwTtl = b[o + 7]!;
  for (let i = 0; i < 4; i++) {
    p.nwSrc6[i] = readU32(b, o + 8 + 4 * i);
    p.nwDst6[i] = readU32(b, o + 24 + 4 * i);
  }
  // Skip extension headers (hop-by-hop, routing, destination options, fragment), bounded.
  let next = b[o + 6]!;
  let off = o + 40;
  for (let n = 0; ; n++) {
    if (n > MAX_IP6_EXT_HEADERS) return fail(p, "ipv6: too many extension headers");
    if (next === 0 || next === 43 || next === 60) {
      if (off + 8 > p.ipEnd) return fail(p, `ipv6: extension header ${next} is truncated`);
      const hlen = (b[off + 1]! + 1) * 8;
      if (off + hlen > p.ipEnd) return fail(p, `ipv6: extension header ${next} is truncated`);
      next = b[off]!;
      off += hlen;
    } else if (next === 44) {
      if (off + 8 > p.ipEnd) return fail(p, "ipv6: fragment header is truncated");
      const fo = readU16(b, off + 2);
      p.fragOffset = fo >>> 3;
      p.moreFragments = (fo & 1) === 1;
      p.ipId = readU32(b, off + 4);
      p.nwFrag = p.fragOffset > 0 ? FRAG_LATER : p.moreFragments ? FRAG_FIRST : FRAG_NONE;
      next = b[off]!;
      off += 8;
    } else break;
  }
  p.nwProto = next;
  p.l4Off = off;
  if (p.nwFrag === FRAG_LATER) {
    p.payloadOff = off;
    return p;
  }
  return parseL4(p, next);
}

function parseL4(p: Packet, proto: number): Packet {
  const b = p.buf;
  const o = p.l4Off;
  const avail = p.ipEnd - o;
  switch (proto) {
    case PROTO_TCP: {
      if (avail < 20) return fail(p, "tcp: segment shorter than the 20-byte header");
      const doff = (b[o + 12]! >>> 4) * 4;
      if (doff < 20 || doff > avail) return fail(p, `tcp: data offset ${doff} is out of range`);
      p.tpSrc = readU16(b, o);
      p.tpDst = readU16(b, o + 2);
      p.tcpSeq = readU32(b, o + 4);
      p.tcpAck = readU32(b, o + 8);
      p.tcpFlags = ((b[o + 12]! & 0x01) << 8) | b[o + 13]!;
      p.payloadOff = o + doff;
      return p;
    }
    case PROTO_UDP: {
      if (avail < 8) return fail(p, "udp: datagram shorter than the 8-byte header");
      const ulen = readU16(b, o + 4);
      // A first fragment's UDP length covers the whole datagram, most of it in later fragments.
      if (ulen < 8 || (ulen > avail && p.nwFrag !== FRAG_FIRST))
        return fail(p, `udp: length field ${ulen} is out of range`);
      p.tpSrc = readU16(b, o);
      p.tpDst = readU16(b, o + 2);
      p.payloadOff = o + 8;
      return p;
    }
    case PROTO_ICMP:
    case PROTO_ICMP6: {
      if ((proto === PROTO_ICMP) !== (p.ipVersion === 4)) {
        return fail(p, `ip: protocol ${proto} is not valid for IPv${p.ipVersion}`);
      }
      if (avail < 8) return fail(p, "icmp: message shorter than 8 bytes");
      p.icmpType = b[o]!;
      p.icmpCode = b[o + 1]!;
      p.icmpId = readU16(b, o + 4);
      p.icmpSeq = readU16(b, o + 6);
      // Flow matches carry ICMP type/code in the transport-port fields (as OVS does).
      p.tpSrc = p.icmpType;
      p.tpDst = p.icmpCode;
      p.payloadOff = o + 8;
      if (proto === PROTO_ICMP6 && (p.icmpType === ICMP6_NS || p.icmpType === ICMP6_NA)) return parseNd(p);
      return p;
    }
    default:
      p.payloadOff = o;
      return p;
  }
}

function parseNd(p: Packet): Packet {
  const b = p.buf;
  const o = p.l4Off;
  if (p.ipEnd - o < 24) return fail(p, "icmpv6: neighbor discovery message shorter than 24 bytes");
  for (let i = 0; i < 4; i++) p.ndTarget[i] = readU32(b, o + 8 + 4 * i);
  let off = o + 24;
  for (let n = 0; off < p.ipEnd && n < 16; n++) {
    if (off + 2 > p.ipEnd) return fail(p, "icmpv6: truncated ND option");
    const type = b[off]!;
    const olen = b[off + 1]! * 8;
    if (olen === 0 || off + olen > p.ipEnd) return fail(p, `icmpv6: ND option ${type} has bad length`);
    // Source (1) or target (2) link-layer address.
    if ((type === 1 || type === 2) && olen >= 8) p.ndLinkAddr = readMac(b, off + 2);
    off += olen;
  }
  return p;
}
