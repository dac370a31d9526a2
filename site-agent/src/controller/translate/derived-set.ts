// What translating one unit yields: its topology objects and the problems met on the way, plus
// the proto kind bookkeeping (oneof case ↔ TopologyKind) every delta needs.
import { topologypb } from "@isthmus/schema";

export type TopologyCase = keyof topologypb.TopologyObject;

const KIND_OF_CASE: Record<TopologyCase, topologypb.TopologyKind> = {
  host: topologypb.TopologyKind.TOPOLOGY_KIND_HOST,
  bridge: topologypb.TopologyKind.TOPOLOGY_KIND_BRIDGE,
  router: topologypb.TopologyKind.TOPOLOGY_KIND_ROUTER,
  port: topologypb.TopologyKind.TOPOLOGY_KIND_PORT,
  route: topologypb.TopologyKind.TOPOLOGY_KIND_ROUTE,
  chain: topologypb.TopologyKind.TOPOLOGY_KIND_CHAIN,
  rule: topologypb.TopologyKind.TOPOLOGY_KIND_RULE,
  ipAddrGroup: topologypb.TopologyKind.TOPOLOGY_KIND_IP_ADDR_GROUP,
  portGroup: topologypb.TopologyKind.TOPOLOGY_KIND_PORT_GROUP,
  macEntry: topologypb.TopologyKind.TOPOLOGY_KIND_MAC_ENTRY,
  arpEntry: topologypb.TopologyKind.TOPOLOGY_KIND_ARP_ENTRY,
  remoteGateway: topologypb.TopologyKind.TOPOLOGY_KIND_REMOTE_GATEWAY,
  ipAddrGroupMember: topologypb.TopologyKind.TOPOLOGY_KIND_IP_ADDR_GROUP_MEMBER,
};

/** The kind and id of a topology object; throws when no case is set. */
export function topologyRefOf(obj: topologypb.TopologyObject): topologypb.TopologyRef {
  for (const c of Object.keys(obj) as TopologyCase[]) {
    const v = obj[c];
    if (v !== undefined) return { kind: KIND_OF_CASE[c], id: v.id };
  }
  throw new Error("topology object has no kind set");
}

/** "kind/id": unique across the whole site topology. */
export const refKey = (ref: topologypb.TopologyRef): string => `${ref.kind}/${ref.id}`;

export class DerivedSet {
  readonly objects: topologypb.TopologyObject[] = [];
  readonly problems: string[] = [];

  add(obj: topologypb.TopologyObject): void {
    this.objects.push(obj);
  }
  problem(message: string): void {
    this.problems.push(message);
  }

  bridge(b: Partial<topologypb.Bridge>): void {
    this.add({ bridge: topologypb.Bridge.fromPartial(b) });
  }
  router(r: Partial<topologypb.Router>): void {
    this.add({ router: topologypb.Router.fromPartial(r) });
  }
  port(p: Partial<topologypb.Port>): void {
    this.add({ port: topologypb.Port.fromPartial(p) });
  }
  route(r: Partial<topologypb.Route>): void {
    this.add({ route: topologypb.Route.fromPartial(r) });
  }
  chain(c: Partial<topologypb.Chain>): void {
    this.add({ chain: topologypb.Chain.fromPartial(c) });
  }
  rule(r: Omit<Partial<topologypb.Rule>, "condition"> & { condition?: Partial<topologypb.Condition> }): void {
    this.add({ rule: topologypb.Rule.fromPartial({ ...r, condition: r.condition ?? {} }) });
  }
  ipAddrGroup(g: Partial<topologypb.IpAddrGroup>): void {
    this.add({ ipAddrGroup: topologypb.IpAddrGroup.fromPartial(g) });
  }
  ipAddrGroupMember(m: Partial<topologypb.IpAddrGroupMember>): void {
    this.add({ ipAddrGroupMember: topologypb.IpAddrGroupMember.fromPartial(m) });
  }
  macEntry(m: Partial<topologypb.MacEntry>): void {
    this.add({ macEntry: topologypb.MacEntry.fromPartial(m) });
  }
  arpEntry(a: Partial<topologypb.ArpEntry>): void {
    this.add({ arpEntry: topologypb.ArpEntry.fromPartial(a) });
  }
  remoteGateway(g: Partial<topologypb.RemoteGateway>): void {
    this.add({ remoteGateway: topologypb.RemoteGateway.fromPartial(g) });
  }
  host(h: Partial<topologypb.Host>): void {
    this.add({ host: topologypb.Host.fromPartial(h) });
  }
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Lower-case "aa:bb:cc:dd:ee:ff", or undefined when `mac` is not a unicast MAC in that form. */
export function normalizeMac(mac: string): string | undefined {
  const m = mac.toLowerCase();
  if (!MAC_RE.test(m)) return undefined;
  if (Number.parseInt(m.slice(0, 2), 16) & 1) return undefined; // multicast
  return m;
}

export const ETHER_TYPE_IPV4 = 0x0800;
export const ETHER_TYPE_ARP = 0x0806;
export const ETHER_TYPE_IPV6 = 0x86dd;
/** Src prefix meaning "any source" for a route of the family of `prefix`. */
export const anyPrefixLike = (prefix: string): string => (prefix.includes(":") ? "::/0" : "0.0.0.0/0");
