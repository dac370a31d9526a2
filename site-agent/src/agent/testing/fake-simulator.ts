// A deliberately small simulator for agent tests (not the real engine in src/sim): bridges forward
// by destination MAC among their VM ports and flood broadcasts; a frame to a router port's MAC is
// routed to the VM on the peer bridge that owns the destination IP (MACs rewritten, TTL
// decremented). Optional "stateful" mode emits a conntrack entry per new flow. Plus builders that
// state a topology in a few lines.
import { topologypb } from "@isthmus/schema";
import { type FlowField, KEY } from "../flow-key.js";
import { type FlowStateEntry, FlowStateTable } from "../flow-state.js";
import type { SimulationInput, SimulationOutcome, Simulator } from "../simulator.js";
import { agentTag } from "../tags.js";
import { parseMac } from "../upcall-handler.js";

const PT = topologypb.PortType;

export class FakeSimulator implements Simulator {
  private ports = new Map<string, topologypb.Port>();
  calls = 0;
  /** When set, every forwarded IPv4 flow carries a conntrack entry to share. */
  stateful = false;
  readonly flowState = new FlowStateTable();

  applySnapshot(s: topologypb.TopologySnapshot): void {
    this.ports.clear();
    for (const o of s.objects) if (o.port) this.ports.set(o.port.id, o.port);
  }

  applyChange(c: topologypb.TopologyChange): string[] {
    for (const o of c.upserts) if (o.port) this.ports.set(o.port.id, o.port);
    for (const d of c.deletes) this.ports.delete(d.id);
    return [];
  }

  installFlowState(entries: FlowStateEntry[], now: number): string[] {
    return entries.flatMap((e) => this.flowState.install(e, now) ?? []);
  }

  refreshFlowState(entries: FlowStateEntry[], now: number): void {
    for (const e of entries) this.flowState.install(e, now);
  }

  expire(now: number): string[] {
    return this.flowState.expire(now);
  }

  simulate(input: SimulationInput): SimulationOutcome {
    this.calls++;
    const ingress = this.ports.get(input.ingressPortId ?? "");
    const dstMac = input.frame.subarray(0, 6);
    const base: SimulationOutcome = {
      groups: [],
      tags: [],
      cacheable: true,
      generated: [],
      flowState: [],
      invalidate: [],
      resubmit: [],
      maskFields: ["inPort", "ethDst", "ethSrc", "ethType"] as FlowField[],
    };
    if (!ingress) return { ...base, dropReason: "no_ingress" };
    const bridgeId = ingress.deviceId;
    base.tags.push(agentTag.device(bridgeId));
    const onBridge = [...this.ports.values()].filter((p) => p.deviceId === bridgeId);
    if ((dstMac[0]! & 1) === 1) {
      const flood = onBridge.filter((p) => p.type === PT.PORT_TYPE_VM && p.id !== ingress.id);
      base.groups = [{ rewrites: {}, outputs: flood.map((p) => ({ kind: "port" as const, portId: p.id })) }];
      return base;
    }
    const target = onBridge.find((p) => parseMac(p.mac)?.equals(dstMac));
    if (target?.type === PT.PORT_TYPE_VM) {
      base.groups = [{ rewrites: {}, outputs: [{ kind: "port", portId: target.id }] }];
      return this.withState(input, base);
    }
    // To the router: the bridge's router-facing port's peer owns the MAC.
    const routerPort = onBridge
      .filter((p) => p.type === PT.PORT_TYPE_BRIDGE_ROUTER)
      .map((p) => this.ports.get(p.peerId))
      .find((rp) => rp !== undefined && parseMac(rp.mac)?.equals(dstMac));
    if (!routerPort)
      return { ...base, dropReason: "unknown_mac", tags: [...base.tags, `unknown:${bridgeId}`] };
    const dstIp = [...input.key.subarray(KEY.ipDst, KEY.ipDst + 4)].join(".");
    const routerId = routerPort.deviceId;
    for (const rp of this.ports.values()) {
      if (rp.deviceId !== routerId || rp.type !== PT.PORT_TYPE_ROUTER_INTERFACE) continue;
      const peer = this.ports.get(rp.peerId);
      if (!peer) continue;
      const vm = [...this.ports.values()].find(
        (p) => p.deviceId === peer.deviceId && p.type === PT.PORT_TYPE_VM && p.ips.includes(dstIp),
      );
      if (!vm) continue;
      return this.withState(input, {
        ...base,
        groups: [
          {
            rewrites: { setEthSrc: parseMac(rp.mac)!, setEthDst: parseMac(vm.mac)!, decTtl: 1 },
            outputs: [{ kind: "port", portId: vm.id }],
          },
        ],
        tags: [...base.tags, agentTag.device(routerId), agentTag.port(rp.id), agentTag.device(peer.deviceId)],
        maskFields: ["inPort", "ethDst", "ethSrc", "ethType", "ipDst", "ipTtl"],
      });
    }
    return { ...base, dropReason: "no_route", tags: [...base.tags, agentTag.device(routerId)] };
  }

