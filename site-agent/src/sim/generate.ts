// Generated packets (ARP/ND replies, ICMP, TCP resets, ARP requests) are simulated at once from the
// port that emits them, so the datapath receives ready actions and never re-enters the simulator
// for them. They are never installed as flows, and may not generate packets of their own.
import { parsePacket } from "../packets/packet.js";
import type { PortView } from "./topology-view.js";
import { Walk } from "./walk.js";

/** Simulates `frame` leaving its device through `port` and attaches it to `w`'s result. */
export function emitGenerated(w: Walk, frame: Uint8Array, port: PortView, why: string): void {
  w.result.cacheable = false;
  if (w.generatedDepth > 0) return;
  const pkt = parsePacket(frame);
  if (pkt.error) throw new Error(`generated ${why} packet does not parse: ${pkt.error}`);
  const sub = Walk.begin(w.view, w.ctx, pkt, { portId: port.id }, port.id, 0, w.generatedDepth + 1);
  sub.exitPort(port, null, true);
  const r = sub.finish();
  if (w.tracing) w.trace("decision", port.id, `generated ${why}: ${r.actions.map((a) => a.kind).join(",")}`);
  if (r.trace) w.result.trace?.push(...r.trace);
  w.add("generated", { frame, actions: r.actions, why });
  if (r.conntrack.length > 0) w.list("conntrack").push(...r.conntrack);
  if (r.nat.length > 0) w.list("nat").push(...r.nat);
  if (r.learned.length > 0) w.list("learned").push(...r.learned);
  if (r.invalidate.length > 0) w.list("invalidate").push(...r.invalidate);
}
