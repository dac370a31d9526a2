// What a flow does to a matching packet, as a compact struct: optional header rewrites applied
// once, then up to MAX_OUTPUTS outputs (local ports or VXLAN tunnels). The kernel fast path
// (issue 8) stores the same struct in a BPF map value, which is why outputs are bounded and rewrites
// are fixed fields rather than a free-form list.
import { updateChecksum16 } from "../packets/checksum.js";
import { ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_VLAN } from "./flow-key.js";

/** Outputs per flow (a flood on a bridge with more ports is not cached; see the simulator adapter). */
export const MAX_OUTPUTS = 16;

export type FlowOutput =
  | { kind: "port"; portNo: number }
  | { kind: "tunnel"; key: number; remoteIp: string; remotePort: number };

export interface FlowActions {
  setEthSrc?: Buffer;
  setEthDst?: Buffer;
  /** Routers crossed: TTL / hop limit is decremented by this much (0 or absent = untouched). */
  decTtl?: number;
  /** IPv4 NAT rewrites (network byte order as 4-byte buffers, ports as numbers). */
  setIpSrc?: Buffer;
  setIpDst?: Buffer;
  setTpSrc?: number;
  setTpDst?: number;
  /** IPv4 ICMP echo identifier (SNAT of a ping and its reply). */
  setIcmpId?: number;
  outputs: FlowOutput[];
  /** Why the packet is dropped when there are no outputs (counted per reason). */
  dropReason?: string;
}

function checkBytes(name: string, v: Buffer | undefined, n: number): void {
  if (v !== undefined && v.length !== n) throw new Error(`flow actions: ${name} must be ${n} bytes`);
}

export function validateActions(a: FlowActions): void {
  if (a.decTtl !== undefined && (!Number.isInteger(a.decTtl) || a.decTtl < 0 || a.decTtl > 255)) {
    throw new Error(`flow actions: decTtl ${a.decTtl} must be an integer in 0..255`);
  }
  if (a.outputs.length > MAX_OUTPUTS) {
    throw new Error(`flow actions: ${a.outputs.length} outputs exceed MAX_OUTPUTS=${MAX_OUTPUTS}`);
  }
  // Unrolled: this runs on every flow install, and a table of tuples would be built each time.
  checkBytes("setEthSrc", a.setEthSrc, 6);
  checkBytes("setEthDst", a.setEthDst, 6);
  checkBytes("setIpSrc", a.setIpSrc, 4);
  checkBytes("setIpDst", a.setIpDst, 4);
}

/** RFC 1624 incremental checksum update for one 16-bit word changing from `from` to `to`. */
function csumReplace16(frame: Buffer, csumOff: number, from: number, to: number, udp = false): void {
  const old = frame.readUInt16BE(csumOff);
  if (udp && old === 0) return; // UDP over IPv4 without a checksum stays without one
  let sum = updateChecksum16(old, from, to);
  if (udp && sum === 0) sum = 0xffff;
  frame.writeUInt16BE(sum, csumOff);
}

function csumReplace32(frame: Buffer, csumOff: number, from: Buffer, to: Buffer, udp: boolean): void {
  csumReplace16(frame, csumOff, from.readUInt16BE(0), to.readUInt16BE(0), udp);
  csumReplace16(frame, csumOff, from.readUInt16BE(2), to.readUInt16BE(2), udp);
}

/**
 * Applies the rewrites to `frame` in place (the datapath owns each received buffer). Returns false
 * when the packet must be dropped instead (TTL would reach zero: the simulation handles that case
 * with an ICMP error, so a cached flow seeing it means the flow's TTL assumption broke).
 */
