// Turns a datapath miss into a decision: anti-spoofing on the ingress port, simulation, mapping the
// simulated outputs to local datapath ports or VXLAN tunnels, pushing new flow state to the hosts
// that may carry return traffic before the packet itself goes out, and the flow to install with its
// mask and tags.
import { topologypb } from "@isthmus/schema";
import type { Datapath, TunnelEndpoint, Upcall, UpcallDecision } from "./datapath.js";
import { isGlobalTunnelKey } from "./datapath.js";
import { type FlowActions, type FlowOutput, MAX_OUTPUTS } from "./flow-actions.js";
import { extractKey, type FlowField, KEY, KEY_SIZE, maskFromFields } from "./flow-key.js";
import { encodeFlowState, type FlowStateEntry } from "./flow-state.js";
import type { Flow } from "./flow-table.js";
import { KeyMaskCache } from "./key-mask-cache.js";
import type {
  FlowRewrites,
  OutputGroup,
  SimOutput,
  SimulationInput,
  SimulationOutcome,
  Simulator,
} from "./simulator.js";
import { agentTag } from "./tags.js";
import type { TopologyStore } from "./topology-store.js";

const ALL_FIELDS = Object.keys(KEY) as FlowField[];
/** Every installed flow matches on where the packet came from. */
const INGRESS_FIELDS: readonly FlowField[] = ["inPort", "tunnelKey"];
/** Resubmitted packets (released by ARP) may themselves release more; bound the chain. */
const MAX_RESUBMIT_DEPTH = 4;

export interface UpcallHandlerOptions {
  hostId: string;
  role: "host" | "gateway";
  store: TopologyStore;
  simulator: Simulator;
  datapath: Datapath;
  /** Local port bindings: datapath port number ↔ topology port id. */
  portIdByNo: Map<number, string>;
  portNoById: Map<string, number>;
  /** How often an active flow re-sends its flow state (heals a lost message). */
  stateRefreshMs?: number;
  clock: () => number;
}

export function parseMac(mac: string): Buffer | undefined {
  const parts = mac.split(":");
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) return undefined;
  return Buffer.from(parts.map((p) => Number.parseInt(p, 16)));
}

/** Whether the frame's Ethernet source is `mac` (compared in place: no view per upcall). */
function sourceMacIs(frame: Buffer, mac: Buffer): boolean {
  if (frame.length < 12) return false;
  for (let i = 0; i < 6; i++) if (frame[6 + i] !== mac[i]) return false;
  return true;
}

/** Whether any entry is (not) ARP state, without a closure per call. */
function anyArp(entries: readonly FlowStateEntry[], arp: boolean): boolean {
  for (const e of entries) if ((e.arp !== undefined) === arp) return true;
  return false;
}

function addTarget(targets: TunnelEndpoint[], ip: string, port: number): void {
  for (const t of targets) if (t.ip === ip && t.port === port) return;
  targets.push({ ip, port });
}

/** Tag lists are a few entries long: a linear check keeps them duplicate-free without a Set. */
function addTag(tags: string[], t: string): void {
  if (!tags.includes(t)) tags.push(t);
}

/** The group's rewrites and `outputs` as one FlowActions (what `{ ...rewrites, outputs }` makes,
 * built field by field: the spread of an object literal costs a dictionary-shaped copy). */
function withOutputs(r: FlowRewrites, outputs: FlowOutput[]): FlowActions {
  const a: FlowActions = { outputs };
  if (r.setEthSrc !== undefined) a.setEthSrc = r.setEthSrc;
  if (r.setEthDst !== undefined) a.setEthDst = r.setEthDst;
  if (r.decTtl !== undefined) a.decTtl = r.decTtl;
  if (r.setIpSrc !== undefined) a.setIpSrc = r.setIpSrc;
  if (r.setIpDst !== undefined) a.setIpDst = r.setIpDst;
  if (r.setTpSrc !== undefined) a.setTpSrc = r.setTpSrc;
  if (r.setTpDst !== undefined) a.setTpDst = r.setTpDst;
  if (r.setIcmpId !== undefined) a.setIcmpId = r.setIcmpId;
  return a;
}

