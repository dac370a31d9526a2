// The two frame formats on the kernel path's upcall device, mirroring struct upcall_hdr and struct
// reinject_trailer in site-agent/bpf/flow.bpf.c: a 40-byte header the programs push in front of a
// frame they hand to the agent (which port or tunnel it came from, and when), and a 20-byte trailer the agent
// appends to a frame it writes back (where the kernel must send it).
import { VNET_HDR_LEN } from "../vnet-offload.js";

export const UPCALL_HDR_LEN = 40;
export const UPCALL_ETHERTYPE = 0x88b5;
export const REINJECT_TRAILER_LEN = 20;
const REINJECT_MAGIC = 0x52545349;
const ACT_REDIRECT = 1;
const ACT_TUNNEL = 2;

/** Why a program handed the frame up (struct upcall_hdr.reason). */
export const UPCALL_REASON = { 1: "miss", 2: "ttl", 3: "vlan", 4: "parse", 5: "traced" } as const;

export interface UpcallMeta {
  /** Ingress port number, 0 when the frame came from the tunnel. */
  portNo: number;
  /** VNI as received (trace bit kept); 0 from a port. */
  tunId: number;
  /** Tunnel sender, dotted quad ("" from a port). */
  remote: string;
  reason: number;
  /** When the program handed the frame up: bpf_ktime_get_ns (CLOCK_MONOTONIC, process.hrtime's clock). */
  missNs: bigint;
}

function ipFromHostOrder(v: number): string {
  return `${(v >>> 24) & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

/** Dotted quad → u32; parsed by hand because it runs for every frame written to a tunnel. */
function hostOrderFromIp(ip: string): number {
  let v = 0;
  let octet = -1;
  let dots = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46 && octet >= 0 && dots < 3) {
      v = v * 256 + octet;
      octet = -1;
      dots++;
    } else if (c >= 48 && c <= 57) {
      octet = octet < 0 ? c - 48 : octet * 10 + (c - 48);
      if (octet > 255) throw new Error(`bad IPv4 ${ip}`);
    } else {
      throw new Error(`bad IPv4 ${ip}`);
    }
  }
  if (dots !== 3 || octet < 0) throw new Error(`bad IPv4 ${ip}`);
  return v * 256 + octet;
}

/**
 * Splits one buffer read from the upcall device (`[virtio_net_hdr][upcall_hdr][frame]`) into the
 * metadata and `[virtio_net_hdr][frame]` (offload offsets moved past the removed header, VLAN tag
 * put back in the frame), ready for finishOffloads. Returns a drop reason when it is not an upcall.
 */
export function parseUpcall(buf: Buffer): { meta: UpcallMeta; vnetFrame: Buffer } | { drop: string } {
  const h = VNET_HDR_LEN;
  if (buf.length < h + UPCALL_HDR_LEN + 14) return { drop: "upcall_truncated" };
  if (buf.readUInt16BE(h + 12) !== UPCALL_ETHERTYPE) return { drop: "upcall_not_tagged" };
  const vlanTci = buf.readUInt16LE(h + 14);
  const meta: UpcallMeta = {
    portNo: buf.readUInt32LE(h + 16),
    tunId: buf.readUInt32LE(h + 20),
    remote: "",
    reason: buf.readUInt16LE(h + 30),
    missNs: buf.readBigUInt64LE(h + 32),
  };
  if (meta.portNo === 0) meta.remote = ipFromHostOrder(buf.readUInt32LE(h + 24));
  const vlanProto = buf.readUInt16BE(h + 28);
  // Move the virtio header to sit right before the frame, with offsets relative to the frame.
  const start = UPCALL_HDR_LEN;
  buf.copy(buf, start, 0, h);
  const flags = buf[start]!;
  const gso = buf[start + 1]!;
  if (flags !== 0 || gso !== 0) {
    const hdrLen = buf.readUInt16LE(start + 2);
    const csumStart = buf.readUInt16LE(start + 6);
    if (hdrLen >= UPCALL_HDR_LEN) buf.writeUInt16LE(hdrLen - UPCALL_HDR_LEN, start + 2);
    if (csumStart < UPCALL_HDR_LEN) return { drop: "upcall_bad_offload" };
    buf.writeUInt16LE(csumStart - UPCALL_HDR_LEN, start + 6);
  }
  let vnetFrame = buf.subarray(start);
  if (vlanProto !== 0) {
    // The program popped the tag to push its header; the simulation sees the frame as sent.
    const tag = Buffer.alloc(4);
    tag.writeUInt16BE(vlanProto, 0);
    tag.writeUInt16BE(vlanTci, 2);
    const at = h + 12;
    vnetFrame = Buffer.concat([vnetFrame.subarray(0, at), tag, vnetFrame.subarray(at)]);
    if (vnetFrame[0] !== 0 || vnetFrame[1] !== 0) {
      vnetFrame.writeUInt16LE(vnetFrame.readUInt16LE(2) + 4, 2);
      vnetFrame.writeUInt16LE(vnetFrame.readUInt16LE(6) + 4, 6);
    }
  }
  return { meta, vnetFrame };
}

export type ReinjectTarget =
  | { kind: "port"; ifindex: number }
  | { kind: "tunnel"; vxlanIfindex: number; vni: number; remote: string };

/** The frame followed by the trailer telling upcall_ingress where to send it. */
export function withReinjectTrailer(frame: Buffer, t: ReinjectTarget): Buffer {
  const out = Buffer.allocUnsafe(frame.length + REINJECT_TRAILER_LEN);
  frame.copy(out, 0);
  const o = frame.length;
  if (t.kind === "port") {
    out.writeUInt32LE(ACT_REDIRECT, o);
    out.writeUInt32LE(t.ifindex, o + 4);
    out.writeUInt32LE(0, o + 8);
    out.writeUInt32LE(0, o + 12);
  } else {
    out.writeUInt32LE(ACT_TUNNEL, o);
    out.writeUInt32LE(t.vxlanIfindex, o + 4);
    out.writeUInt32LE(t.vni >>> 0, o + 8);
    out.writeUInt32LE(hostOrderFromIp(t.remote), o + 12);
  }
  out.writeUInt32LE(REINJECT_MAGIC, o + 16);
  return out;
}
