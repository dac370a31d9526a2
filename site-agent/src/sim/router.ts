// The virtual router: destination MAC check, ARP for its own addresses, inbound and outbound
// chains, longest-prefix-match with source filtering and ECMP, TTL handling with ICMP errors,
// ICMP echo to its addresses, and next-hop MAC resolution (topology, ARP cache, or wait).
import { topologypb } from "@isthmus/schema";
import { MAC_BROADCAST } from "../packets/addr.js";
import { ARP_REPLY, ARP_REQUEST, ETH_ARP, PROTO_ICMP } from "../packets/packet.js";
import { CHAIN_ACCEPT, filterAt, tupleOf } from "./chain-eval.js";
import { flowHash } from "./flow-hash.js";
import { F } from "./flow-match.js";
import { emitGenerated } from "./generate.js";
import type { LpmInfo } from "./lpm.js";
import {
  arpReply,
  arpRequest,
  ICMP_ECHO_REQUEST,
  ICMP_TIME_EXCEEDED,
  ICMP_UNREACH,
  icmpEchoReply,
  icmpError,
  mayAnswerWithError,
  UNREACH_ADMIN,
  UNREACH_NET,
} from "./replies.js";
import { type PortView, type RouterView, type RouteView, tag } from "./topology-view.js";
import type { Walk } from "./walk.js";

const RT = topologypb.RouteType;
const routeScratch: RouteView[] = [];
const lpmInfo: LpmInfo = { usedSrc: false, dstBits: 0 };

export function simulateRouter(w: Walk, r: RouterView, inPort: PortView): undefined {
  w.tag(r.tag);
  if (w.tracing) w.trace("device", r.id, `router ${r.raw.name || r.id}`);
  if (!r.raw.adminStateUp) return w.drop(`router ${r.id} is administratively down`);
  const m = w.m;
  if (m.etherType === ETH_ARP) return routerArp(w, r, inPort);
  const dstMac = m.ethDst;
  if (dstMac !== inPort.mac) {
    return w.drop(
      dstMac === MAC_BROADCAST
        ? "non-ARP broadcast at a router port"
        : `destination MAC is not router port ${inPort.id}'s`,
    );
  }
  if (m.ipVersion !== 4)
    return w.drop(m.ipVersion === 6 ? "IPv6 routing is not supported yet" : "not an IP packet");

  const inbound = r.raw.inboundFilterId;
  if (inbound && filterAt(w, inbound, inPort.id, "", r.id, inPort) !== CHAIN_ACCEPT) return;

  // The destination is read by prefix: the bits that tell it apart from the router's own
  // addresses and the bits the route lookup examines (more only if something later reads it).
  const dst = m._nwDst;
  if (r.portIps.has(dst)) {
    m.nwDstPrefix(32);
    return toRouter(w, r, inPort);
  }
  const own = r.portIpList;
  for (let i = 0; i < own.length; i++) m.nwDstPrefix(Math.min(32, Math.clz32((dst ^ own[i]!) >>> 0) + 1));
  if (m.nwTtl <= 1) {
    if (w.tracing) w.trace("decision", r.id, "TTL expired");
    icmpToSender(w, inPort, ICMP_TIME_EXCEEDED, 0);
    return w.drop("TTL expired in transit");
  }

  lpmInfo.usedSrc = false;
  const routes = routeScratch;
  const nRoutes = r.trie.lookup(dst, w.m._nwSrc, routes, lpmInfo);
  m.nwDstPrefix(lpmInfo.dstBits);
  if (lpmInfo.usedSrc) void m.nwSrc; // source prefixes were consulted: the source address matters
  if (nRoutes === 0) {
    w.tag(r.noRouteTag);
    if (w.tracing) w.trace("route", r.id, "no route");
    icmpToSender(w, inPort, ICMP_UNREACH, UNREACH_NET);
    return w.drop(`no route to ${fmt(dst)} on router ${r.id}`);
  }
  let route = routes[0]!;
  if (nRoutes > 1) {
    // ECMP: the flow hash picks among equal-weight routes (and depends on the 5-tuple).
    route = routes[flowHash(tupleOf(w), w.ctx.hashSeed ?? 0) % nRoutes]!;
  }
  for (let i = 0; i < nRoutes; i++) w.tag(routes[i]!.tag);
  if (w.tracing)
    w.trace(
      "route",
      route.id,
      `${route.raw.dstPrefix} via ${route.nextHopPort || "-"}${route.gateway >= 0 ? ` gw ${fmt(route.gateway)}` : ""}`,
    );

  switch (route.type) {
    case RT.ROUTE_TYPE_BLACKHOLE:
      return w.drop(`blackhole route ${route.id}`);
    case RT.ROUTE_TYPE_REJECT:
      icmpToSender(w, inPort, ICMP_UNREACH, UNREACH_ADMIN);
      return w.drop(`reject route ${route.id}`);
    case RT.ROUTE_TYPE_LOCAL:
      return toRouter(w, r, inPort);
    default:
      break;
  }
  const out = w.view.ports.get(route.nextHopPort);
  if (!out || out.deviceId !== r.id) {
    w.tagStr(tag.port(route.nextHopPort));
    return w.drop(`route ${route.id}: next-hop port ${route.nextHopPort} is not a port of router ${r.id}`);
  }
  w.ttlDec++;
  m._nwTtl = m._nwTtl - 1;

  const outbound = r.raw.outboundFilterId;
  if (outbound && filterAt(w, outbound, inPort.id, out.id, r.id, inPort) !== CHAIN_ACCEPT) return;
  // The outbound filter may have rewritten the destination (DNAT); route.gateway does not change.
  const nextHop = route.gateway >= 0 ? route.gateway : m.nwDst;
  const mac = resolve(w, r, out, nextHop);
  if (mac < 0) return;
  m._ethSrc = out.mac;
  m._ethDst = mac;
  m.written |= F.ETH_SRC | F.ETH_DST;
  w.exitPort(out, inPort);
}

