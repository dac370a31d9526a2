// Packet encoder: a PacketSpec (plain description of each layer) to wire bytes with lengths and
// checksums computed, and the inverse `describePacket` from a parsed Packet. Used for every packet
// the simulation generates (ARP and ND replies, ICMP errors and echo replies, TCP resets) and by
// the test DSL. Not on the per-packet fast path: it allocates one buffer per call.
import { writeMac, writeU16, writeU32 } from "./addr.js";
import { finishChecksum, onesSum, pseudoSum4, pseudoSum6 } from "./checksum.js";
import {
  ETH_ARP,
  ETH_IP4,
  ETH_IP6,
  ETH_VLAN,
  FRAG_LATER,
  type Packet,
  PROTO_ICMP,
  PROTO_ICMP6,
  PROTO_TCP,
  PROTO_UDP,
} from "./packet.js";

export interface EthSpec {
  src: number;
  dst: number;
  /** VLAN id; when set (even 0) an 802.1Q tag is written. */
  vlan?: number;
  pcp?: number;
  /** Needed only for payload-only frames (no arp/ip4/ip6 layer). */
  etherType?: number;
}
export interface ArpSpec {
  op: number;
  sha: number;
  spa: number;
  tha: number;
  tpa: number;
}
export interface Ip4Spec {
  src: number;
  dst: number;
  /** Needed only when no L4 layer is given. */
  proto?: number;
  ttl?: number;
  tos?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  /** In 8-byte units. */
  fragOffset?: number;
  /** Raw option bytes, a multiple of 4 long. */
  options?: Uint8Array;
}
export interface Ip6Spec {
  src: Uint32Array;
  dst: Uint32Array;
  nextHeader?: number;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
}
export interface TcpSpec {
  src: number;
  dst: number;
  seq?: number;
  ack?: number;
  flags?: number;
  window?: number;
  /** Raw option bytes, a multiple of 4 long. */
  options?: Uint8Array;
}
export interface UdpSpec {
  src: number;
  dst: number;
}
/** ICMP or ICMPv6 (chosen by the IP version): bytes 4–7 are `rest` (echo: id << 16 | seq). */
export interface IcmpSpec {
  type: number;
  code: number;
  rest?: number;
}
export interface PacketSpec {
  eth: EthSpec;
  arp?: ArpSpec;
  ip4?: Ip4Spec;
  ip6?: Ip6Spec;
  tcp?: TcpSpec;
  udp?: UdpSpec;
  icmp?: IcmpSpec;
  payload?: Uint8Array;
}

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

function l4Length(s: PacketSpec): number {
  const pl = s.payload?.length ?? 0;
  if (s.tcp) return 20 + (s.tcp.options?.length ?? 0) + pl;
  if (s.udp) return 8 + pl;
  if (s.icmp) return 8 + pl;
  return pl;
}

function protoOf(s: PacketSpec, given: number | undefined): number {
  if (s.tcp) return PROTO_TCP;
  if (s.udp) return PROTO_UDP;
  if (s.icmp) return s.ip6 ? PROTO_ICMP6 : PROTO_ICMP;
  return given ?? 0;
}