function drop(reason: string): UpcallDecision {
  return { actions: { outputs: [], dropReason: reason } };
}

/** Distinct port MACs whose parsed bytes are kept (the anti-spoofing check runs on every upcall). */
const MAC_CACHE_LIMIT = 4096;

export class UpcallHandler {
  private sequence = 0;
  private readonly macs = new Map<string, Buffer | undefined>();
  private readonly masks = new KeyMaskCache();
  private readonly spoofMask = maskFromFields(["inPort", "ethSrc"]);
  readonly stats = { simulations: 0, flowStateSent: 0, flowStateRefreshes: 0, resubmits: 0 };

  constructor(private readonly o: UpcallHandlerOptions) {}

  handle(u: Upcall): UpcallDecision | Promise<UpcallDecision> {
    if (!this.o.store.ready) return drop("topology_not_ready");
    if (u.portNo === 0) return this.fromTunnel(u);
    const portId = this.o.portIdByNo.get(u.portNo);
    const port = portId === undefined ? undefined : this.o.store.ports.get(portId);
    if (!port || portId === undefined) return drop("unknown_port");
    // A VM may only send from its own MAC; an uplink carries the external network's hosts.
    const mac = port.type === topologypb.PortType.PORT_TYPE_VM ? this.portMac(port.mac) : undefined;
    if (mac && !sourceMacIs(u.frame, mac)) {
      // Cache the drop so a VM spraying spoofed frames does not keep the simulator busy.
      return {
        actions: { outputs: [], dropReason: "spoofed_mac" },
        install: {
          mask: this.spoofMask,
          tags: [agentTag.port(portId)],
          idleTimeoutMs: 10_000,
        },
      };
    }
    return this.run(
      u,
      { frame: u.frame, key: u.key, ingressPortId: portId, traced: u.traced, now: this.o.clock() },
      [agentTag.port(portId)],
    );
  }

  private portMac(text: string): Buffer | undefined {
    if (this.macs.has(text)) return this.macs.get(text);
    if (this.macs.size >= MAC_CACHE_LIMIT) this.macs.clear();
    const mac = parseMac(text);
    this.macs.set(text, mac);
    return mac;
  }

  private fromTunnel(u: Upcall): UpcallDecision | Promise<UpcallDecision> {
    if (!isGlobalTunnelKey(u.tunnelKey)) return drop("vxlan_unknown_key");
    if (this.o.role !== "gateway") return drop("global_key_at_host");
    const fromSite = [...this.o.store.remoteGateways.values()].find((g) => g.ip === u.from?.ip)?.site;
    return this.run(
      u,
      { frame: u.frame, key: u.key, tunnelKey: u.tunnelKey, fromSite, traced: u.traced, now: this.o.clock() },
      [],
    );
  }

  private run(
    u: Upcall,
    input: SimulationInput,
    extraTags: string[],
  ): UpcallDecision | Promise<UpcallDecision> {
    const outcome = this.o.simulator.simulate(input);
    return outcome instanceof Promise
      ? outcome.then((r) => this.decide(u, r, extraTags, 0))
      : this.decide(u, outcome, extraTags, 0);
  }

