// Finishing offloaded frames read from an AF_PACKET socket with PACKET_VNET_HDR: a VM-side veth
// hands over TCP super-frames (TSO/GSO) and frames whose L4 checksum is left to "hardware". The
// datapath forwards ordinary frames, so this completes partial checksums and cuts super-frames into
// MSS-sized segments, as a NIC would have.

export const VNET_HDR_LEN = 10;
const F_NEEDS_CSUM = 1;
const GSO_NONE = 0;
const GSO_TCPV4 = 1;
const GSO_UDP = 3;
const GSO_TCPV6 = 4;
const GSO_UDP_L4 = 5;
const GSO_ECN = 0x80;

// Every byte of a TCP stream passes through here once (each MSS segment's checksum), so it reads
// bytes by index rather than through readUInt16BE calls; the sum stays far below 2^53 for 64 KiB.
function sum16(b: Buffer, start: number, end: number, initial: number): number {
  let s = initial;
  let i = start;
  for (; i + 3 < end; i += 4) s += ((b[i]! << 8) | b[i + 1]!) + ((b[i + 2]! << 8) | b[i + 3]!);
  for (; i + 1 < end; i += 2) s += (b[i]! << 8) | b[i + 1]!;
  if (i < end) s += b[i]! << 8;
  return s;
}

function fold(s: number): number {
  // Arithmetic, not bit operators: a sum over 64 KiB can exceed 32 bits.
  while (s > 0xffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
  return s;
}

/** Result of finishing one received buffer: frames to forward, or why it was dropped. */
export type Finished = { frames: Buffer[] } | { drop: string };

/** Splits `[virtio_net_hdr][frame]` into ready-to-forward frames. */
export function finishOffloads(buf: Buffer): Finished {
  if (buf.length < VNET_HDR_LEN + 14) return { drop: "malformed_frame" };
  const flags = buf[0]!;
  const gsoType = buf[1]! & ~GSO_ECN;
  const gsoSize = buf.readUInt16LE(4);
  const csumStart = buf.readUInt16LE(6);
  const csumOffset = buf.readUInt16LE(8);
  const frame = buf.subarray(VNET_HDR_LEN);
  if (gsoType === GSO_NONE) {
    if (flags & F_NEEDS_CSUM) {
      if (csumStart + csumOffset + 2 > frame.length) return { drop: "malformed_offload" };
      // The field holds the pseudo-header sum; the sum over it and the rest completes it.
      const s = ~fold(sum16(frame, csumStart, frame.length, 0)) & 0xffff;
      // UDP (checksum at offset 6) sends a computed zero as 0xffff; zero would mean "none".
      frame.writeUInt16BE(s === 0 && csumOffset === 6 ? 0xffff : s, csumStart + csumOffset);
    }
    return { frames: [frame] };
  }
  if (gsoType === GSO_TCPV4 || gsoType === GSO_TCPV6)
    return segmentTcp(frame, gsoSize, gsoType === GSO_TCPV6);
  if (gsoType === GSO_UDP_L4) return segmentUdp(frame, gsoSize);
  if (gsoType === GSO_UDP) return { drop: "gso_ufo_unsupported" };
  return { drop: "gso_unsupported" };
}

interface L3 {
  l3: number;
  l4: number;
  v6: boolean;
}

function locate(frame: Buffer, v6: boolean): L3 | undefined {
  let l3 = 14;
  if (frame.readUInt16BE(12) === 0x8100) l3 = 18;
  if (v6) {
    if (frame.length < l3 + 40) return undefined;
    return { l3, l4: l3 + 40, v6 };
  }
  if (frame.length < l3 + 20) return undefined;
  return { l3, l4: l3 + (frame[l3]! & 0x0f) * 4, v6 };
}

function pseudoSum(frame: Buffer, h: L3, proto: number, l4Len: number): number {
  if (h.v6) {
    let s = sum16(frame, h.l3 + 8, h.l3 + 40, 0);
    s += (l4Len >>> 16) + (l4Len & 0xffff) + proto;
    return s;
  }
  return sum16(frame, h.l3 + 12, h.l3 + 20, 0) + proto + l4Len;
}

function fixL3(seg: Buffer, h: L3, l4Len: number, idDelta: number): void {
  if (h.v6) {
    seg.writeUInt16BE(l4Len, h.l3 + 4);
    return;
  }
  seg.writeUInt16BE(h.l4 - h.l3 + l4Len, h.l3 + 2);
  seg.writeUInt16BE((seg.readUInt16BE(h.l3 + 4) + idDelta) & 0xffff, h.l3 + 4);
  seg.writeUInt16BE(0, h.l3 + 10);
  seg.writeUInt16BE(~fold(sum16(seg, h.l3, h.l4, 0)) & 0xffff, h.l3 + 10);
}

function segmentTcp(frame: Buffer, mss: number, v6: boolean): Finished {
  const h = locate(frame, v6);
  if (!h || frame.length < h.l4 + 20 || mss === 0) return { drop: "malformed_offload" };
  const tcpLen = (frame[h.l4 + 12]! >> 4) * 4;
  const hdrEnd = h.l4 + tcpLen;
  if (frame.length < hdrEnd) return { drop: "malformed_offload" };
  const payload = frame.length - hdrEnd;
  const count = Math.max(1, Math.ceil(payload / mss));
  const seq0 = frame.readUInt32BE(h.l4 + 4);
  const flags = frame[h.l4 + 13]!;
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const start = hdrEnd + i * mss;
    const len = Math.min(mss, frame.length - start);
    const seg = Buffer.allocUnsafe(hdrEnd + len);
    frame.copy(seg, 0, 0, hdrEnd);
    frame.copy(seg, hdrEnd, start, start + len);
    fixL3(seg, h, tcpLen + len, i);
    seg.writeUInt32BE((seq0 + i * mss) >>> 0, h.l4 + 4);
    let f = flags;
    if (i < count - 1) f &= ~0x09; // FIN and PSH only on the last segment
    if (i > 0) f &= ~0x80; // CWR only on the first
    seg[h.l4 + 13] = f;
    seg.writeUInt16BE(0, h.l4 + 16);
    const s = sum16(seg, h.l4, seg.length, pseudoSum(seg, h, 6, tcpLen + len));
    seg.writeUInt16BE(~fold(s) & 0xffff, h.l4 + 16);
    out.push(seg);
  }
  return { frames: out };
}

function segmentUdp(frame: Buffer, size: number): Finished {
  const v6 = frame.readUInt16BE(frame.readUInt16BE(12) === 0x8100 ? 16 : 12) === 0x86dd;
  const h = locate(frame, v6);
  if (!h || frame.length < h.l4 + 8 || size === 0) return { drop: "malformed_offload" };
  const hdrEnd = h.l4 + 8;
  const out: Buffer[] = [];
  for (let i = 0, start = hdrEnd; start < frame.length; i++, start += size) {
    const len = Math.min(size, frame.length - start);
    const seg = Buffer.allocUnsafe(hdrEnd + len);
    frame.copy(seg, 0, 0, hdrEnd);
    frame.copy(seg, hdrEnd, start, start + len);
    fixL3(seg, h, 8 + len, i);
    seg.writeUInt16BE(8 + len, h.l4 + 4);
    seg.writeUInt16BE(0, h.l4 + 6);
    const s = ~fold(sum16(seg, h.l4, seg.length, pseudoSum(seg, h, 17, 8 + len))) & 0xffff;
    seg.writeUInt16BE(s === 0 ? 0xffff : s, h.l4 + 6);
    out.push(seg);
  }
  return { frames: out };
}