function fmt(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}

/** Next-hop MAC: from the peer bridge's topology knowledge, the ARP cache, or by asking. */
function resolve(w: Walk, r: RouterView, out: PortView, ip: number): number {
  const peer = w.view.ports.get(out.raw.peerId);
  if (peer) {
    const b = w.view.bridges.get(peer.deviceId);
    if (b) {
      w.tag(b.arpTags.get(ip));
      const mac = b.arp.get(ip);
      if (mac !== undefined) return mac;
    }
  }
  w.tag(r.arpTags.get(ip));
  const cached = w.state.arp.lookup(r.id, ip, w.ctx.now);
  if (cached >= 0) return cached;
  // Unknown: hold a copy of the packet until the reply arrives (bounded), and ask.
  const frame = w.pkt.buf.slice(0, w.pkt.length);
  const { queued, sendRequest } = w.state.arp.wait(r.id, ip, { frame, ingress: w.ingress }, w.ctx.now);
  w.held = queued ? `waiting for ARP reply for ${fmt(ip)} on router ${r.id}` : null;
  if (!queued) w.drop(`ARP wait queue for ${fmt(ip)} on router ${r.id} is full`);
  w.result.cacheable = false;
  if (w.tracing) w.trace("arp", r.id, `${fmt(ip)} unresolved${queued ? ", packet queued" : ", queue full"}`);
  const own = out.ips4[0];
  if (sendRequest && own) emitGenerated(w, arpRequest(out.mac, own.ip, ip), out, "arp-request");
  return -1;
}

function routerArp(w: Walk, r: RouterView, inPort: PortView): undefined {
  const m = w.m;
  w.result.cacheable = false;
  const op = m.arpOp;
  const tpa = m.arpTpa;
  const own = inPort.ips4.find((a) => a.ip === tpa);
  if (op === ARP_REQUEST) {
    if (!own) return w.drop("ARP request for an address this router port does not own");
    if (w.tracing) w.trace("arp", r.id, "reply for own address");
    emitGenerated(w, arpReply(inPort.mac, tpa, m.arpSha, m.arpSpa), inPort, "arp-reply");
    return w.drop("ARP request answered by router");
  }
  if (op === ARP_REPLY) {
    const ip = m.arpSpa;
    // Learned when the router asked for (or already knows) the sender; otherwise only when the
    // reply is addressed to this port and comes from its subnet. Anything else on the segment
    // could fill the cache or claim the uplink's gateway.
    if (!w.state.arp.expects(r.id, ip)) {
      if (!own)
        return w.drop(`unsolicited ARP reply from ${fmt(ip)} to ${fmt(tpa)} on router port ${inPort.id}`);
      if (!inPort.ips4.some((a) => (ip & a.cidr.mask) >>> 0 === a.cidr.addr))
        return w.drop(`ARP reply from ${fmt(ip)}, outside the subnets of router port ${inPort.id}`);
    }
    const released = w.state.arp.learn(r.id, ip, m.arpSha, w.ctx.now);
    w.add("invalidate", r.arpTags.get(ip).s);
    if (released.length > 0) w.list("resubmit").push(...released);
    if (w.tracing) w.trace("arp", r.id, `learned ${fmt(ip)}; released ${released.length} packets`);
    return w.drop("ARP reply consumed by router");
  }
  w.drop(`ARP operation ${op} not handled`);
}

/** Packets addressed to the router itself: ICMP echo is answered, the rest dropped. */
function toRouter(w: Walk, r: RouterView, inPort: PortView): undefined {
  const m = w.m;
  if (m.nwProto === PROTO_ICMP && m.tpSrc === ICMP_ECHO_REQUEST) {
    if (w.tracing) w.trace("decision", r.id, "echo reply");
    const p = w.pkt;
    emitGenerated(w, icmpEchoReply(p, inPort.mac, m._ethSrc, m._nwDst, m._nwSrc), inPort, "echo-reply");
    return w.drop("ICMP echo answered by router");
  }
  w.drop(`packet to router ${r.id} address: no local service`);
}

function icmpToSender(w: Walk, inPort: PortView, type: number, code: number): undefined {
  const m = w.m;
  const own = inPort.ips4[0];
  w.result.cacheable = false;
  // Never about an ICMP error, a later fragment, a broadcast or multicast (RFC 1122 3.2.2).
  if (!own || !mayAnswerWithError(w.pkt)) return;
  emitGenerated(
    w,
    icmpError(w.pkt, type, code, inPort.mac, m._ethSrc, own.ip, m._nwSrc),
    inPort,
    type === ICMP_TIME_EXCEEDED ? "time-exceeded" : "unreachable",
  );
}