  private withState(input: SimulationInput, r: SimulationOutcome): SimulationOutcome {
    if (!this.stateful || input.key.readUInt16BE(KEY.ethType) !== 0x0800) return r;
    const ip = (o: number) => [...input.key.subarray(o, o + 4)].join(".");
    const key = `fake|${input.key[KEY.ipProto]}|${ip(KEY.ipSrc)}|${input.key.readUInt16BE(KEY.tpSrc)}|${ip(KEY.ipDst)}|${input.key.readUInt16BE(KEY.tpDst)}`;
    const entry: FlowStateEntry = { conntrack: { key, zoneId: "fake" }, ttlMs: 60_000 };
    this.flowState.install(entry, input.now);
    return {
      ...r,
      flowState: [entry],
      maskFields: [...(r.maskFields ?? []), "ipSrc", "ipDst", "ipProto", "tpSrc", "tpDst"],
    };
  }
}

// ---- topology builders ----

let seq = 0;
export function uuid(prefix: number): string {
  seq++;
  return `00000000-0000-4000-8000-${prefix.toString(16).padStart(4, "0")}${seq.toString(16).padStart(8, "0")}`;
}

export function host(
  name: string,
  tunnelIp: string,
  tunnelPort: number,
  role = topologypb.HostRole.HOST_ROLE_HOST,
): topologypb.Host {
  return { id: uuid(1), name, tunnelIp, tunnelPort, role, alive: true, wanIp: "", wanPort: 0 };
}

export function bridge(name: string, tunnelKey = 0): topologypb.Bridge {
  return {
    id: uuid(2),
    name,
    networkId: "",
    tunnelKey,
    inboundFilterId: "",
    outboundFilterId: "",
    mtu: 1450,
    adminStateUp: true,
  };
}

export function port(
  p: Partial<topologypb.Port> & { deviceId: string; type: topologypb.PortType },
): topologypb.Port {
  return {
    id: uuid(4),
    name: "",
    peerId: "",
    hostId: "",
    interfaceName: "",
    mac: "",
    ips: [],
    tunnelKey: 0,
    inboundFilterId: "",
    outboundFilterId: "",
    portGroupIds: [],
    adminStateUp: true,
    vlan: 0,
    remoteSite: "",
    intentId: "",
    ...p,
  };
}

export function vmPort(
  b: topologypb.Bridge,
  h: topologypb.Host,
  iface: string,
  mac: string,
  ip: string,
  tunnelKey: number,
): topologypb.Port {
  return port({
    deviceId: b.id,
    type: PT.PORT_TYPE_VM,
    hostId: h.id,
    interfaceName: iface,
    mac,
    ips: [ip],
    tunnelKey,
  });
}

/** A router interface on a bridge: the router-side port (with MAC and "ip/prefix") and its bridge peer. */
export function routerLink(
  routerId: string,
  b: topologypb.Bridge,
  mac: string,
  cidr: string,
): [topologypb.Port, topologypb.Port] {
  const rp = port({ deviceId: routerId, type: PT.PORT_TYPE_ROUTER_INTERFACE, mac, ips: [cidr] });
  const bp = port({ deviceId: b.id, type: PT.PORT_TYPE_BRIDGE_ROUTER, peerId: rp.id });
  rp.peerId = bp.id;
  return [rp, bp];
}

export function snapshot(revision: number, objs: topologypb.TopologyObject[]): topologypb.TopologySnapshot {
  return { revision, objects: objs };
}

export function objs(x: {
  hosts?: topologypb.Host[];
  bridges?: topologypb.Bridge[];
  ports?: topologypb.Port[];
  routers?: topologypb.Router[];
}): topologypb.TopologyObject[] {
  return [
    ...(x.hosts ?? []).map((host) => ({ host })),
    ...(x.bridges ?? []).map((bridge) => ({ bridge })),
    ...(x.routers ?? []).map((router) => ({ router })),
    ...(x.ports ?? []).map((port) => ({ port })),
  ];
}
