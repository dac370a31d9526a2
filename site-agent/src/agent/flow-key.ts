// The flow key: a fixed-layout byte struct of the header fields a flow can match on, extracted
// from a frame once per packet. The same layout keys the userspace flow table and (issue 8) the
// kernel fast path's BPF hash maps, so a flow computed here can be written to a map unchanged.

/** Byte offsets of each field inside a flow key. Multi-byte fields are network byte order. */
export const KEY = {
  inPort: 0, // u32: datapath port number the frame entered on (0 = from a tunnel)
  tunnelKey: 4, // u32: VNI the frame arrived with (0 = from a local port)
  ethDst: 8, // 6 bytes
  ethSrc: 14, // 6 bytes
  vlan: 20, // u16: VLAN id, 0 = untagged
  ethType: 22, // u16
  ipSrc: 24, // 16 bytes: IPv6, or IPv4 in the first 4 bytes (ARP: sender IP)
  ipDst: 40, // 16 bytes (ARP: target IP)
  ipProto: 56, // u8 (ARP: opcode low byte)
  ipTtl: 57, // u8
  ipFrag: 58, // u8: 0 = not a fragment, 1 = first fragment, 2 = later fragment
  tcpFlags: 59, // u8
  tpSrc: 60, // u16 (ICMP: type)
  tpDst: 62, // u16 (ICMP: code)
  icmpId: 64, // u16: ICMP echo identifier
  ipTos: 66, // u8
  pad: 67, // u8, always zero
  arpSha: 68, // 6 bytes: ARP sender hardware address
  arpTha: 74, // 6 bytes: ARP target hardware address
} as const;
export const KEY_SIZE = 80;

export type FlowField =
  | "inPort"
  | "tunnelKey"
  | "ethDst"
  | "ethSrc"
  | "vlan"
  | "ethType"
  | "ipSrc"
  | "ipDst"
  | "ipProto"
  | "ipTtl"
  | "ipFrag"
  | "tcpFlags"
  | "tpSrc"
  | "tpDst"
  | "icmpId"
  | "ipTos"
  | "pad"
  | "arpSha"
  | "arpTha";

export const FIELD_SIZE: Record<FlowField, number> = {
  inPort: 4,
  tunnelKey: 4,
  ethDst: 6,
  ethSrc: 6,
  vlan: 2,
  ethType: 2,
  ipSrc: 16,
  ipDst: 16,
  ipProto: 1,
  ipTtl: 1,
  ipFrag: 1,
  tcpFlags: 1,
  tpSrc: 2,
  tpDst: 2,
  icmpId: 2,
  ipTos: 1,
  pad: 1,
  arpSha: 6,
  arpTha: 6,
};

export const ETH_TYPE_IPV4 = 0x0800;
export const ETH_TYPE_ARP = 0x0806;
export const ETH_TYPE_IPV6 = 0x86dd;
export const ETH_TYPE_VLAN = 0x8100;

/**
 * Copies frame[start, end) to key[at, ...) byte by byte: the fields are 4–16 bytes, and
 * Buffer#copy of part of a buffer makes a Uint8Array view per call (three per IPv4 packet).
 */
function copyField(frame: Buffer, start: number, end: number, key: Buffer, at: number): void {
  for (let i = start; i < end; i++) key[at++] = frame[i]!;
}

/**
 * Fills `key` (KEY_SIZE bytes, reused by the caller) from a frame. Returns false when the frame
 * is too short to be Ethernet; truncated upper layers leave their fields zero (they are then
 * matched as such, and the simulation decides what to do with the packet).
 */
export function extractKey(frame: Buffer, inPort: number, tunnelKey: number, key: Buffer): boolean {
  key.fill(0);
  if (frame.length < 14) return false;
  key.writeUInt32BE(inPort >>> 0, KEY.inPort);
  key.writeUInt32BE(tunnelKey >>> 0, KEY.tunnelKey);
  copyField(frame, 0, 12, key, KEY.ethDst); // dst then src, contiguous in both layouts
  let off = 12;
  let ethType = frame.readUInt16BE(off);
  if (ethType === ETH_TYPE_VLAN && frame.length >= 18) {
    key.writeUInt16BE(frame.readUInt16BE(14) & 0x0fff, KEY.vlan);
    off = 16;
    ethType = frame.readUInt16BE(off);
  }
  key.writeUInt16BE(ethType, KEY.ethType);
  const l3 = off + 2;
  if (ethType === ETH_TYPE_IPV4) {
    if (frame.length < l3 + 20) return true;
    const ihl = (frame[l3]! & 0x0f) * 4;
    copyField(frame, l3 + 12, l3 + 16, key, KEY.ipSrc);
    copyField(frame, l3 + 16, l3 + 20, key, KEY.ipDst);
    const proto = frame[l3 + 9]!;
    key[KEY.ipProto] = proto;
    key[KEY.ipTtl] = frame[l3 + 8]!;
    key[KEY.ipTos] = frame[l3 + 1]!;
    const fragField = frame.readUInt16BE(l3 + 6);
    const fragOffset = fragField & 0x1fff;
    const more = (fragField & 0x2000) !== 0;
    key[KEY.ipFrag] = fragOffset !== 0 ? 2 : more ? 1 : 0;
    if (fragOffset === 0) extractL4(frame, l3 + ihl, proto, key);
  } else if (ethType === ETH_TYPE_IPV6) {
    if (frame.length < l3 + 40) return true;
    copyField(frame, l3 + 8, l3 + 24, key, KEY.ipSrc);
    copyField(frame, l3 + 24, l3 + 40, key, KEY.ipDst);
    const proto = frame[l3 + 6]!;
    key[KEY.ipProto] = proto;
    key[KEY.ipTtl] = frame[l3 + 7]!;
    key[KEY.ipTos] = ((frame.readUInt16BE(l3) >> 4) & 0xff) >>> 0;
    extractL4(frame, l3 + 40, proto, key);
  } else if (ethType === ETH_TYPE_ARP) {
    if (frame.length < l3 + 28) return true;
    key[KEY.ipProto] = frame[l3 + 7]!; // opcode (1 request, 2 reply)
    copyField(frame, l3 + 8, l3 + 14, key, KEY.arpSha);
    copyField(frame, l3 + 14, l3 + 18, key, KEY.ipSrc);
    copyField(frame, l3 + 18, l3 + 24, key, KEY.arpTha);
    copyField(frame, l3 + 24, l3 + 28, key, KEY.ipDst);
  }
  return true;
}