/** Encodes `spec` into a new frame; lengths and checksums are always computed. */
export function encodePacket(spec: PacketSpec): Uint8Array {
  const l2 = 14 + (spec.eth.vlan !== undefined ? 4 : 0);
  let l3len = 0;
  if (spec.arp) l3len = 28;
  else if (spec.ip4) l3len = 20 + (spec.ip4.options?.length ?? 0) + l4Length(spec);
  else if (spec.ip6) l3len = 40 + l4Length(spec);
  else l3len = spec.payload?.length ?? 0;
  const b = new Uint8Array(l2 + l3len);
  writeMac(b, 0, spec.eth.dst);
  writeMac(b, 6, spec.eth.src);
  let off = 12;
  if (spec.eth.vlan !== undefined) {
    writeU16(b, 12, ETH_VLAN);
    writeU16(b, 14, ((spec.eth.pcp ?? 0) << 13) | (spec.eth.vlan & 0xfff));
    off = 16;
  }
  const etherType = spec.arp ? ETH_ARP : spec.ip4 ? ETH_IP4 : spec.ip6 ? ETH_IP6 : (spec.eth.etherType ?? 0);
  writeU16(b, off, etherType);
  const o = off + 2;
  if (spec.arp) {
    const a = spec.arp;
    writeU16(b, o, 1);
    writeU16(b, o + 2, ETH_IP4);
    b[o + 4] = 6;
    b[o + 5] = 4;
    writeU16(b, o + 6, a.op);
    writeMac(b, o + 8, a.sha);
    writeU32(b, o + 14, a.spa);
    writeMac(b, o + 18, a.tha);
    writeU32(b, o + 24, a.tpa);
    return b;
  }
  if (spec.ip4) {
    const ip = spec.ip4;
    const optLen = ip.options?.length ?? 0;
    const ihl = 20 + optLen;
    const proto = protoOf(spec, ip.proto);
    b[o] = 0x40 | (ihl / 4);
    b[o + 1] = ip.tos ?? 0;
    writeU16(b, o + 2, l3len);
    writeU16(b, o + 4, ip.id ?? 0);
    writeU16(b, o + 6, (ip.df ? 0x4000 : 0) | (ip.mf ? 0x2000 : 0) | ((ip.fragOffset ?? 0) & 0x1fff));
    b[o + 8] = ip.ttl ?? 64;
    b[o + 9] = proto;
    writeU32(b, o + 12, ip.src);
    writeU32(b, o + 16, ip.dst);
    if (ip.options) b.set(ip.options, o + 20);
    writeU16(b, o + 10, finishChecksum(onesSum(b, o, ihl)));
    const later = (ip.fragOffset ?? 0) > 0;
    writeL4(b, o + ihl, spec, later ? -1 : pseudoSum4(ip.src, ip.dst, proto, l3len - ihl), false);
    return b;
  }
  if (spec.ip6) {
    const ip = spec.ip6;
    const proto = protoOf(spec, ip.nextHeader);
    const tc = ip.trafficClass ?? 0;
    writeU32(b, o, ((6 << 28) | (tc << 20) | ((ip.flowLabel ?? 0) & 0xfffff)) >>> 0);
    writeU16(b, o + 4, l3len - 40);
    b[o + 6] = proto;
    b[o + 7] = ip.hopLimit ?? 64;
    for (let i = 0; i < 4; i++) {
      writeU32(b, o + 8 + 4 * i, ip.src[i]!);
      writeU32(b, o + 24 + 4 * i, ip.dst[i]!);
    }
    writeL4(b, o + 40, spec, pseudoSum6(b, o + 8, o + 24, proto, l3len - 40), true);
    return b;
  }
  if (spec.payload) b.set(spec.payload, o);
  return b;
}