  private decide(u: Upcall, r: SimulationOutcome, extraTags: string[], depth: number): UpcallDecision {
    this.stats.simulations++;
    if (r.invalidate.length > 0) this.o.datapath.invalidate(r.invalidate);
    const tags: string[] = [];
    for (const t of r.tags) addTag(tags, t);
    for (const t of extraTags) addTag(tags, t);
    // Only connection state (not ARP) is sent to the tunnel peers collected here (in the order
    // first seen, each once; a few at most, so a list rather than a Map).
    const stateTargets: TunnelEndpoint[] | undefined = anyArp(r.flowState, false) ? [] : undefined;
    const groups: { actions: FlowActions; unreachable: string | undefined }[] = [];
    let anyOutput = false;
    for (const g of r.groups) {
      const resolved = this.resolveGroup(g, tags, stateTargets);
      if (resolved.actions.outputs.length > 0) anyOutput = true;
      groups.push(resolved);
    }
    const first = groups[0] ?? { actions: { outputs: [] }, unreachable: undefined };
    const actions: FlowActions = first.actions;
    if (!anyOutput) {
      actions.dropReason = r.dropReason ?? first.unreachable ?? "no_egress";
    }
    // Later groups (rewrites between outputs) go out as copies; such results are not cached.
    // The common single-group, nothing-generated decision carries no list at all.
    const generated: { frame: Buffer; actions: FlowActions }[] | undefined =
      groups.length > 1 || r.generated.length > 0 ? [] : undefined;
    for (let i = 1; i < groups.length; i++) {
      generated!.push({ frame: Buffer.from(u.frame), actions: groups[i]!.actions });
    }
    for (const gen of r.generated) {
      for (const g of gen.groups) {
        const resolved = this.resolveGroup(g, [], undefined);
        generated!.push({ frame: Buffer.from(gen.frame), actions: resolved.actions });
      }
    }
    let onHit: ((f: Flow, now: number) => void) | undefined;
    // Flow state is sent by the decision's beforeOutput: after the install, before the packet.
    let arpState: FlowStateEntry[] | undefined;
    let arpTargets: TunnelEndpoint[] | undefined;
    let connTargets: TunnelEndpoint[] | undefined;
    const hasArp = anyArp(r.flowState, true);
    // The outcome's own list when none of it is ARP state (the common case: no copy).
    const connState = hasArp ? r.flowState.filter((e) => !e.arp) : r.flowState;
    if (hasArp) {
      // An external neighbour's MAC learned on an uplink: any host of the site may route there.
      arpState = r.flowState.filter((e) => e.arp);
      arpTargets = [...this.o.store.hosts.values()]
        .filter((h) => h.id !== this.o.hostId && h.tunnelIp !== "")
        .map((h) => ({ ip: h.tunnelIp, port: h.tunnelPort || 4789 }));
    }
    if (connState.length > 0 && stateTargets) {
      // Return traffic may come back through the egress hosts or, across sites, the gateways.
      for (const g of this.o.store.gateways()) {
        if (g.id !== this.o.hostId && g.tunnelIp !== "")
          addTarget(stateTargets, g.tunnelIp, g.tunnelPort || 4789);
      }
      const targets = stateTargets;
      connTargets = targets;
      const refreshMs = this.o.stateRefreshMs ?? 1000;
      let lastSent = this.o.clock();
      onHit = (_f, t) => {
        if (t - lastSent < refreshMs) return;
        lastSent = t;
        this.o.simulator.refreshFlowState(connState, t);
        this.stats.flowStateRefreshes++;
        this.sendState(connState, targets);
      };
    }
    for (const rs of depth < MAX_RESUBMIT_DEPTH ? r.resubmit : []) this.resubmit(rs, depth + 1);
    const cacheable = r.cacheable && groups.length <= 1 && actions.outputs.length <= MAX_OUTPUTS && !u.traced;
    const beforeOutput =
      arpTargets || connTargets
        ? () => {
            if (arpState && arpTargets) this.sendState(arpState, arpTargets);
            if (connTargets) this.sendState(connState, connTargets);
          }
        : undefined;
    return {
      actions,
      generated,
      beforeOutput,
      install: cacheable
        ? {
            mask: this.masks.get(r.maskFields ?? ALL_FIELDS, r.ipDstPrefixBits, INGRESS_FIELDS),
            tags,
            idleTimeoutMs: r.idleTimeoutMs,
            onHit,
          }
        : undefined,
    };
  }

  /** Packets released outside a simulation (a peer shared the ARP answer they waited for). */
  resubmitReleased(list: SimulationOutcome["resubmit"]): void {
    for (const rs of list) this.resubmit(rs, 1);
  }

