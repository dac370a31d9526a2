// Frames the simulation generates: ARP and ND replies for proxied addresses, ARP requests for
// router next hops, ICMP echo replies and errors (time exceeded, unreachable), TCP resets for
// rejected connections. Built with the packet encoder, so lengths and checksums are right.
import { isMulticastMac, MAC_BROADCAST } from "../packets/addr.js";
import { encodePacket, TCP_ACK, TCP_RST, type TcpSpec } from "../packets/encode.js";
import {
  ARP_REPLY,
  ARP_REQUEST,
  FRAG_LATER,
  ICMP6_NA,
  type Packet,
  PROTO_ICMP,
  PROTO_ICMP6,
  PROTO_TCP,
} from "../packets/packet.js";
import { ndBody } from "../packets/packet-dsl.js";

export const ICMP_ECHO_REPLY = 0;
export const ICMP_UNREACH = 3;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const UNREACH_NET = 0;
export const UNREACH_HOST = 1;
export const UNREACH_ADMIN = 13;
export const ICMP6_UNREACH = 1;
export const ICMP6_UNREACH_ADMIN = 1;

/**
 * Whether `p` may be answered with an ICMP error or a TCP reset (RFC 1122 3.2.2, RFC 4443 2.4(e),
 * RFC 793): not an ICMP error itself, a TCP reset, a fragment other than the first, nor a packet
 * to a broadcast or multicast address or from one that names no single host.
 */
export function mayAnswerWithError(p: Packet): boolean {
  if (p.nwFrag === FRAG_LATER || isMulticastMac(p.ethDst)) return false;
  if (p.nwProto === PROTO_TCP && (p.tcpFlags & TCP_RST) !== 0) return false;
  if (p.ipVersion === 4) {
    const bad = (a: number) => a >>> 28 === 0xe || a === 0xffffffff;
    if (p.nwSrc === 0 || bad(p.nwSrc) || bad(p.nwDst)) return false;
    return !(p.nwProto === PROTO_ICMP && p.icmpType !== ICMP_ECHO_REQUEST && p.icmpType !== ICMP_ECHO_REPLY);
  }
  if (p.ipVersion === 6) {
    const s = p.nwSrc6;
    if ((s[0]! | s[1]! | s[2]! | s[3]!) === 0 || s[0]! >>> 24 === 0xff || p.nwDst6[0]! >>> 24 === 0xff)
      return false;
    return !(p.nwProto === PROTO_ICMP6 && p.icmpType < 128);
  }
  return false;
}

export function arpReply(ownerMac: number, ownerIp: number, toMac: number, toIp: number): Uint8Array {
  return encodePacket({
    eth: { src: ownerMac, dst: toMac },
    arp: { op: ARP_REPLY, sha: ownerMac, spa: ownerIp, tha: toMac, tpa: toIp },
  });
}

export function arpRequest(fromMac: number, fromIp: number, targetIp: number): Uint8Array {
  return encodePacket({
    eth: { src: fromMac, dst: MAC_BROADCAST },
    arp: { op: ARP_REQUEST, sha: fromMac, spa: fromIp, tha: 0, tpa: targetIp },
  });
}

/**
 * Neighbor advertisement answering `ns` (a parsed solicitation) on behalf of `ownerMac`; to the
 * solicitor, or to all nodes without the solicited flag when it has no address yet (duplicate
 * address detection, RFC 4861 7.2.4).
 */
export function ndAdvert(ns: Packet, ownerMac: number): Uint8Array {
  const s = ns.nwSrc6;
  const dad = (s[0]! | s[1]! | s[2]! | s[3]!) === 0;
  return encodePacket({
    eth: { src: ownerMac, dst: dad ? ALL_NODES_MAC : ns.ethSrc },
    ip6: { src: ns.ndTarget.slice(), dst: dad ? ALL_NODES.slice() : ns.nwSrc6.slice(), hopLimit: 255 },
    // Override, and solicited unless answering duplicate address detection.
    icmp: { type: ICMP6_NA, code: 0, rest: dad ? 0x20000000 : 0x60000000 },
    payload: ndBody(ns.ndTarget, 2, ownerMac),
  });
}

