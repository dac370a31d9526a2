// Which userspace flows the kernel programs can carry, and their BPF map entry. A userspace flow is
// a megaflow (key AND mask); the kernel map is exact-match, so the agent writes one entry per
// distinct packet key it sees, derived from the 80-byte userspace key. That is exact as long as
// every field the simulation read exists in the kernel key and the actions are ones the programs
// apply; otherwise the flow stays on the userspace path and says why.
import type { FlowActions } from "../flow-actions.js";
import { ETH_TYPE_ARP, ETH_TYPE_IPV4, type FlowField, KEY } from "../flow-key.js";
import { FLOW_KEY_SIZE, FLOW_VALUE_SIZE } from "./flow-map-codec.js";

export interface KernelFlowContext {
  /** ifindex of a bound VM port (host side of its veth), by datapath port number. */
  ifindexOfPort(portNo: number): number | undefined;
  /** Whether a bound port is a veth with its peer in another namespace (FLOW_F_PEER applies). */
  peerOfPort?(portNo: number): boolean;
  vxlanIfindex: number;
  /** The VXLAN device's UDP port: the only destination port the kernel can send to. */
  tunnelPort: number;
}

export type KernelFlowEntry = { key: Buffer; value: Buffer } | { userspace: string };

/** flow_value.flags: redirect to the veth's peer (bpf_redirect_peer), see flow.bpf.c. */
export const FLOW_F_PEER = 32;
/** tunnel_ports value bit: the port is such a veth (TUNNEL_PORT_PEER in flow.bpf.c). */
export const TUNNEL_PORT_PEER = 0x80000000;

const FIELDS_NEVER_IN_KERNEL = new Set(["tcpFlags", "ipTos", "arpSha", "arpTha", "pad"]);
/** Every key field, walked per install without building the mask's field list. */
const ALL_FIELDS = Object.keys(KEY) as FlowField[];
const L3_FIELDS = new Set(["ipSrc", "ipDst", "ipProto", "ipFrag", "tpSrc", "tpDst", "icmpId", "ipTtl"]);

/**
 * A dotted quad as a host-order u32, or -1 when it is not one (four decimal octets 0-255, as
 * `split(".").map(Number)` accepted, without the arrays: this runs for every tunnel flow).
 */
function ipv4HostOrder(ip: string): number {
  let v = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return -1;
      v = v * 256 + octet;
      octet = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      octet = octet * 10 + (c - 48);
      digits++;
      if (octet > 255) return -1;
    } else return -1;
  }
  if (dots !== 3 || digits === 0) return -1;
  return v * 256 + octet;
}

/** The kernel key of the packet whose userspace key is `key`, or why it has none. */
export function kernelKeyOf(key: Buffer, ctx: KernelFlowContext): Buffer | string {
  const inPort = key.readUInt32BE(KEY.inPort);
  const ifindex = inPort === 0 ? ctx.vxlanIfindex : ctx.ifindexOfPort(inPort);
  if (ifindex === undefined) return "ingress port not attached";
  if (key.readUInt16BE(KEY.vlan) !== 0) return "VLAN-tagged";
  // From the shared pool, zeroed: one fresh ArrayBuffer per entry was a large part of an install.
  const k = Buffer.allocUnsafe(FLOW_KEY_SIZE).fill(0);
  k.writeUInt32LE(ifindex, 0);
  k.writeUInt32LE(inPort === 0 ? key.readUInt32BE(KEY.tunnelKey) : 0, 4);
  copyBytes(key, KEY.ethDst, k, 8, 12);
  copyBytes(key, KEY.ethType, k, 20, 2);
  const ethType = key.readUInt16BE(KEY.ethType);
  if (ethType === ETH_TYPE_IPV4 || ethType === ETH_TYPE_ARP) {
    k[22] = key[KEY.ipProto]!;
    k[23] = key[KEY.ipFrag]!;
    copyBytes(key, KEY.ipSrc, k, 24, 4);
    copyBytes(key, KEY.ipDst, k, 28, 4);
    copyBytes(key, KEY.tpSrc, k, 32, 4);
    copyBytes(key, KEY.icmpId, k, 36, 2);
  }
  return k;
}

/** Byte by byte: Buffer.copy of part of a buffer makes a view object per call, and these are a few bytes. */
function copyBytes(from: Buffer, at: number, to: Buffer, toAt: number, n: number): void {
  for (let i = 0; i < n; i++) to[toAt + i] = from[at + i]!;
}

