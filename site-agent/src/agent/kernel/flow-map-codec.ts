// Byte layouts of the kernel fast path's flow map, mirroring struct flow_key / struct flow_value in
// site-agent/bpf/flow.bpf.c exactly (see docs/kernel-datapath.md). Network-order fields are written
// big-endian; everything else little-endian (the host's order on the machines we run on).

export const FLOW_KEY_SIZE = 40;
export const FLOW_VALUE_SIZE = 80;

export interface KernelFlowKey {
  ifindex: number;
  tunId?: number;
  ethDst: string;
  ethSrc: string;
  ethertype: number;
  /** IPv4 protocol; ARP opcode. */
  proto?: number;
  /** 0 not a fragment, 1 first fragment, 2 later fragment. */
  frag?: number;
  ipSrc?: string;
  ipDst?: string;
  sport?: number;
  dport?: number;
  /** ICMP bytes 4-5 (echo identifier). */
  icmpId?: number;
}

export type KernelFlowAction =
  | { kind: "drop" }
  | { kind: "redirect"; outIfindex: number }
  | { kind: "tunnel"; outIfindex: number; vni: number; remote: string };

export interface KernelFlowValue {
  action: KernelFlowAction;
  setMacs?: { dst: string; src: string };
  /** IPv4 TTL decrement (true = 1); packets whose TTL would expire go to the agent. */
  decTtl?: boolean | number;
  /** IPv4 NAT rewrites (checksums updated by the program). */
  nat?: { ipSrc?: string; ipDst?: string; tpSrc?: number; tpDst?: number };
}

export interface KernelFlowStats {
  packets: bigint;
  bytes: bigint;
  /** bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the last hit, 0n when never hit. */
  lastUsedNs: bigint;
}

const ACTION_CODE = { drop: 0, redirect: 1, tunnel: 2 } as const;
const F_SET_MACS = 1;

function writeMac(buf: Buffer, off: number, mac: string): void {
  const parts = mac.split(":");
  if (parts.length !== 6) throw new Error(`bad MAC ${mac}`);
  for (let i = 0; i < 6; i++) {
    const b = Number.parseInt(parts[i]!, 16);
    if (!Number.isInteger(b) || b < 0 || b > 255) throw new Error(`bad MAC ${mac}`);
    buf[off + i] = b;
  }
}

function ipv4Octets(ip: string): number[] {
  const o = ip.split(".").map((p) => Number(p));
  if (o.length !== 4 || o.some((b) => !Number.isInteger(b) || b < 0 || b > 255))
    throw new Error(`bad IPv4 ${ip}`);
  return o;
}

function writeIpv4Be(buf: Buffer, off: number, ip: string | undefined): void {
  if (ip === undefined) return;
  ipv4Octets(ip).forEach((b, i) => {
    buf[off + i] = b;
  });
}

export function encodeFlowKey(k: KernelFlowKey): Buffer {
  const b = Buffer.alloc(FLOW_KEY_SIZE);
  b.writeUInt32LE(k.ifindex, 0);
  b.writeUInt32LE(k.tunId ?? 0, 4);
  writeMac(b, 8, k.ethDst);
  writeMac(b, 14, k.ethSrc);
  b.writeUInt16BE(k.ethertype, 20);
  b.writeUInt8(k.proto ?? 0, 22);
  b.writeUInt8(k.frag ?? 0, 23);
  writeIpv4Be(b, 24, k.ipSrc);
  writeIpv4Be(b, 28, k.ipDst);
  b.writeUInt16BE(k.sport ?? 0, 32);
  b.writeUInt16BE(k.dport ?? 0, 34);
  b.writeUInt16BE(k.icmpId ?? 0, 36);
  return b;
}

export function encodeFlowValue(v: KernelFlowValue): Buffer {
  const b = Buffer.alloc(FLOW_VALUE_SIZE);
  const a = v.action;
  b.writeUInt32LE(ACTION_CODE[a.kind], 0);
  if (a.kind !== "drop") b.writeUInt32LE(a.outIfindex, 4);
  b.writeUInt32LE(v.setMacs ? F_SET_MACS : 0, 8);
  const dec = v.decTtl === true ? 1 : v.decTtl === false || v.decTtl === undefined ? 0 : v.decTtl;
  if (!Number.isInteger(dec) || dec < 0 || dec > 255) throw new Error(`bad TTL decrement ${v.decTtl}`);
  b.writeUInt8(dec, 32);
  if (a.kind === "tunnel") {
    if (!Number.isInteger(a.vni) || a.vni < 0 || a.vni >= 1 << 24) throw new Error(`bad VNI ${a.vni}`);
    b.writeUInt32LE(a.vni, 12);
    // bpf_tunnel_key.remote_ipv4 is in host byte order.
    const o = ipv4Octets(a.remote);
    b.writeUInt32LE(((o[0]! << 24) | (o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0, 16);
  }
  if (v.setMacs) {
    writeMac(b, 20, v.setMacs.dst);
    writeMac(b, 26, v.setMacs.src);
  }
  const n = v.nat;
  if (n) {
    let flags = b.readUInt32LE(8);
    if (n.ipSrc !== undefined) {
      writeIpv4Be(b, 64, n.ipSrc);
      flags |= 2;
    }
    if (n.ipDst !== undefined) {
      writeIpv4Be(b, 68, n.ipDst);
      flags |= 4;
    }
    if (n.tpSrc !== undefined) {
      b.writeUInt16BE(n.tpSrc, 72);
      flags |= 8;
    }
    if (n.tpDst !== undefined) {
      b.writeUInt16BE(n.tpDst, 74);
      flags |= 16;
    }
    b.writeUInt32LE(flags, 8);
  }
  return b;
}

export function decodeFlowStats(b: Buffer): KernelFlowStats {
  if (b.length < FLOW_VALUE_SIZE) throw new Error(`flow value is ${b.length} bytes, want ${FLOW_VALUE_SIZE}`);
  return { packets: b.readBigUInt64LE(40), bytes: b.readBigUInt64LE(48), lastUsedNs: b.readBigUInt64LE(56) };
}