export function applyRewrites(frame: Buffer, a: FlowActions): boolean {
  if (a.setEthDst) a.setEthDst.copy(frame, 0);
  if (a.setEthSrc) a.setEthSrc.copy(frame, 6);
  if (
    !a.decTtl &&
    !a.setIpSrc &&
    !a.setIpDst &&
    a.setTpSrc === undefined &&
    a.setTpDst === undefined &&
    a.setIcmpId === undefined
  ) {
    return true;
  }
  let l3 = 14;
  let ethType = frame.readUInt16BE(12);
  if (ethType === ETH_TYPE_VLAN) {
    ethType = frame.readUInt16BE(16);
    l3 = 18;
  }
  if (ethType === ETH_TYPE_IPV6) {
    if (a.decTtl) {
      if (frame.length < l3 + 40 || frame[l3 + 7]! <= a.decTtl) return false;
      frame[l3 + 7] = frame[l3 + 7]! - a.decTtl;
    }
    return true;
  }
  if (ethType !== ETH_TYPE_IPV4 || frame.length < l3 + 20) return !a.decTtl;
  const ihl = (frame[l3]! & 0x0f) * 4;
  const proto = frame[l3 + 9]!;
  const l4 = l3 + ihl;
  const firstFragment = (frame.readUInt16BE(l3 + 6) & 0x1fff) === 0;
  const l4Csum =
    firstFragment && proto === 6 && frame.length >= l4 + 18
      ? l4 + 16
      : firstFragment && proto === 17 && frame.length >= l4 + 8
        ? l4 + 6
        : -1;
  const udp = proto === 17;
  if (a.decTtl) {
    const ttl = frame[l3 + 8]!;
    if (ttl <= a.decTtl) return false;
    const before = frame.readUInt16BE(l3 + 8);
    frame[l3 + 8] = ttl - a.decTtl;
    csumReplace16(frame, l3 + 10, before, frame.readUInt16BE(l3 + 8));
  }
  for (const [v, off] of [
    [a.setIpSrc, l3 + 12],
    [a.setIpDst, l3 + 16],
  ] as const) {
    if (!v) continue;
    const before = Buffer.from(frame.subarray(off, off + 4));
    v.copy(frame, off);
    csumReplace32(frame, l3 + 10, before, v, false);
    if (l4Csum >= 0) csumReplace32(frame, l4Csum, before, v, udp);
  }
  for (const [v, off] of [
    [a.setTpSrc, l4],
    [a.setTpDst, l4 + 2],
  ] as const) {
    if (v === undefined || l4Csum < 0) continue;
    const before = frame.readUInt16BE(off);
    frame.writeUInt16BE(v, off);
    csumReplace16(frame, l4Csum, before, v, udp);
  }
  // ICMP's checksum covers its own header only (no pseudo-header): the addresses leave it alone.
  if (a.setIcmpId !== undefined && proto === 1 && firstFragment && frame.length >= l4 + 8) {
    const before = frame.readUInt16BE(l4 + 4);
    frame.writeUInt16BE(a.setIcmpId, l4 + 4);
    csumReplace16(frame, l4 + 2, before, a.setIcmpId);
  }
  return true;
}

/** Text form of actions for flow dumps. */
export function describeActions(a: FlowActions): string {
  const parts: string[] = [];
  const mac = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
  if (a.setEthSrc) parts.push(`set(eth_src=${mac(a.setEthSrc)})`);
  if (a.setEthDst) parts.push(`set(eth_dst=${mac(a.setEthDst)})`);
  if (a.decTtl) parts.push(a.decTtl === 1 ? "dec_ttl" : `dec_ttl(${a.decTtl})`);
  if (a.setIpSrc) parts.push(`set(ip_src=${[...a.setIpSrc].join(".")})`);
  if (a.setIpDst) parts.push(`set(ip_dst=${[...a.setIpDst].join(".")})`);
  if (a.setTpSrc !== undefined) parts.push(`set(tp_src=${a.setTpSrc})`);
  if (a.setTpDst !== undefined) parts.push(`set(tp_dst=${a.setTpDst})`);
  if (a.setIcmpId !== undefined) parts.push(`set(icmp_id=${a.setIcmpId})`);
  for (const o of a.outputs) {
    parts.push(
      o.kind === "port"
        ? `output(${o.portNo})`
        : `tunnel(key=0x${o.key.toString(16)},${o.remoteIp}:${o.remotePort})`,
    );
  }
  if (a.outputs.length === 0) parts.push(`drop(${a.dropReason ?? "no output"})`);
  return parts.join(",");
}