/**
 * The map entry for the packet with userspace key `key` under a flow (mask, actions), or the reason
 * the flow must stay on the userspace path.
 */
export function kernelFlowFor(
  key: Buffer,
  mask: Buffer,
  actions: FlowActions,
  ctx: KernelFlowContext,
): KernelFlowEntry {
  const ethType = key.readUInt16BE(KEY.ethType);
  const ipv4 = ethType === ETH_TYPE_IPV4;
  for (const f of ALL_FIELDS) {
    if (mask[KEY[f]] === 0) continue; // as fieldsOfMask: a field is kept when its first byte is
    if (FIELDS_NEVER_IN_KERNEL.has(f)) return { userspace: `matches ${f}` };
    // The router reads the TTL only to see whether it expires; the programs send those packets up.
    if (f === "ipTtl" && !(ipv4 && (actions.decTtl ?? 0) > 0)) return { userspace: "matches ipTtl" };
    if (L3_FIELDS.has(f) && !ipv4 && ethType !== ETH_TYPE_ARP)
      return { userspace: `matches ${f} (not IPv4)` };
  }
  const natting =
    actions.setIpSrc !== undefined ||
    actions.setIpDst !== undefined ||
    actions.setTpSrc !== undefined ||
    actions.setTpDst !== undefined;
  // Later fragments carry no L4 header: the program would rewrite payload bytes as ports.
  if (natting && (!ipv4 || key[KEY.ipFrag] === 2))
    return { userspace: "NAT rewrite of a non-IPv4 packet or a later fragment" };
  if ((actions.decTtl ?? 0) > 0 && !ipv4) return { userspace: "TTL decrement (not IPv4)" };
  if (actions.outputs.length > 1) return { userspace: "several outputs" };
  // The programs rewrite ports, not ICMP's identifier: a SNATed ping stays on the userspace path.
  if (actions.setIcmpId !== undefined) return { userspace: "ICMP echo identifier rewrite" };
  const k = kernelKeyOf(key, ctx);
  if (typeof k === "string") return { userspace: k };
  const v = Buffer.allocUnsafe(FLOW_VALUE_SIZE).fill(0);
  const out = actions.outputs[0];
  let peer = false;
  if (out === undefined) {
    v.writeUInt32LE(0, 0); // drop
  } else if (out.kind === "port") {
    const ifindex = ctx.ifindexOfPort(out.portNo);
    if (ifindex === undefined) return { userspace: "egress port not attached" };
    v.writeUInt32LE(1, 0);
    v.writeUInt32LE(ifindex, 4);
    peer = ctx.peerOfPort?.(out.portNo) === true;
  } else {
    if (out.remotePort !== ctx.tunnelPort) return { userspace: `tunnel to UDP port ${out.remotePort}` };
    const remote = ipv4HostOrder(out.remoteIp);
    if (remote < 0) return { userspace: "tunnel remote is not IPv4" };
    v.writeUInt32LE(2, 0);
    v.writeUInt32LE(ctx.vxlanIfindex, 4);
    v.writeUInt32LE(out.key & 0xffffff, 12);
    v.writeUInt32LE(remote, 16);
  }
  if (actions.setEthDst || actions.setEthSrc) {
    v.writeUInt32LE(1, 8);
    if (actions.setEthDst) copyBytes(actions.setEthDst, 0, v, 20, 6);
    else copyBytes(key, KEY.ethDst, v, 20, 6);
    if (actions.setEthSrc) copyBytes(actions.setEthSrc, 0, v, 26, 6);
    else copyBytes(key, KEY.ethSrc, v, 26, 6);
  }
  v[32] = actions.decTtl ?? 0;
  if (natting) {
    let flags = v.readUInt32LE(8);
    if (actions.setIpSrc) {
      actions.setIpSrc.copy(v, 64);
      flags |= 2;
    }
    if (actions.setIpDst) {
      actions.setIpDst.copy(v, 68);
      flags |= 4;
    }
    if (actions.setTpSrc !== undefined) {
      v.writeUInt16BE(actions.setTpSrc, 72);
      flags |= 8;
    }
    if (actions.setTpDst !== undefined) {
      v.writeUInt16BE(actions.setTpDst, 74);
      flags |= 16;
    }
    v.writeUInt32LE(flags, 8);
  }
  if (peer) v.writeUInt32LE(v.readUInt32LE(8) | FLOW_F_PEER, 8);
  return { key: k, value: v };
}
