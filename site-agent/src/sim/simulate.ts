// Entry point of the packet simulation: from a frame and where it arrived (a port of this host or
// a tunnel), walk the virtual topology and return the actions, the masked flow match and the tags
// the result depends on. Pure: time, host identity and mutable tables come in through SimContext.
import { Packet, parsePacket } from "../packets/packet.js";
import { simulateBridge } from "./bridge.js";
import type { Ingress, SimResult } from "./result.js";
import { type TopologyView, tag } from "./topology-view.js";
import { type SimContext, Walk } from "./walk.js";

// Frames passed as bytes are parsed into this one Packet: simulate() is synchronous and the walk
// copies what it keeps (held packets), so nothing refers to it after return.
const scratch = new Packet();

export const TUNNEL_TRACE_BIT = 0x800000;
export const TUNNEL_FLOW_STATE = 0xffffff;
export const MAX_LOCAL_TUNNEL_KEY = 0x0fffff;

/**
 * Simulates one packet. `frame` may be a Packet already parsed by the caller (its buffer must stay
 * unchanged until this returns). Malformed frames yield a non-cacheable drop naming the problem.
 */
export function simulate(
  view: TopologyView,
  frame: Uint8Array | Packet,
  ingress: Ingress,
  ctx: SimContext,
): SimResult {
  const pkt = frame instanceof Packet ? frame : parsePacket(frame, scratch);
  const inPort = "portId" in ingress ? ingress.portId : "";
  const rawKey = "portId" in ingress ? 0 : ingress.tunnelKey;
  const w = Walk.begin(view, ctx, pkt, ingress, inPort, rawKey, 0);
  if (pkt.error) {
    w.drop(`malformed frame: ${pkt.error}`);
    w.result.cacheable = false;
    return w.finish();
  }
  if ("portId" in ingress) {
    const port = view.ports.get(ingress.portId);
    if (!port) {
      w.tagStr(tag.port(ingress.portId));
      w.drop(`ingress port ${ingress.portId} is not in the topology`);
    } else if (!port.exterior) {
      w.tag(port.tag);
      w.drop(`ingress port ${port.id} is an interior port`);
    } else w.enterPort(port);
    return w.finish();
  }
  fromTunnel(w, view, rawKey & ~TUNNEL_TRACE_BIT & 0xffffff, ingress.fromSite, rawKey);
  return w.finish();
}

function fromTunnel(
  w: Walk,
  view: TopologyView,
  key: number,
  fromSite: string | undefined,
  raw: number,
): undefined {
  if (raw === TUNNEL_FLOW_STATE) return w.drop("tunnel key 0xFFFFFF carries flow state, not packets");
  if (key === 0) return w.drop("tunnel key 0 is not assigned");
  if (key <= MAX_LOCAL_TUNNEL_KEY) {
    // Site-local keys name the destination port: the sender already simulated; deliver.
    const port = view.portsByKey.get(key);
    if (!port) return w.drop(`tunnel key ${key} names no port`);
    w.tag(port.tag);
    if (!port.exterior || port.raw.hostId !== w.ctx.hostId) {
      return w.drop(`tunnel key ${key} names port ${port.id}, which is not bound on host ${w.ctx.hostId}`);
    }
    if (w.tracing) w.trace("port", port.id, `tunnel delivery by key ${key}`);
    return w.deliver(port);
  }
  const bridge = view.bridgeByKey(key);
  if (!bridge)
    return w.drop(`tunnel key ${key} names no network here (router transit keys are not supported yet)`);
  w.tag(bridge.tag);
  if (fromSite === undefined) return simulateBridge(w, bridge, null);
  const port = bridge.remoteSitePorts.get(fromSite);
  if (!port) return w.drop(`bridge ${bridge.id} has no remote-site port for site ${fromSite}`);
  w.enterPort(port);
}
