// VXLAN (RFC 7348): the 8-byte header inside UDP that carries a 24-bit VNI (our tunnel key), and
// building a complete outer Ethernet/IPv4/UDP/VXLAN frame around an inner frame.
import { readU32 } from "./addr.js";
import { encodePacket } from "./encode.js";
import { type Packet, PROTO_UDP } from "./packet.js";

export const VXLAN_PORT = 4789;
export const VXLAN_HEADER = 8;
const FLAG_VNI_VALID = 0x08;

export interface VxlanHeader {
  vni: number;
  /** Offset of the inner Ethernet frame in the buffer. */
  innerOff: number;
}

/** Reads the VXLAN header at `off` (end = end of UDP payload); a reason string when malformed. */
export function parseVxlan(b: Uint8Array, off: number, end: number): VxlanHeader | string {
  if (end - off < VXLAN_HEADER) return "vxlan: header shorter than 8 bytes";
  if ((b[off]! & FLAG_VNI_VALID) === 0) return "vxlan: I flag (VNI valid) is not set";
  if (end - off - VXLAN_HEADER < 14) return "vxlan: inner frame shorter than an Ethernet header";
  return { vni: readU32(b, off + 4) >>> 8, innerOff: off + VXLAN_HEADER };
}

/** Parses the VXLAN header of an already parsed outer packet (UDP to the VXLAN port). */
export function vxlanOf(outer: Packet): VxlanHeader | string {
  if (outer.error) return outer.error;
  if (outer.nwProto !== PROTO_UDP || outer.payloadOff < 0) return "vxlan: outer packet is not UDP";
  return parseVxlan(outer.buf, outer.payloadOff, outer.ipEnd);
}

export interface VxlanEndpoints {
  srcMac: number;
  dstMac: number;
  srcIp: number;
  dstIp: number;
  /** Outer UDP source port; callers derive it from a flow hash for ECMP entropy. */
  srcPort: number;
  dstPort?: number;
  ttl?: number;
}

/** Wraps `inner` (a whole Ethernet frame) in outer Ethernet/IPv4/UDP/VXLAN headers. */
export function encapVxlan(inner: Uint8Array, vni: number, ep: VxlanEndpoints): Uint8Array {
  if (vni < 0 || vni > 0xffffff) throw new RangeError(`vxlan: VNI ${vni} is outside 0..0xFFFFFF`);
  const payload = new Uint8Array(VXLAN_HEADER + inner.length);
  payload[0] = FLAG_VNI_VALID;
  payload[4] = (vni >>> 16) & 0xff;
  payload[5] = (vni >>> 8) & 0xff;
  payload[6] = vni & 0xff;
  payload.set(inner, VXLAN_HEADER);
  return encodePacket({
    eth: { src: ep.srcMac, dst: ep.dstMac },
    ip4: { src: ep.srcIp, dst: ep.dstIp, ttl: ep.ttl ?? 64, df: true },
    udp: { src: ep.srcPort, dst: ep.dstPort ?? VXLAN_PORT },
    payload,
  });
}