const ALL_NODES = Uint32Array.of(0xff020000, 0, 0, 1);
const ALL_NODES_MAC = 0x333300000001;

/** The original IP header plus the first 8 payload bytes, as ICMP errors quote them. */
function quote(p: Packet): Uint8Array {
  const end = Math.min(p.ipEnd, p.l3Off + p.ipHeaderLen + 8);
  return p.buf.slice(p.l3Off, end);
}

export function icmpError(
  p: Packet,
  type: number,
  code: number,
  fromMac: number,
  toMac: number,
  fromIp: number,
  toIp: number,
): Uint8Array {
  return encodePacket({
    eth: { src: fromMac, dst: toMac },
    ip4: { src: fromIp, dst: toIp, ttl: 64 },
    icmp: { type, code, rest: 0 },
    payload: quote(p),
  });
}

/** ICMPv6 error quoting the invoking packet, as much as fits the minimum MTU (RFC 4443 2.4(c)). */
export function icmp6Error(
  p: Packet,
  type: number,
  code: number,
  fromMac: number,
  toMac: number,
): Uint8Array {
  const end = Math.min(p.ipEnd, p.l3Off + 1280 - 48);
  return encodePacket({
    eth: { src: fromMac, dst: toMac },
    ip6: { src: p.nwDst6.slice(), dst: p.nwSrc6.slice(), hopLimit: 64 },
    icmp: { type, code, rest: 0 },
    payload: p.buf.slice(p.l3Off, end),
  });
}

export function icmpEchoReply(
  p: Packet,
  fromMac: number,
  toMac: number,
  fromIp: number,
  toIp: number,
): Uint8Array {
  return encodePacket({
    eth: { src: fromMac, dst: toMac },
    ip4: { src: fromIp, dst: toIp, ttl: 64 },
    icmp: { type: ICMP_ECHO_REPLY, code: 0, rest: ((p.icmpId << 16) | p.icmpSeq) >>> 0 },
    payload: p.buf.slice(p.payloadOff, p.ipEnd),
  });
}

/** RFC 793 reset for a segment that reached a closed (here: rejected) port. */
export function tcpReset(
  p: Packet,
  fromMac: number,
  toMac: number,
  fromIp: number,
  toIp: number,
  fromPort: number,
  toPort: number,
): Uint8Array {
  return encodePacket({
    eth: { src: fromMac, dst: toMac },
    ip4: { src: fromIp, dst: toIp, ttl: 64 },
    tcp: resetOf(p, fromPort, toPort),
  });
}

/** tcpReset for an IPv6 segment (addresses and ports swapped from `p`'s). */
export function tcpReset6(p: Packet, fromMac: number, toMac: number): Uint8Array {
  return encodePacket({
    eth: { src: fromMac, dst: toMac },
    ip6: { src: p.nwDst6.slice(), dst: p.nwSrc6.slice(), hopLimit: 64 },
    tcp: resetOf(p, p.tpDst, p.tpSrc),
  });
}

function resetOf(p: Packet, fromPort: number, toPort: number): TcpSpec {
  if ((p.tcpFlags & TCP_ACK) !== 0)
    return { src: fromPort, dst: toPort, seq: p.tcpAck, ack: 0, flags: TCP_RST, window: 0 };
  let segLen = p.ipEnd - p.payloadOff;
  if (p.tcpFlags & 0x02) segLen++; // SYN
  if (p.tcpFlags & 0x01) segLen++; // FIN
  return {
    src: fromPort,
    dst: toPort,
    seq: 0,
    ack: (p.tcpSeq + segLen) >>> 0,
    flags: TCP_RST | TCP_ACK,
    window: 0,
  };
}
