// Frames the simulation generates: ARP and ND replies for proxied addresses, ARP requests for
// router next hops, ICMP echo replies and errors (time exceeded, unreachable), TCP resets for
// rejected connections. Built with the packet encoder, so lengths and checksums are right.
import { MAC_BROADCAST } from "../packets/addr.js";
import { encodePacket, TCP_ACK, TCP_RST } from "../packets/encode.js";
import { ARP_REPLY, ARP_REQUEST, ICMP6_NA, type Packet } from "../packets/packet.js";
import { ndBody } from "../packets/packet-dsl.js";

export const ICMP_ECHO_REPLY = 0;
export const ICMP_UNREACH = 3;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const UNREACH_NET = 0;
export const UNREACH_HOST = 1;
export const UNREACH_ADMIN = 13;

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

/** Neighbor advertisement answering `ns` (a parsed solicitation) on behalf of `ownerMac`. */
export function ndAdvert(ns: Packet, ownerMac: number): Uint8Array {
  return encodePacket({
    eth: { src: ownerMac, dst: ns.ethSrc },
    ip6: { src: ns.ndTarget.slice(), dst: ns.nwSrc6.slice(), hopLimit: 255 },
    // Solicited + override flags.
    icmp: { type: ICMP6_NA, code: 0, rest: 0x60000000 },
    payload: ndBody(ns.ndTarget, 2, ownerMac),
  });
}

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
  const acked = (p.tcpFlags & TCP_ACK) !== 0;
  let segLen = p.ipEnd - p.payloadOff;
  if (p.tcpFlags & 0x02) segLen++; // SYN
  if (p.tcpFlags & 0x01) segLen++; // FIN
  return encodePacket({
    eth: { src: fromMac, dst: toMac },
    ip4: { src: fromIp, dst: toIp, ttl: 64 },
    tcp: acked
      ? { src: fromPort, dst: toPort, seq: p.tcpAck, ack: 0, flags: TCP_RST, window: 0 }
      : {
          src: fromPort,
          dst: toPort,
          seq: 0,
          ack: (p.tcpSeq + segLen) >>> 0,
          flags: TCP_RST | TCP_ACK,
          window: 0,
        },
  });
}
