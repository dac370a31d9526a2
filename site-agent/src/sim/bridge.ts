// The virtual bridge: MAC learning per VLAN, unicast forwarding from static and learned MACs,
// flooding to exterior ports, ARP and ND proxying from what the topology knows, and dropping
// frames whose destination is behind the port they came from.
import { topologypb } from "@isthmus/schema";
import { formatIp4, formatIp6, isMulticastMac } from "../packets/addr.js";
import { ARP_REQUEST, ETH_ARP, ETH_IP6, ICMP6_NS, PROTO_ICMP6 } from "../packets/packet.js";
import { CHAIN_ACCEPT, filterAt } from "./chain-eval.js";
import { emitGenerated } from "./generate.js";
import { LEARN_MOVED, LEARN_NEW } from "./mac-table.js";
import { arpReply, ndAdvert } from "./replies.js";
import type { BridgeView, PortView } from "./topology-view.js";
import type { Walk } from "./walk.js";

const PT = topologypb.PortType;

/**
 * `inPort` is null for frames a gateway receives from a host of its own site with a network's
 * global key: those go only to remote-site ports (the sending host served the local ones).
 */
export function simulateBridge(w: Walk, b: BridgeView, inPort: PortView | null): undefined {
  w.tag(b.tag);
  if (w.tracing) w.trace("device", b.id, `bridge ${b.raw.name || b.id}`);
  if (!b.raw.adminStateUp) return w.drop(`bridge ${b.id} is administratively down`);
  const m = w.m;
  const vlan = inPort?.raw.vlan ? inPort.raw.vlan : m.vlan;
  const inId = inPort?.id ?? "";
  const inbound = b.raw.inboundFilterId;
  if (inbound && filterAt(w, inbound, inId, "", b.id, inPort) !== CHAIN_ACCEPT) return;

  const src = m.ethSrc;
  if (inPort && !isMulticastMac(src)) learn(w, b, vlan, src, inPort);

  // ARP / ND proxy: answer from topology knowledge instead of flooding.
  if (inPort && m.etherType === ETH_ARP && m.arpOp === ARP_REQUEST) {
    const tpa = m.arpTpa;
    w.tag(b.arpTags.get(tpa));
    const owner = b.arp.get(tpa);
    // Not to the owner itself (an ARP probe or announcement for its own address, RFC 5227): a
    // reply would tell it that someone else holds the address.
    if (owner !== undefined && owner !== m.arpSha) {
      if (w.tracing) w.trace("arp", b.id, `proxy reply for ${formatIp4(tpa)}`);
      emitGenerated(w, arpReply(owner, tpa, m.arpSha, m.arpSpa), inPort, "arp-proxy");
      return;
    }
  }
  if (inPort && m.etherType === ETH_IP6 && m.nwProto === PROTO_ICMP6 && m.tpSrc === ICMP6_NS) {
    const owner = b.nd.get(formatIp6(w.pkt.ndTarget));
    // Not to the owner's own duplicate address detection (RFC 4862 5.4), for the same reason.
    if (owner !== undefined && owner !== m.ethSrc) {
      if (w.tracing) w.trace("arp", b.id, "ND proxy advertisement");
      emitGenerated(w, ndAdvert(w.pkt, owner), inPort, "nd-proxy");
      return;
    }
  }

  const dst = m.ethDst;
  if (!isMulticastMac(dst)) {
    w.tag(b.macTags.get(dst));
    const out = b.staticMacs.get(vlan)?.get(dst) ?? learned(w, b, vlan, dst);
    if (out) {
      if (inPort && out.id === inPort.id) return w.drop(`destination ${dst} is behind the ingress port`);
      if (!inPort && out.type !== PT.PORT_TYPE_REMOTE_SITE) {
        // From a local host to the gateway: the sender reaches local ports itself.
        return w.drop("frame from a local host for a local port reached the gateway");
      }
      const outbound = b.raw.outboundFilterId;
      if (outbound && filterAt(w, outbound, inId, "", b.id, inPort) !== CHAIN_ACCEPT) return;
      if (w.tracing) w.trace("decision", b.id, `forward to ${out.id}`);
      return w.exitPort(out, inPort);
    }
  }
  flood(w, b, inPort, vlan);
}

function learned(w: Walk, b: BridgeView, vlan: number, mac: number): PortView | undefined {
  const e = w.state.macs.lookup(b.id, vlan, mac, w.ctx.now);
  return e ? w.view.ports.get(e.portId) : undefined;
}

function learn(w: Walk, b: BridgeView, vlan: number, mac: number, port: PortView): undefined {
  // Static knowledge (MacEntry, VM and router port MACs) overrides learning.
  if (b.staticMacs.get(vlan)?.has(mac)) return;
  const r = w.state.macs.learn(b.id, vlan, mac, port.id, w.ctx.now);
  if (r === LEARN_NEW || r === LEARN_MOVED) {
    w.add("learned", { bridgeId: b.id, vlan, mac, portId: port.id });
    // Flows that flooded to (or unicast to the old port of) this MAC are stale now.
    w.add("invalidate", b.macTags.get(mac).s);
    if (w.tracing)
      w.trace("decision", b.id, `learned ${mac} on ${port.id}${r === LEARN_MOVED ? " (moved)" : ""}`);
  }
}

function flood(w: Walk, b: BridgeView, inPort: PortView | null, vlan: number): undefined {
  w.tag(b.floodTag);
  if (w.tracing) w.trace("decision", b.id, "flood");
  const outbound = b.raw.outboundFilterId;
  if (outbound && filterAt(w, outbound, inPort?.id ?? "", "", b.id, inPort) !== CHAIN_ACCEPT) return;
  const fromRemote = inPort?.type === PT.PORT_TYPE_REMOTE_SITE;
  const snapshot = w.m.clone();
  const ports = b.exteriorPorts;
  for (let i = 0; i < ports.length; i++) {
    const p = ports[i]!;
    if (inPort && p.id === inPort.id) continue;
    const remote = p.type === PT.PORT_TYPE_REMOTE_SITE;
    // Split horizon between sites; a gateway relaying a local host's flood only goes remote.
    if ((fromRemote || !inPort) && remote === fromRemote) continue;
    if (!inPort && !remote) continue;
    if (p.raw.vlan !== 0 && p.raw.vlan !== vlan) continue;
    w.exitPort(p, inPort);
    // Each port's outbound filter sees the frame as the bridge floods it.
    const seen = w.m.seen;
    const dstBits = w.m.dstBits;
    w.m.copyFrom(snapshot);
    w.m.seen |= seen;
    if (dstBits > w.m.dstBits) w.m.dstBits = dstBits;
  }
}
