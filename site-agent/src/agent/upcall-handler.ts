// Turns a datapath miss into a decision: anti-spoofing on the ingress port, simulation, mapping the
// simulated egress ports to local ports or VXLAN tunnels (intra-site key to the port's host, global
// key towards a gateway), pushing new flow state to the hosts that may carry return traffic before
// the packet itself goes out, and the flow to install with its mask and tags.
import { topologypb } from "@isthmus/schema";
import type { Datapath, TunnelEndpoint, Upcall, UpcallDecision } from "./datapath.js";
import { isGlobalTunnelKey } from "./datapath.js";
import type { FlowActions, FlowOutput } from "./flow-actions.js";
import { MAX_OUTPUTS } from "./flow-actions.js";
import { type FlowField, KEY, maskFromFields } from "./flow-key.js";
import { encodeFlowState, type FlowStateEntry, type FlowStateTable } from "./flow-state.js";
import type { Flow } from "./flow-table.js";
import type { GatewayForwarder } from "./gateway-forwarder.js";
import type { SimulationOutcome, Simulator } from "./simulator.js";
import type { TopologyStore } from "./topology-store.js";

const ALL_FIELDS = Object.keys(KEY) as FlowField[];

export interface UpcallHandlerOptions {
  hostId: string;
  role: "host" | "gateway";
  store: TopologyStore;
  simulator: Simulator;
  datapath: Datapath;
  flowState: FlowStateTable;
  /** Local port bindings: datapath port number ↔ topology port id. */
  portIdByNo: Map<number, string>;
  portNoById: Map<string, number>;
  gateway?: GatewayForwarder;
  /** How often an active flow re-sends its flow state (heals a lost message). */
  stateRefreshMs?: number;
  clock: () => number;
}

export function parseMac(mac: string): Buffer | undefined {
  const parts = mac.split(":");
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) return undefined;
  return Buffer.from(parts.map((p) => Number.parseInt(p, 16)));
}

export class UpcallHandler {
  private sequence = 0;
  readonly stats = { simulations: 0, flowStateSent: 0, flowStateRefreshes: 0 };

  constructor(private readonly o: UpcallHandlerOptions) {}

  handle(u: Upcall): UpcallDecision | Promise<UpcallDecision> {
    if (u.portNo === 0) return this.fromTunnel(u);
    const portId = this.o.portIdByNo.get(u.portNo);
    const port = portId === undefined ? undefined : this.o.store.ports.get(portId);
    if (!port || portId === undefined) return drop("unknown_port");
    if (!this.o.store.ready) return drop("topology_not_ready");
    const mac = parseMac(port.mac);
    if (mac && !mac.equals(u.frame.subarray(6, 12))) {
      // Cache the drop so a VM spraying spoofed frames does not keep the simulator busy.
      return {
        actions: { outputs: [], dropReason: "spoofed_mac" },
        install: { mask: maskFromFields(["inPort", "ethSrc"]), tags: [portId], idleTimeoutMs: 10_000 },
      };
    }
    const outcome = this.o.simulator.simulate({
      frame: u.frame,
      key: u.key,
      ingressPortId: portId,
      traced: u.traced,
      now: this.o.clock(),
    });
    return outcome instanceof Promise
      ? outcome.then((r) => this.decide(u, portId, r))
      : this.decide(u, portId, outcome);
  }

  private fromTunnel(u: Upcall): UpcallDecision {
    if (isGlobalTunnelKey(u.tunnelKey) && this.o.gateway) return this.o.gateway.forward(u);
    return drop(this.o.role === "gateway" ? "vxlan_unknown_key" : "global_key_at_host");
  }

