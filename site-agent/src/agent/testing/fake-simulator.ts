// A deliberately small simulator for agent tests (not the real engine in src/sim): bridges forward
// by destination MAC among their VM ports and flood broadcasts; a frame to a router port's MAC is
// routed to the VM on the peer bridge that owns the destination IP (MACs rewritten, TTL
// decremented). Optional "stateful" mode emits a conntrack entry per new flow. Plus builders that
// state a topology in a few lines.
import { topologypb } from "@isthmus/schema";
import { type FlowField, KEY } from "../flow-key.js";
import type { FlowStateEntry } from "../flow-state.js";
import type { SimulationInput, SimulationOutcome, Simulator } from "../simulator.js";
import { parseMac } from "../upcall-handler.js";

const PT = topologypb.PortType;

export class FakeSimulator implements Simulator {
  private ports = new Map<string, topologypb.Port>();
  calls = 0;
  /** When set, every forwarded IPv4 flow carries a conntrack entry to share. */
  stateful = false;

  applySnapshot(s: topologypb.TopologySnapshot): void {
    this.ports.clear();
    for (const o of s.objects) if (o.port) this.ports.set(o.port.id, o.port);
  }

  applyChange(c: topologypb.TopologyChange): void {
    for (const o of c.upserts) if (o.port) this.ports.set(o.port.id, o.port);
    for (const d of c.deletes) this.ports.delete(d.id);
  }

  simulate(input: SimulationInput): SimulationOutcome {
    this.calls++;
    const ingress = this.ports.get(input.ingressPortId ?? "");
    const dstMac = input.frame.subarray(0, 6);
    const base: SimulationOutcome = {
      rewrites: {},
      egressPortIds: [],
      tags: [],
      cacheable: true,
      generated: [],
      flowState: [],
      maskFields: ["inPort", "ethDst", "ethSrc", "ethType"] as FlowField[],
    };
    if (!ingress) return { ...base, dropReason: "no_ingress" };
    const bridgeId = ingress.deviceId;
    base.tags.push(bridgeId);
    const onBridge = [...this.ports.values()].filter((p) => p.deviceId === bridgeId);
    if ((dstMac[0]! & 1) === 1) {
      base.egressPortIds = onBridge
        .filter((p) => p.type === PT.PORT_TYPE_VM && p.id !== ingress.id)
        .map((p) => p.id);
      return base;
    }
    const target = onBridge.find((p) => parseMac(p.mac)?.equals(dstMac));
    if (target?.type === PT.PORT_TYPE_VM) {
      base.egressPortIds = [target.id];
      base.tags.push(target.id);
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
        rewrites: { setEthSrc: parseMac(rp.mac)!, setEthDst: parseMac(vm.mac)!, decTtl: true },
        egressPortIds: [vm.id],
        tags: [...base.tags, routerId, rp.id, vm.id, peer.deviceId],
        maskFields: ["inPort", "ethDst", "ethSrc", "ethType", "ipDst", "ipTtl"],
      });
    }
    return { ...base, dropReason: "no_route", tags: [...base.tags, routerId] };
  }

  private withState(input: SimulationInput, r: SimulationOutcome): SimulationOutcome {
    if (!this.stateful || input.key.readUInt16BE(KEY.ethType) !== 0x0800) return r;
    const ip = (o: number) => [...input.key.subarray(o, o + 4)].join(".");
    const entry: FlowStateEntry = {
      conntrack: {
        key: {
          etherType: 0x0800,
          srcIp: ip(KEY.ipSrc),
          dstIp: ip(KEY.ipDst),
          protocol: input.key[KEY.ipProto]!,
          srcPort: input.key.readUInt16BE(KEY.tpSrc),
          dstPort: input.key.readUInt16BE(KEY.tpDst),
          zone: "fake",
        },
      },
      ttlMs: 60_000,
    };
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