function extractL4(frame: Buffer, l4: number, proto: number, key: Buffer): void {
  if (proto === 6 || proto === 17 || proto === 132) {
    if (frame.length < l4 + 4) return;
    key.writeUInt16BE(frame.readUInt16BE(l4), KEY.tpSrc);
    key.writeUInt16BE(frame.readUInt16BE(l4 + 2), KEY.tpDst);
    if (proto === 6 && frame.length >= l4 + 14) key[KEY.tcpFlags] = frame[l4 + 13]!;
  } else if (proto === 1 || proto === 58) {
    if (frame.length < l4 + 2) return;
    key.writeUInt16BE(frame[l4]!, KEY.tpSrc);
    key.writeUInt16BE(frame[l4 + 1]!, KEY.tpDst);
    if (frame.length >= l4 + 6) key.writeUInt16BE(frame.readUInt16BE(l4 + 4), KEY.icmpId);
  }
}

/**
 * A byte mask over the key: 0xff bytes for fields the flow's decision depended on. With
 * `ipDstBits` below 32, ipDst keeps only that many leading bits (an IPv4 destination the decision
 * read as a route prefix and nothing more); 32 or more keeps the whole field.
 */
export function maskFromFields(fields: Iterable<FlowField>, ipDstBits = 128): Buffer {
  if (!(Number.isInteger(ipDstBits) && ipDstBits > 0))
    throw new RangeError(`maskFromFields: ipDstBits must be a positive integer, got ${ipDstBits}`);
  const mask = Buffer.alloc(KEY_SIZE);
  for (const f of fields) mask.fill(0xff, KEY[f], KEY[f] + FIELD_SIZE[f]);
  if (ipDstBits < 32 && mask[KEY.ipDst] !== 0) {
    const whole = ipDstBits >>> 3;
    const rest = ipDstBits & 7;
    mask.fill(0, KEY.ipDst + whole, KEY.ipDst + FIELD_SIZE.ipDst);
    if (rest > 0) mask[KEY.ipDst + whole] = (0xff << (8 - rest)) & 0xff;
  }
  return mask;
}

export function fieldsOfMask(mask: Buffer): FlowField[] {
  return (Object.keys(KEY) as FlowField[]).filter((f) => mask[KEY[f]] !== 0);
}

/** key AND mask, into `out`. */
export function applyMask(key: Buffer, mask: Buffer, out: Buffer): Buffer {
  for (let i = 0; i < KEY_SIZE; i++) out[i] = key[i]! & mask[i]!;
  return out;
}

function hex(b: Buffer, start: number, len: number, sep: string): string {
  const parts: string[] = [];
  for (let i = start; i < start + len; i++) parts.push(b[i]!.toString(16).padStart(2, "0"));
  return parts.join(sep);
}

function ipText(b: Buffer, off: number, ethType: number): string {
  if (ethType === ETH_TYPE_IPV6) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(off + i).toString(16));
    return groups.join(":");
  }
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** Human-readable `field=value` list of the fields the mask keeps (for `isthmus agent flows`). */
export function describeKey(key: Buffer, mask: Buffer): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  const ethType = key.readUInt16BE(KEY.ethType);
  for (const f of fieldsOfMask(mask)) {
    const o = KEY[f];
    switch (f) {
      case "ethDst":
      case "ethSrc":
      case "arpSha":
      case "arpTha":
        out[f] = hex(key, o, 6, ":");
        break;
      case "ipSrc":
      case "ipDst":
        out[f] = ipText(key, o, ethType);
        break;
      case "inPort":
      case "tunnelKey":
        out[f] = key.readUInt32BE(o);
        break;
      case "vlan":
      case "ethType":
      case "tpSrc":
      case "tpDst":
      case "icmpId":
        out[f] = key.readUInt16BE(o);
        break;
      default:
        out[f] = key[o]!;
    }
  }
  return out;
}