  private decide(u: Upcall, ingressPortId: string, r: SimulationOutcome): UpcallDecision {
    this.stats.simulations++;
    const tags = new Set<string>(r.tags);
    tags.add(ingressPortId);
    const outputs: FlowOutput[] = [];
    const stateTargets = new Map<string, TunnelEndpoint>();
    let unreachable: string | undefined;
    for (const egressId of r.egressPortIds) {
      tags.add(egressId);
      const out = this.outputFor(egressId, tags);
      if (typeof out === "string") unreachable = out;
      else {
        outputs.push(out);
        if (out.kind === "tunnel")
          stateTargets.set(`${out.remoteIp}:${out.remotePort}`, { ip: out.remoteIp, port: out.remotePort });
      }
    }
    const actions: FlowActions = { ...r.rewrites, outputs };
    if (outputs.length === 0) actions.dropReason = r.dropReason ?? unreachable ?? "no_egress";
    const generated = r.generated.flatMap((g) => {
      const out = this.outputFor(g.egressPortId, tags);
      return typeof out === "string" ? [] : [{ frame: g.frame, actions: { outputs: [out] } }];
    });
    let onHit: ((f: Flow, now: number) => void) | undefined;
    if (r.flowState.length > 0) {
      const now = this.o.clock();
      for (const e of r.flowState) this.o.flowState.install(e, now);
      // Return traffic may come back through the egress hosts or, across sites, the gateways.
      for (const g of this.o.store.gateways()) {
        if (g.id !== this.o.hostId && g.tunnelIp !== "") {
          stateTargets.set(`${g.tunnelIp}:${g.tunnelPort || 4789}`, {
            ip: g.tunnelIp,
            port: g.tunnelPort || 4789,
          });
        }
      }
      const targets = [...stateTargets.values()];
      this.sendState(r.flowState, targets);
      const refreshMs = this.o.stateRefreshMs ?? 1000;
      let lastSent = now;
      onHit = (_f, t) => {
        if (t - lastSent < refreshMs) return;
        lastSent = t;
        for (const e of r.flowState) this.o.flowState.install(e, t);
        this.stats.flowStateRefreshes++;
        this.sendState(r.flowState, targets);
      };
    }
    const cacheable = r.cacheable && outputs.length <= MAX_OUTPUTS && !u.traced;
    const fields = new Set<FlowField>(r.maskFields ?? ALL_FIELDS);
    fields.add("inPort");
    fields.add("tunnelKey");
    return {
      actions,
      generated,
      install: cacheable
        ? { mask: maskFromFields(fields), tags: [...tags], idleTimeoutMs: r.idleTimeoutMs, onHit }
        : undefined,
    };
  }

  private sendState(entries: FlowStateEntry[], targets: TunnelEndpoint[]): void {
    if (targets.length === 0) return;
    this.o.datapath.sendFlowState(encodeFlowState(this.o.hostId, ++this.sequence, entries), targets);
    this.stats.flowStateSent++;
  }

  /** Where a packet for a topology port goes from this host, or why it cannot. */
  private outputFor(portId: string, tags: Set<string>): FlowOutput | string {
    const local = this.o.portNoById.get(portId);
    if (local !== undefined) return { kind: "port", portNo: local };
    const port = this.o.store.ports.get(portId);
    if (!port) return "egress_port_unknown";
    if (port.type === topologypb.PortType.PORT_TYPE_REMOTE_SITE) {
      const bridge = this.o.store.bridges.get(port.deviceId);
      if (!bridge || bridge.tunnelKey === 0) return "remote_site_without_key";
      tags.add(bridge.id);
      if (this.o.role === "gateway") {
        const rg = [...this.o.store.remoteGateways.values()].find((g) => g.site === port.remoteSite);
        if (!rg) return "remote_gateway_unknown";
        tags.add(rg.id);
        return { kind: "tunnel", key: bridge.tunnelKey, remoteIp: rg.ip, remotePort: rg.port || 4789 };
      }
      const gw = this.o.store.gateways().find((g) => g.alive && g.tunnelIp !== "");
      if (!gw) return "no_local_gateway";
      tags.add(gw.id);
      return {
        kind: "tunnel",
        key: bridge.tunnelKey,
        remoteIp: gw.tunnelIp,
        remotePort: gw.tunnelPort || 4789,
      };
    }
    const host = this.o.store.hosts.get(port.hostId);
    if (!host || host.tunnelIp === "") return "egress_host_unknown";
    if (host.id === this.o.hostId) return "egress_port_not_bound";
    if (port.tunnelKey === 0) return "egress_port_without_key";
    tags.add(host.id);
    return {
      kind: "tunnel",
      key: port.tunnelKey,
      remoteIp: host.tunnelIp,
      remotePort: host.tunnelPort || 4789,
    };
  }
}

function drop(reason: string): UpcallDecision {
  return { actions: { outputs: [], dropReason: reason } };
}
