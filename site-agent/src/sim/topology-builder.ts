// Builders for topologies in tests and tools (as MidoNet's agent tests have): a few lines state
// hosts, bridges, routers, ports, routes and chains, and `view()` yields the TopologyView. Ids are
// deterministic ("bridge-1", "port-3", ...) so tests can name what they expect in tags.
import { topologypb } from "@isthmus/schema";
import { InMemoryNatBlockRegistry } from "./nat-ports.js";
import { type SimLimits, SimState } from "./sim-state.js";
import type { SimContext } from "./walk.js";

type Obj = topologypb.TopologyObject;
const PT = topologypb.PortType;
const RA = topologypb.RuleAction;

export type ConditionSpec = Partial<topologypb.Condition>;

export class TopologyBuilder {
  readonly objects: Obj[] = [];
  private n = 0;

  private id(kind: string): string {
    return `${kind}-${++this.n}`;
  }

  host(name: string, tunnelIp: string, role = topologypb.HostRole.HOST_ROLE_HOST): topologypb.Host {
    const h: topologypb.Host = {
      id: name,
      name,
      tunnelIp,
      tunnelPort: 4789,
      role,
      alive: true,
      wanIp: "",
      wanPort: 0,
    };
    this.objects.push({ host: h });
    return h;
  }

  bridge(opts: Partial<topologypb.Bridge> = {}): topologypb.Bridge {
    const b: topologypb.Bridge = {
      id: this.id("bridge"),
      name: "",
      networkId: "",
      tunnelKey: 0,
      inboundFilterId: "",
      outboundFilterId: "",
      mtu: 1500,
      adminStateUp: true,
      ...opts,
    };
    this.objects.push({ bridge: b });
    return b;
  }

  router(opts: Partial<topologypb.Router> = {}): topologypb.Router {
    const r: topologypb.Router = {
      id: this.id("router"),
      name: "",
      inboundFilterId: "",
      outboundFilterId: "",
      adminStateUp: true,
      transitTunnelKey: 0,
      ...opts,
    };
    this.objects.push({ router: r });
    return r;
  }

  port(deviceId: string, type: topologypb.PortType, opts: Partial<topologypb.Port> = {}): topologypb.Port {
    const p: topologypb.Port = {
      id: this.id("port"),
      name: "",
      type,
      deviceId,
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
      ...opts,
    };
    this.objects.push({ port: p });
    return p;
  }

  /** A VM port on `bridge`, bound on `host`, with a tunnel key so other hosts can reach it. */
  vmPort(
    bridge: topologypb.Bridge,
    host: topologypb.Host,
    mac: string,
    ips: string[],
    opts: Partial<topologypb.Port> = {},
  ) {
    return this.port(bridge.id, PT.PORT_TYPE_VM, {
      hostId: host.id,
      mac,
      ips,
      tunnelKey: this.n + 1,
      ...opts,
    });
  }

  /** A router interface on `router` ("ip/prefix") peered with a new port on `bridge`. */
  routerInterface(router: topologypb.Router, bridge: topologypb.Bridge, mac: string, cidr: string) {
    const rp = this.port(router.id, PT.PORT_TYPE_ROUTER_INTERFACE, { mac, ips: [cidr] });
    const bp = this.port(bridge.id, PT.PORT_TYPE_BRIDGE_ROUTER, { peerId: rp.id });
    rp.peerId = bp.id;
    return { routerPort: rp, bridgePort: bp };
  }

  uplink(
    router: topologypb.Router,
    host: topologypb.Host,
    mac: string,
    cidr: string,
    opts: Partial<topologypb.Port> = {},
  ) {
    return this.port(router.id, PT.PORT_TYPE_ROUTER_UPLINK, {
      hostId: host.id,
      mac,
      ips: [cidr],
      tunnelKey: this.n + 1,
      ...opts,
    });
  }

  route(
    router: topologypb.Router,
    dst: string,
    port: topologypb.Port | null,
    opts: Partial<topologypb.Route> = {},
  ): topologypb.Route {
    const r: topologypb.Route = {
      id: this.id("route"),
      routerId: router.id,
      srcPrefix: "0.0.0.0/0",
      dstPrefix: dst,
      type: topologypb.RouteType.ROUTE_TYPE_NORMAL,
      nextHopPortId: port?.id ?? "",
      nextHopGateway: "",
      weight: 100,
      ...opts,
    };
    this.objects.push({ route: r });
    return r;
  }

  chain(name = ""): topologypb.Chain {
    const c = { id: this.id("chain"), name };
    this.objects.push({ chain: c });
    return c;
  }

  rule(
    chain: topologypb.Chain,
    action: topologypb.RuleAction,
    cond: ConditionSpec = {},
    opts: Partial<topologypb.Rule> = {},
  ): topologypb.Rule {
    const position = this.objects.filter((o) => o.rule?.chainId === chain.id).length + 1;
    const r: topologypb.Rule = {
      id: this.id("rule"),
      chainId: chain.id,
      position,
      condition: { ...emptyCondition(), ...cond },
      action,
      jumpChainId: "",
      natTargets: [],
      intentId: "",
      ...opts,
    };
    this.objects.push({ rule: r });
    return r;
  }

  accept(chain: topologypb.Chain, cond: ConditionSpec = {}) {
    return this.rule(chain, RA.RULE_ACTION_ACCEPT, cond);
  }
  dropRule(chain: topologypb.Chain, cond: ConditionSpec = {}) {
    return this.rule(chain, RA.RULE_ACTION_DROP, cond);
  }

  ipGroup(addresses: string[]): topologypb.IpAddrGroup {
    const g = { id: this.id("ipgroup"), name: "", addresses };
    this.objects.push({ ipAddrGroup: g });
    return g;
  }

  /** A member of address group `group` holding `addresses` (a port's, as translation derives them). */
  ipGroupMember(group: topologypb.IpAddrGroup, addresses: string[]): topologypb.IpAddrGroupMember {
    const m = { id: this.id("member"), groupId: group.id, addresses, intentId: "" };
    this.objects.push({ ipAddrGroupMember: m });
    return m;
  }

  portGroup(portIds: string[], stateful = true): topologypb.PortGroup {
    const g = { id: this.id("portgroup"), name: "", portIds, stateful };
    this.objects.push({ portGroup: g });
    return g;
  }

  macEntry(bridge: topologypb.Bridge, mac: string, port: topologypb.Port, vlan = 0): topologypb.MacEntry {
    const e = { id: this.id("mac"), bridgeId: bridge.id, mac, portId: port.id, vlan };
    this.objects.push({ macEntry: e });
    return e;
  }

  arpEntry(bridge: topologypb.Bridge, ip: string, mac: string): topologypb.ArpEntry {
    const e = { id: this.id("arp"), bridgeId: bridge.id, ip, mac };
    this.objects.push({ arpEntry: e });
    return e;
  }

  remoteGateway(site: string, ip: string, port = 4789): topologypb.RemoteGateway {
    const g = { id: this.id("gateway"), site, ip, port };
    this.objects.push({ remoteGateway: g });
    return g;
  }
}

export function emptyCondition(): topologypb.Condition {
  return topologypb.Condition.fromPartial({});
}

/** A SimContext on `hostId` with fresh state, leasing NAT blocks from `registry`. */
export function newSimContext(
  hostId: string,
  registry = new InMemoryNatBlockRegistry(),
  limits: Partial<SimLimits> = {},
): SimContext {
  return { now: 1_000, hostId, state: new SimState(registry.forHost(hostId), limits) };
}