/** Writes the L4 header and payload at `o`; `pseudo` < 0 means no L4 header (later fragment). */
function writeL4(b: Uint8Array, o: number, spec: PacketSpec, pseudo: number, v6: boolean): void {
  const pl = spec.payload;
  if (pseudo < 0) {
    if (pl) b.set(pl, o);
    return;
  }
  if (spec.tcp) {
    const t = spec.tcp;
    const hl = 20 + (t.options?.length ?? 0);
    writeU16(b, o, t.src);
    writeU16(b, o + 2, t.dst);
    writeU32(b, o + 4, t.seq ?? 0);
    writeU32(b, o + 8, t.ack ?? 0);
    const flags = t.flags ?? 0;
    b[o + 12] = ((hl / 4) << 4) | ((flags >>> 8) & 1);
    b[o + 13] = flags & 0xff;
    writeU16(b, o + 14, t.window ?? 65535);
    if (t.options) b.set(t.options, o + 20);
    if (pl) b.set(pl, o + hl);
    writeU16(b, o + 16, finishChecksum(onesSum(b, o, hl + (pl?.length ?? 0), pseudo)));
  } else if (spec.udp) {
    const len = 8 + (pl?.length ?? 0);
    writeU16(b, o, spec.udp.src);
    writeU16(b, o + 2, spec.udp.dst);
    writeU16(b, o + 4, len);
    if (pl) b.set(pl, o + 8);
    const c = finishChecksum(onesSum(b, o, len, pseudo));
    // A computed UDP checksum of 0 is sent as 0xffff (0 means "none" over IPv4).
    writeU16(b, o + 6, c === 0 ? 0xffff : c);
  } else if (spec.icmp) {
    const len = 8 + (pl?.length ?? 0);
    b[o] = spec.icmp.type;
    b[o + 1] = spec.icmp.code;
    writeU32(b, o + 4, (spec.icmp.rest ?? 0) >>> 0);
    if (pl) b.set(pl, o + 8);
    writeU16(b, o + 2, finishChecksum(onesSum(b, o, len, v6 ? pseudo : 0)));
  } else if (pl) b.set(pl, o);
}

/** The spec that re-encodes a parsed packet (IPv6 extension headers are not kept). */
export function describePacket(p: Packet): PacketSpec {
  if (p.error) throw new Error(`describePacket: packet did not parse: ${p.error}`);
  const b = p.buf;
  const spec: PacketSpec = { eth: { src: p.ethSrc, dst: p.ethDst } };
  if (p.hasVlan) {
    spec.eth.vlan = p.vlan;
    spec.eth.pcp = p.vlanPcp;
  }
  if (p.etherType === ETH_ARP) {
    spec.arp = { op: p.arpOp, sha: p.arpSha, spa: p.arpSpa, tha: p.arpTha, tpa: p.arpTpa };
    return spec;
  }
  if (p.ipVersion === 4) {
    const o = p.l3Off;
    spec.ip4 = {
      src: p.nwSrc,
      dst: p.nwDst,
      proto: p.nwProto,
      ttl: p.nwTtl,
      tos: p.nwTos,
      id: p.ipId,
      df: p.dontFragment,
      mf: p.moreFragments,
      fragOffset: p.fragOffset,
    };
    if (p.ipOptionsLen > 0) spec.ip4.options = b.slice(o + 20, o + p.ipHeaderLen);
  } else if (p.ipVersion === 6) {
    const o = p.l3Off;
    spec.ip6 = {
      src: p.nwSrc6.slice(),
      dst: p.nwDst6.slice(),
      nextHeader: p.nwProto,
      hopLimit: p.nwTtl,
      trafficClass: p.nwTos,
      flowLabel: ((b[o + 1]! & 0x0f) << 16) | (b[o + 2]! << 8) | b[o + 3]!,
    };
  } else {
    spec.eth.etherType = p.etherType;
    spec.payload = b.slice(p.l3Off, p.length);
    return spec;
  }
  const o = p.l4Off;
  if (p.nwFrag !== FRAG_LATER) {
    if (p.nwProto === PROTO_TCP) {
      spec.tcp = {
        src: p.tpSrc,
        dst: p.tpDst,
        seq: p.tcpSeq,
        ack: p.tcpAck,
        flags: p.tcpFlags,
        window: (b[o + 14]! << 8) | b[o + 15]!,
      };
      if (p.payloadOff - o > 20) spec.tcp.options = b.slice(o + 20, p.payloadOff);
    } else if (p.nwProto === PROTO_UDP) spec.udp = { src: p.tpSrc, dst: p.tpDst };
    else if (p.nwProto === PROTO_ICMP || p.nwProto === PROTO_ICMP6) {
      spec.icmp = { type: p.icmpType, code: p.icmpCode, rest: ((p.icmpId << 16) | p.icmpSeq) >>> 0 };
    }
  }
  spec.payload = b.slice(p.payloadOff, p.ipEnd);
  return spec;
}