  /** A packet the simulation held (waiting for ARP) and released: simulate and send it now. */
  private resubmit(rs: SimulationOutcome["resubmit"][number], depth: number): void {
    this.stats.resubmits++;
    const key = Buffer.alloc(KEY_SIZE);
    const portNo = rs.ingressPortId === undefined ? 0 : (this.o.portNoById.get(rs.ingressPortId) ?? 0);
    extractKey(rs.frame, portNo, rs.tunnelKey ?? 0, key);
    const outcome = this.o.simulator.simulate({
      frame: rs.frame,
      key,
      ingressPortId: rs.ingressPortId,
      tunnelKey: rs.tunnelKey,
      fromSite: rs.fromSite,
      traced: false,
      now: this.o.clock(),
    });
    // Marked traced so the decision is executed once and not installed (it was held, not looked up).
    const held: Upcall = { portNo, tunnelKey: rs.tunnelKey ?? 0, traced: true, frame: rs.frame, key };
    const send = (r: SimulationOutcome) => {
      const d = this.decide(held, r, [], depth);
      d.beforeOutput?.();
      for (const g of d.generated ?? []) this.o.datapath.execute(g.frame, g.actions);
      this.o.datapath.execute(rs.frame, d.actions);
    };
    if (outcome instanceof Promise) outcome.then(send, () => this.o.datapath.countDrop("upcall_error"));
    else send(outcome);
  }

  private resolveGroup(
    g: OutputGroup,
    tags: string[],
    stateTargets: TunnelEndpoint[] | undefined,
  ): { actions: FlowActions; unreachable: string | undefined } {
    const outputs: FlowOutput[] = [];
    let unreachable: string | undefined;
    for (const o of g.outputs) {
      const out = this.outputFor(o, tags);
      if (typeof out === "string") {
        unreachable = out;
        continue;
      }
      outputs.push(out);
      if (out.kind === "tunnel" && stateTargets) addTarget(stateTargets, out.remoteIp, out.remotePort);
    }
    return { actions: withOutputs(g.rewrites, outputs), unreachable };
  }

  private sendState(entries: FlowStateEntry[], targets: TunnelEndpoint[]): void {
    if (targets.length === 0) return;
    this.o.datapath.sendFlowState(encodeFlowState(this.o.hostId, ++this.sequence, entries), targets);
    this.stats.flowStateSent++;
  }

  /** Where a simulated output goes from this host, or why it cannot. */
  private outputFor(o: SimOutput, tags: string[]): FlowOutput | string {
    if (o.kind === "tunnel") {
      return { kind: "tunnel", key: o.key, remoteIp: o.remoteIp, remotePort: o.remotePort };
    }
    const portId = o.portId;
    addTag(tags, agentTag.port(portId));
    const local = this.o.portNoById.get(portId);
    if (local !== undefined) return { kind: "port", portNo: local };
    const port = this.o.store.ports.get(portId);
    if (!port) return "egress_port_unknown";
    if (port.type === topologypb.PortType.PORT_TYPE_REMOTE_SITE) {
      const bridge = this.o.store.bridges.get(port.deviceId);
      if (!bridge || bridge.tunnelKey === 0) return "remote_site_without_key";
      addTag(tags, agentTag.device(bridge.id));
      if (this.o.role === "gateway") {
        const rg = [...this.o.store.remoteGateways.values()].find((g) => g.site === port.remoteSite);
        if (!rg) return "remote_gateway_unknown";
        addTag(tags, agentTag.gateway(rg.site));
        return { kind: "tunnel", key: bridge.tunnelKey, remoteIp: rg.ip, remotePort: rg.port || 4789 };
      }
      const gw = this.o.store.gateways().find((g) => g.alive && g.tunnelIp !== "");
      if (!gw) return "no_local_gateway";
      addTag(tags, agentTag.host(gw.id));
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
    addTag(tags, agentTag.host(host.id));
    return {
      kind: "tunnel",
      key: port.tunnelKey,
      remoteIp: host.tunnelIp,
      remotePort: host.tunnelPort || 4789,
    };
  }
}
