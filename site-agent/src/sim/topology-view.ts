// The agent's read-only copy of the site topology, indexed for the packet path: per-port parsed
// addresses, per-bridge MAC and ARP tables, per-router LPM tries, per-chain compiled rules. Built
// from a snapshot and updated by `apply(change)`, which rebuilds only what the change touched and
// returns the tags of flows it makes stale. Nothing here is computed per packet. Chains are
// compiled when a simulation first looks one up (ChainTable), as MidoNet's agent loads devices on
// demand: a site's snapshot carries ~150k rules and a host's flows cross a few of its chains. A
// snapshot's rules may come packed (packed-rules.ts): they become objects when their chain is
// compiled, and a change that replaces or deletes one retires it there.
import { topologypb } from "@isthmus/schema";
import {
  type Cidr4,
  type Cidr6,
  formatIp4,
  formatIp6,
  formatMac,
  parseCidr4,
  parseCidr6,
  parseIp4,
  parseMac,
} from "../packets/addr.js";
import { LpmTrie } from "./lpm.js";
import type { PackedRules } from "./packed-rules.js";
import type { OutputAction } from "./result.js";
import { type CompiledRule, compileRule } from "./rule-compile.js";
import { indexRules, type RuleRun } from "./rule-index.js";
import { Tag, TagCache } from "./tag-cache.js";

type Host = topologypb.Host;
type Port = topologypb.Port;
type Route = topologypb.Route;
const PT = topologypb.PortType;

export interface PortView {
  readonly id: string;
  readonly tag: Tag;
  readonly raw: Port;
  readonly type: topologypb.PortType;
  readonly deviceId: string;
  readonly mac: number;
  /** Router ports: the port's address and prefix; VM ports: allowed addresses. */
  readonly ips4: { ip: number; cidr: Cidr4 }[];
  readonly ips6: { ip: Uint32Array; cidr: Cidr6 }[];
  /** VM, uplink and remote-site ports face the outside; bridge↔router ports are interior. */
  readonly exterior: boolean;
  readonly up: boolean;
  /** The `output` action to this port, shared by every result that delivers here (never mutated). */
  readonly output: OutputAction;
}

export interface BridgeView {
  readonly id: string;
  readonly tag: Tag;
  readonly floodTag: Tag;
  readonly raw: topologypb.Bridge;
  readonly ports: PortView[];
  readonly exteriorPorts: PortView[];
  /** vlan → mac → port: MAC entries, VM port MACs and peer router port MACs. */
  readonly staticMacs: Map<number, Map<number, PortView>>;
  /** IPv4 → MAC the bridge can answer ARP for. */
  readonly arp: Map<number, number>;
  /** IPv6 (formatted) → MAC for neighbor solicitations. */
  readonly nd: Map<string, number>;
  readonly remoteSitePorts: Map<string, PortView>;
  readonly macTags: TagCache;
  readonly arpTags: TagCache;
}

export interface RouteView {
  readonly id: string;
  readonly tag: Tag;
  readonly raw: Route;
  readonly dst: Cidr4;
  readonly src: Cidr4;
  readonly weight: number;
  readonly type: topologypb.RouteType;
  readonly nextHopPort: string;
  /** -1 = on-link (the destination itself is the next hop). */
  readonly gateway: number;
}

export interface RouterView {
  readonly id: string;
  readonly tag: Tag;
  readonly noRouteTag: Tag;
  readonly raw: topologypb.Router;
  readonly ports: PortView[];
  /** The router's own addresses → the port holding them. */
  readonly portIps: Map<number, PortView>;
  /** The same addresses as a list (masks: the bits that tell a destination apart from each). */
  readonly portIpList: number[];
  readonly trie: LpmTrie<RouteView>;
  readonly arpTags: TagCache;
  /** Routes that could not be used (bad prefix), with why. */
  readonly badRoutes: { id: string; why: string }[];
}

export interface ChainView {
  readonly id: string;
  readonly tag: Tag;
  readonly rules: CompiledRule[];
  /** The rules split into linear and indexed runs (rule-index.ts). */
  runs: RuleRun[];
}

/**
 * Views by id, each built the first time it is looked up and kept until a change touches what it
 * was built from (`drop`); so at most one built form per object in the topology. What a lookup
 * returns is what an eager build at the same revision would have held. The compiled chains (a
 * chain is built from its rules) and the bridges (from their ports, MAC and ARP entries): a
 * snapshot holds every chain and bridge of the site, and a host's flows cross a few.
 */
export class LazyTable<V> {
  private readonly compiled = new Map<string, V>();

  constructor(
    private readonly compile: (id: string) => V | undefined,
    private readonly ids: () => Iterable<string>,
  ) {}

  /** The view built (now, if it was not yet), or undefined when the topology has no such object. */
  get(id: string): V | undefined {
    const c = this.compiled.get(id);
    if (c !== undefined) return c;
    const made = this.compile(id);
    if (made !== undefined) this.compiled.set(id, made);
    return made;
  }

  /** Every object's view, each built (for tests and tools: it builds them all). */
  *values(): IterableIterator<V> {
    for (const id of [...this.ids()]) {
      const c = this.get(id);
      if (c !== undefined) yield c;
    }
  }

  /** Views built so far (the rest are built on first use). */
  get compiledCount(): number {
    return this.compiled.size;
  }

  isCompiled(id: string): boolean {
    return this.compiled.has(id);
  }

  /** Forgets a view: a change touched what it was built from. */
  drop(id: string): void {
    this.compiled.delete(id);
  }
}

/** The compiled chains by id (LazyTable). */
export type ChainTable = LazyTable<ChainView>;

export interface IpGroupView {
  readonly tag: Tag;
  readonly v4: ReadonlySet<number>;
  readonly v4Cidrs: readonly Cidr4[];
  readonly v6: readonly Cidr6[];
}

/** What a group without addresses holds: shared, never written (add() replaces them first). */
const NO_V4: ReadonlySet<number> = new Set<number>();
const NO_CIDRS: never[] = Object.freeze([]) as unknown as never[];

/**
 * The addresses of one address group: its own plus every member's, each counted (two ports may
 * hold one address), so a member joining or leaving costs its own addresses, not the group's.
 * A site has a group per security group and most hold no address an agent sees (the benchmark's
 * 10k-port site: 12k groups, one with 10k members): the tag is made on first use, and the tables
 * when first read — until then the address lists added are only kept (`pending`), so a snapshot
 * parses no group address that no rule of a compiled chain asks about.
 */
class IpGroupAddresses implements IpGroupView {
  private tagObj: Tag | undefined;
  private v4Set = NO_V4 as Set<number>;
  private cidrs4: Cidr4[] = NO_CIDRS;
  private cidrs6: Cidr6[] = NO_CIDRS;
  /** The group object's own addresses (undefined: no such object, rules naming it match nothing). */
  own: string[] | undefined;
  /** Member ids (undefined: none yet). */
  private memberIds: Set<string> | undefined;
  /** How many of own + members hold each address, by v4 number or a key string (once built). */
  private counts: Map<number | string, number> | undefined;
  /**
   * Address lists added before the tables were first read (undefined once they are built; the
   * shared empty list until the first is added: most groups never get one).
   */
  private pending: (readonly string[])[] | undefined = NO_CIDRS;

  constructor(readonly id: string) {}

  get tag(): Tag {
    this.tagObj ??= new Tag(tag.ipGroup(this.id));
    return this.tagObj;
  }

  get v4(): ReadonlySet<number> {
    if (this.pending !== undefined) this.build();
    return this.v4Set;
  }

  get v4Cidrs(): readonly Cidr4[] {
    if (this.pending !== undefined) this.build();
    return this.cidrs4;
  }

  get v6(): readonly Cidr6[] {
    if (this.pending !== undefined) this.build();
    return this.cidrs6;
  }

  get empty(): boolean {
    return this.own === undefined && (this.memberIds === undefined || this.memberIds.size === 0);
  }

  addMember(id: string): void {
    this.memberIds ??= new Set();
    this.memberIds.add(id);
  }

  removeMember(id: string): void {
    this.memberIds?.delete(id);
  }

  add(addresses: readonly string[]): void {
    if (addresses.length === 0) return;
    if (this.pending === undefined) this.count(addresses);
    else if (this.pending === NO_CIDRS) this.pending = [addresses];
    else this.pending.push(addresses);
  }

  remove(addresses: readonly string[]): void {
    if (addresses.length === 0) return;
    // Built first (a removal is incremental against the counts, never a search of `pending`).
    if (this.pending !== undefined) this.build();
    const counts = this.counts;
    if (counts === undefined) return;
    for (const a of addresses) {
      const p = parseGroupAddress(a);
      if (!p) continue;
      const n = counts.get(p.key) ?? 0;
      if (n > 1) {
        counts.set(p.key, n - 1);
        continue;
      }
      if (n === 0) continue;
      counts.delete(p.key);
      if (p.v4 !== undefined) this.v4Set.delete(p.v4);
      else if (p.cidr4) removeWhere(this.cidrs4, (c) => c.addr === p.cidr4!.addr && c.len === p.cidr4!.len);
      else if (p.cidr6) removeWhere(this.cidrs6, (c) => cidr6Key(c) === p.key);
    }
  }

  /** Counts every address list added so far into the tables. */
  private build(): void {
    const lists = this.pending!;
    this.pending = undefined;
    for (const l of lists) this.count(l);
  }

  private count(addresses: readonly string[]): void {
    for (const a of addresses) {
      const p = parseGroupAddress(a);
      if (!p) continue;
      this.counts ??= new Map();
      const n = this.counts.get(p.key) ?? 0;
      this.counts.set(p.key, n + 1);
      if (n > 0) continue;
      if (p.v4 !== undefined) {
        if (this.v4Set === NO_V4) this.v4Set = new Set();
        this.v4Set.add(p.v4);
      } else if (p.cidr4) {
        if (this.cidrs4 === NO_CIDRS) this.cidrs4 = [];
        this.cidrs4.push(p.cidr4);
      } else if (p.cidr6) {
        if (this.cidrs6 === NO_CIDRS) this.cidrs6 = [];
        this.cidrs6.push(p.cidr6);
      }
    }
  }
}

function removeWhere<T>(xs: T[], f: (x: T) => boolean): void {
  const i = xs.findIndex(f);
  if (i >= 0) xs.splice(i, 1);
}

const cidr6Key = (c: Cidr6): string => `6/${formatIp6(c.addr)}/${c.len}`;

/** One address of a group, parsed, with a key equal for equal addresses however written. */
function parseGroupAddress(
  a: string,
): { key: number | string; v4?: number; cidr4?: Cidr4; cidr6?: Cidr6 } | undefined {
  if (a.includes(":")) {
    const c = parseCidr6(a);
    return c ? { key: cidr6Key(c), cidr6: c } : undefined;
  }
  const c = parseCidr4(a);
  if (!c) return undefined;
  // A host address is its own key (a number: no string made per address).
  if (c.len === 32) return { key: c.addr, v4: c.addr };
  return { key: `4/${c.addr}/${c.len}`, cidr4: c };
}

export interface PortGroupView {
  readonly tag: Tag;
  readonly ports: Set<string>;
}

/** Tags naming topology objects (see docs/simulation.md for the full list). */
/** Where tags go when nobody needs them. */
const NO_TAGS = { add: (_tag: string) => undefined };

export const tag = {
  device: (id: string) => `device:${id}`,
  port: (id: string) => `port:${id}`,
  chain: (id: string) => `chain:${id}`,
  rule: (id: string) => `rule:${id}`,
  route: (id: string) => `route:${id}`,
  noRoute: (routerId: string) => `noroute:${routerId}`,
  flood: (bridgeId: string) => `flood:${bridgeId}`,
  mac: (bridgeId: string, mac: number) => `mac:${bridgeId}:${formatMac(mac)}`,
  arp: (deviceId: string, ip: number) => `arp:${deviceId}:${formatIp4(ip)}`,
  host: (id: string) => `host:${id}`,
  ipGroup: (id: string) => `ipgroup:${id}`,
  portGroup: (id: string) => `portgroup:${id}`,
  gateway: (site: string) => `gateway:${site}`,
  ct: (key: string) => `ct:${key}`,
  nat: (key: string) => `nat:${key}`,
} as const;

/**
 * A port as the simulation reads it. Its tag, its `output` action, its MAC and its addresses are
 * made when first used: a snapshot holds every port of the site (13k in the benchmark's) and a
 * host's flows reach few (a bridge reads its ports' when it is built, on first use too).
 */
class PortViewObj implements PortView {
  readonly id: string;
  readonly type: topologypb.PortType;
  readonly deviceId: string;
  readonly exterior: boolean;
  readonly up: boolean;
  private tagObj: Tag | undefined;
  private outputObj: OutputAction | undefined;
  private macNum = -1;
  private ips4List: PortView["ips4"] | undefined;
  private ips6List: PortView["ips6"] | undefined;

  constructor(readonly raw: Port) {
    this.id = raw.id;
    this.type = raw.type;
    this.deviceId = raw.deviceId;
    this.exterior =
      raw.type === PT.PORT_TYPE_VM ||
      raw.type === PT.PORT_TYPE_ROUTER_UPLINK ||
      raw.type === PT.PORT_TYPE_REMOTE_SITE;
    this.up = raw.adminStateUp;
  }

  get tag(): Tag {
    this.tagObj ??= new Tag(tag.port(this.id));
    return this.tagObj;
  }

  get output(): OutputAction {
    this.outputObj ??= Object.freeze({ kind: "output", portId: this.id }) as OutputAction;
    return this.outputObj;
  }

  /** The MAC as a number (0 when it does not parse). */
  get mac(): number {
    if (this.macNum < 0) this.macNum = Math.max(parseMac(this.raw.mac), 0);
    return this.macNum;
  }

  get ips4(): PortView["ips4"] {
    if (this.ips4List === undefined) this.parseIps();
    return this.ips4List!;
  }

  get ips6(): PortView["ips6"] {
    if (this.ips6List === undefined) this.parseIps();
    return this.ips6List!;
  }

  private parseIps(): void {
    const ips4: PortView["ips4"] = [];
    const ips6: PortView["ips6"] = [];
    for (const s of this.raw.ips) {
      if (s.includes(":")) {
        const c = parseCidr6(s.includes("/") ? s : `${s}/128`);
        const bare = parseCidr6(s.split("/")[0]!);
        if (c && bare) ips6.push({ ip: bare.addr, cidr: c });
      } else {
        const c = parseCidr4(s);
        // A host address is its own prefix; otherwise the address before the prefix length.
        const ip = c === null ? -1 : c.len === 32 ? c.addr : parseIp4(s.slice(0, s.indexOf("/")));
        if (c && ip >= 0) ips4.push({ ip, cidr: c });
      }
    }
    this.ips4List = ips4;
    this.ips6List = ips6;
  }
}

export class TopologyView {
  readonly hosts = new Map<string, Host>();
  readonly hostTags = new Map<string, Tag>();
  readonly ports = new Map<string, PortView>();
  /** Bridges by id, each built when first looked up (a host's flows cross few of a site's). */
  readonly bridges: LazyTable<BridgeView> = new LazyTable(
    (id) => this.buildBridge(id),
    () => this.rawBridges.keys(),
  );
  readonly routers = new Map<string, RouterView>();
  /** Chains by id, compiled on first lookup (see ChainTable). */
  readonly chains: ChainTable = new LazyTable(
    (id) => this.compileChain(id),
    () => this.rawChains.keys(),
  );
  readonly ipGroups = new Map<string, IpGroupView>();
  readonly portGroups = new Map<string, PortGroupView>();
  readonly remoteGateways = new Map<string, topologypb.RemoteGateway>();
  /** Site-local tunnel key → port; global key → bridge. */
  readonly portsByKey = new Map<number, PortView>();
  /** Global key → bridge id (bridgeByKey gives the bridge). */
  private readonly bridgeIdsByKey = new Map<number, string>();
  revision = 0;

  // Raw objects and reverse indexes, kept to rebuild derived views.
  private readonly rawBridges = new Map<string, topologypb.Bridge>();
  private readonly rawRouters = new Map<string, topologypb.Router>();
  private readonly rawChains = new Map<string, topologypb.Chain>();
  private readonly rawRules = new Map<string, topologypb.Rule>();
  private readonly rawRoutes = new Map<string, Route>();
  private readonly rawMacs = new Map<string, topologypb.MacEntry>();
  private readonly rawArps = new Map<string, topologypb.ArpEntry>();
  private readonly rawGateways = new Map<string, topologypb.RemoteGateway>();
  /** Address groups by id (their own addresses and their members'); in ipGroups while the group exists. */
  private readonly groupAddresses = new Map<string, IpGroupAddresses>();
  private readonly rawMembers = new Map<string, topologypb.IpAddrGroupMember>();
  private readonly portsByDevice = new Map<string, Set<string>>();
  /**
   * Each chain's rules: every current rule once, plus entries that went stale since (replaced or
   * deleted; counted in staleRules, dropped when the chain is next compiled or when they are
   * many). A list, not a set per chain: a snapshot files ~150k rules under ~14k chains.
   */
  private readonly rulesByChain = new Map<string, topologypb.Rule[]>();
  private readonly staleRules = new Map<string, number>();
  private readonly routesByRouter = new Map<string, Set<string>>();
  private readonly macsByBridge = new Map<string, Set<string>>();
  private readonly arpsByBridge = new Map<string, Set<string>>();

  /**
   * The snapshot's packed rules (the view takes them over: it retires those changes replace or
   * delete); rules from changes, and any in `objects`, are in rawRules, and one there retires a
   * packed rule with its id.
   */
  private readonly packed: PackedRules | undefined;

  constructor(objects: topologypb.TopologyObject[] = [], revision = 0, packedRules?: PackedRules) {
    this.packed = packedRules;
    // A new view has no flows to invalidate: its tags are not collected (for a snapshot of a
    // large site that is hundreds of thousands of strings hashed into a set, then dropped).
    this.update({ revision, upserts: objects, deletes: [] }, false);
  }

  /** Applies one change; returns the tags of flows that may now be stale. */
  apply(change: topologypb.TopologyChange): string[] {
    return this.update(change, true);
  }

  private update(change: topologypb.TopologyChange, collectTags: boolean): string[] {
    const tags: { add(tag: string): unknown } = collectTags ? new Set<string>() : NO_TAGS;
    const dirtyBridges = new Set<string>();
    const dirtyRouters = new Set<string>();
    const dirtyChains = new Set<string>();
    const keyedPorts: PortView[] = [];
    const dirtyDevice = (id: string) => {
      if (!id) return;
      if (this.rawBridges.has(id)) dirtyBridges.add(id);
      if (this.rawRouters.has(id)) dirtyRouters.add(id);
    };
    const index = (m: Map<string, Set<string>>, key: string, id: string, add: boolean) => {
      let s = m.get(key);
      if (!s) {
        if (!add) return;
        s = new Set();
        m.set(key, s);
      }
      if (add) s.add(id);
      else s.delete(id);
    };

    const portTouched = (p: Port) => {
      dirtyDevice(p.deviceId);
      // A bridge knows the MACs and IPs of the router ports peered with it.
      const peer = p.peerId ? this.ports.get(p.peerId) : undefined;
      if (peer) dirtyDevice(peer.deviceId);
      if (p.tunnelKey) this.portsByKey.delete(p.tunnelKey);
      if (!collectTags) return;
      tags.add(tag.port(p.id));
      tags.add(tag.flood(p.deviceId));
      const mac = parseMac(p.mac);
      if (mac >= 0) tags.add(tag.mac(p.deviceId, mac));
      for (const s of p.ips) {
        const ip = parseIp4(s.split("/")[0]!);
        if (ip >= 0) tags.add(tag.arp(p.deviceId, ip));
      }
      if (this.rawRouters.has(p.deviceId)) tags.add(tag.device(p.deviceId));
      if (peer) {
        if (mac >= 0) tags.add(tag.mac(peer.deviceId, mac));
        for (const s of p.ips) {
          const ip = parseIp4(s.split("/")[0]!);
          if (ip >= 0) tags.add(tag.arp(peer.deviceId, ip));
        }
      }
    };
    const routeTouched = (r: Route) => {
      tags.add(tag.route(r.id));
      tags.add(tag.noRoute(r.routerId));
      // Flows that took a route covering this prefix might take this one now.
      const dst = parseCidr4(r.dstPrefix);
      if (dst) {
        for (const id of this.routesByRouter.get(r.routerId) ?? []) {
          const other = this.rawRoutes.get(id);
          const od = other && parseCidr4(other.dstPrefix);
          if (od && od.len <= dst.len && (dst.addr & od.mask) >>> 0 === od.addr) tags.add(tag.route(id));
        }
      }
      dirtyRouters.add(r.routerId);
    };
    const ruleTouched = (id: string, chainId: string) => {
      // A new view has compiled no chain and has no flows: nothing to drop or name.
      if (!collectTags) return;
      tags.add(tag.rule(id));
      tags.add(tag.chain(chainId));
      dirtyChains.add(chainId);
    };
    /** The packed rule `id`, if current, is current no more (replaced or deleted). */
    const retirePacked = (id: string) => {
      const i = this.packed === undefined ? -1 : this.packed.find(id);
      if (i < 0) return;
      ruleTouched(id, this.packed!.chainOf(i));
      this.packed!.retire(i);
    };

    const remove = (kind: topologypb.TopologyKind, id: string) => {
      const K = topologypb.TopologyKind;
      switch (kind) {
        case K.TOPOLOGY_KIND_HOST:
          this.hosts.delete(id);
          this.hostTags.delete(id);
          if (collectTags) tags.add(tag.host(id));
          break;
        case K.TOPOLOGY_KIND_BRIDGE: {
          const b = this.rawBridges.get(id);
          if (b?.tunnelKey && this.bridgeIdsByKey.get(b.tunnelKey) === id)
            this.bridgeIdsByKey.delete(b.tunnelKey);
          this.rawBridges.delete(id);
          this.bridges.drop(id);
          tags.add(tag.device(id));
          tags.add(tag.flood(id));
          break;
        }
        case K.TOPOLOGY_KIND_ROUTER:
          this.rawRouters.delete(id);
          this.routers.delete(id);
          tags.add(tag.device(id));
          break;
        case K.TOPOLOGY_KIND_PORT: {
          const p = this.ports.get(id);
          if (!p) break;
          portTouched(p.raw);
          this.ports.delete(id);
          index(this.portsByDevice, p.deviceId, id, false);
          break;
        }
        case K.TOPOLOGY_KIND_ROUTE: {
          const r = this.rawRoutes.get(id);
          if (!r) break;
          routeTouched(r);
          this.rawRoutes.delete(id);
          index(this.routesByRouter, r.routerId, id, false);
          break;
        }
        case K.TOPOLOGY_KIND_CHAIN:
          this.rawChains.delete(id);
          if (collectTags) tags.add(tag.chain(id));
          dirtyChains.add(id);
          break;
        case K.TOPOLOGY_KIND_RULE: {
          const r = this.rawRules.get(id);
          if (!r) {
            retirePacked(id);
            break;
          }
          ruleTouched(r.id, r.chainId);
          this.rawRules.delete(id);
          this.retireRule(r);
          break;
        }
        case K.TOPOLOGY_KIND_IP_ADDR_GROUP: {
          this.ipGroups.delete(id);
          if (collectTags) tags.add(tag.ipGroup(id));
          const g = this.groupAddresses.get(id);
          if (!g?.own) break;
          g.remove(g.own);
          g.own = undefined;
          if (g.empty) this.groupAddresses.delete(id);
          break;
        }
        case K.TOPOLOGY_KIND_IP_ADDR_GROUP_MEMBER: {
          const m = this.rawMembers.get(id);
          if (!m) break;
          this.rawMembers.delete(id);
          if (collectTags) tags.add(tag.ipGroup(m.groupId));
          const g = this.groupAddresses.get(m.groupId);
          if (!g) break;
          g.remove(m.addresses);
          g.removeMember(id);
          if (g.empty) this.groupAddresses.delete(m.groupId);
          break;
        }
        case K.TOPOLOGY_KIND_PORT_GROUP:
          this.portGroups.delete(id);
          if (collectTags) tags.add(tag.portGroup(id));
          break;
        case K.TOPOLOGY_KIND_MAC_ENTRY: {
          const e = this.rawMacs.get(id);
          if (!e) break;
          const mac = parseMac(e.mac);
          if (mac >= 0) tags.add(tag.mac(e.bridgeId, mac));
          this.rawMacs.delete(id);
          index(this.macsByBridge, e.bridgeId, id, false);
          dirtyBridges.add(e.bridgeId);
          break;
        }
        case K.TOPOLOGY_KIND_ARP_ENTRY: {
          const e = this.rawArps.get(id);
          if (!e) break;
          const ip = parseIp4(e.ip);
          if (ip >= 0) tags.add(tag.arp(e.bridgeId, ip));
          this.rawArps.delete(id);
          index(this.arpsByBridge, e.bridgeId, id, false);
          dirtyBridges.add(e.bridgeId);
          break;
        }
        case K.TOPOLOGY_KIND_REMOTE_GATEWAY: {
          const g = this.rawGateways.get(id);
          if (!g) break;
          tags.add(tag.gateway(g.site));
          this.rawGateways.delete(id);
          this.remoteGateways.delete(g.site);
          break;
        }
        default:
          throw new Error(`TopologyView: cannot delete object of unknown kind ${kind} (id ${id})`);
      }
    };

    for (const ref of change.deletes) remove(ref.kind, ref.id);
    const K = topologypb.TopologyKind;
    for (const o of change.upserts) {
      // Rules first: most of a snapshot's objects are rules.
      if (o.rule) {
        const r = o.rule;
        const old = this.rawRules.get(r.id);
        if (old !== r) {
          this.rawRules.set(r.id, r);
          if (old !== undefined) {
            ruleTouched(old.id, old.chainId);
            this.retireRule(old);
          } else retirePacked(r.id);
          const list = this.rulesByChain.get(r.chainId);
          if (list === undefined) this.rulesByChain.set(r.chainId, [r]);
          else list.push(r);
        }
        ruleTouched(r.id, r.chainId);
      } else if (o.host) {
        this.hosts.set(o.host.id, o.host);
        this.hostTags.set(o.host.id, new Tag(tag.host(o.host.id)));
        if (collectTags) tags.add(tag.host(o.host.id));
      } else if (o.bridge) {
        remove(K.TOPOLOGY_KIND_BRIDGE, o.bridge.id);
        this.rawBridges.set(o.bridge.id, o.bridge);
        if (o.bridge.tunnelKey) this.bridgeIdsByKey.set(o.bridge.tunnelKey, o.bridge.id);
        dirtyBridges.add(o.bridge.id);
        for (const pid of this.portsByDevice.get(o.bridge.id) ?? []) {
          const peer = this.ports.get(this.ports.get(pid)?.raw.peerId ?? "");
          if (peer) dirtyDevice(peer.deviceId);
        }
      } else if (o.router) {
        remove(K.TOPOLOGY_KIND_ROUTER, o.router.id);
        this.rawRouters.set(o.router.id, o.router);
        dirtyRouters.add(o.router.id);
      } else if (o.port) {
        remove(K.TOPOLOGY_KIND_PORT, o.port.id);
        const v: PortView = new PortViewObj(o.port);
        this.ports.set(v.id, v);
        if (v.raw.tunnelKey) keyedPorts.push(v);
        index(this.portsByDevice, v.deviceId, v.id, true);
        portTouched(o.port);
      } else if (o.route) {
        remove(K.TOPOLOGY_KIND_ROUTE, o.route.id);
        this.rawRoutes.set(o.route.id, o.route);
        index(this.routesByRouter, o.route.routerId, o.route.id, true);
        routeTouched(o.route);
      } else if (o.chain) {
        this.rawChains.set(o.chain.id, o.chain);
        // A new view (no tags collected) has compiled no chain: nothing to drop.
        if (collectTags) {
          tags.add(tag.chain(o.chain.id));
          dirtyChains.add(o.chain.id);
        }
      } else if (o.ipAddrGroup) {
        remove(K.TOPOLOGY_KIND_IP_ADDR_GROUP, o.ipAddrGroup.id);
        const g = this.addressesOf(o.ipAddrGroup.id);
        g.own = o.ipAddrGroup.addresses;
        g.add(g.own);
        this.ipGroups.set(o.ipAddrGroup.id, g);
        if (collectTags) tags.add(tag.ipGroup(o.ipAddrGroup.id));
      } else if (o.ipAddrGroupMember) {
        const m = o.ipAddrGroupMember;
        remove(K.TOPOLOGY_KIND_IP_ADDR_GROUP_MEMBER, m.id);
        this.rawMembers.set(m.id, m);
        const g = this.addressesOf(m.groupId);
        g.addMember(m.id);
        g.add(m.addresses);
        if (collectTags) tags.add(tag.ipGroup(m.groupId));
      } else if (o.portGroup) {
        this.portGroups.set(o.portGroup.id, {
          tag: new Tag(tag.portGroup(o.portGroup.id)),
          ports: new Set(o.portGroup.portIds),
        });
        if (collectTags) tags.add(tag.portGroup(o.portGroup.id));
      } else if (o.macEntry) {
        remove(K.TOPOLOGY_KIND_MAC_ENTRY, o.macEntry.id);
        this.rawMacs.set(o.macEntry.id, o.macEntry);
        index(this.macsByBridge, o.macEntry.bridgeId, o.macEntry.id, true);
        if (collectTags) {
          const mac = parseMac(o.macEntry.mac);
          if (mac >= 0) tags.add(tag.mac(o.macEntry.bridgeId, mac));
        }
        dirtyBridges.add(o.macEntry.bridgeId);
      } else if (o.arpEntry) {
        remove(K.TOPOLOGY_KIND_ARP_ENTRY, o.arpEntry.id);
        this.rawArps.set(o.arpEntry.id, o.arpEntry);
        index(this.arpsByBridge, o.arpEntry.bridgeId, o.arpEntry.id, true);
        if (collectTags) {
          const ip = parseIp4(o.arpEntry.ip);
          if (ip >= 0) tags.add(tag.arp(o.arpEntry.bridgeId, ip));
        }
        dirtyBridges.add(o.arpEntry.bridgeId);
      } else if (o.remoteGateway) {
        remove(K.TOPOLOGY_KIND_REMOTE_GATEWAY, o.remoteGateway.id);
        this.rawGateways.set(o.remoteGateway.id, o.remoteGateway);
        this.remoteGateways.set(o.remoteGateway.site, o.remoteGateway);
        tags.add(tag.gateway(o.remoteGateway.site));
      } else {
        throw new Error("TopologyView: upsert carries no object");
      }
    }

    // Keys of the ports this change wrote (portTouched dropped the keys of the ports it touched);
    // a change costs what it touches, not a walk over every port of the site.
    for (const v of keyedPorts) if (this.ports.get(v.id) === v) this.portsByKey.set(v.raw.tunnelKey, v);
    // Built again when next looked up, as chains are.
    for (const id of dirtyBridges) this.bridges.drop(id);
    for (const id of dirtyRouters) this.rebuildRouter(id);
    // Compiled again when next looked up (an agent compiles only the chains its flows cross).
    for (const id of dirtyChains) this.chains.drop(id);
    if (change.revision > this.revision) this.revision = change.revision;
    return collectTags ? [...(tags as Set<string>)] : [];
  }

  /** The address group `id`, created (holding nothing) when absent. */
  private addressesOf(id: string): IpGroupAddresses {
    let g = this.groupAddresses.get(id);
    if (!g) {
      g = new IpGroupAddresses(id);
      this.groupAddresses.set(id, g);
    }
    return g;
  }

  private devicePorts(id: string): PortView[] {
    const out: PortView[] = [];
    for (const pid of this.portsByDevice.get(id) ?? []) {
      const p = this.ports.get(pid);
      if (p) out.push(p);
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** The bridge carrying global tunnel key `key`, or undefined. */
  bridgeByKey(key: number): BridgeView | undefined {
    const id = this.bridgeIdsByKey.get(key);
    return id === undefined ? undefined : this.bridges.get(id);
  }

  /** The bridge `id` built from its ports, MAC and ARP entries as they are now; undefined when there is none. */
  private buildBridge(id: string): BridgeView | undefined {
    const raw = this.rawBridges.get(id);
    if (!raw) return undefined;
    const ports = this.devicePorts(id);
    const staticMacs = new Map<number, Map<number, PortView>>();
    const put = (vlan: number, mac: number, p: PortView) => {
      let m = staticMacs.get(vlan);
      if (!m) {
        m = new Map();
        staticMacs.set(vlan, m);
      }
      m.set(mac, p);
    };
    const arp = new Map<number, number>();
    const nd = new Map<string, number>();
    const remoteSitePorts = new Map<string, PortView>();
    for (const p of ports) {
      if (p.type === PT.PORT_TYPE_VM && p.mac) {
        put(p.raw.vlan, p.mac, p);
        for (const a of p.ips4) arp.set(a.ip, p.mac);
        for (const a of p.ips6) nd.set(formatIp6(a.ip), p.mac);
      }
      if (p.type === PT.PORT_TYPE_BRIDGE_ROUTER) {
        const peer = this.ports.get(p.raw.peerId);
        if (peer?.mac) {
          put(p.raw.vlan, peer.mac, p);
          for (const a of peer.ips4) arp.set(a.ip, peer.mac);
          for (const a of peer.ips6) nd.set(formatIp6(a.ip), peer.mac);
        }
      }
      if (p.type === PT.PORT_TYPE_REMOTE_SITE) remoteSitePorts.set(p.raw.remoteSite, p);
    }
    for (const eid of this.macsByBridge.get(id) ?? []) {
      const e = this.rawMacs.get(eid);
      const p = e && this.ports.get(e.portId);
      const mac = e ? parseMac(e.mac) : -1;
      if (e && p && mac >= 0) put(e.vlan, mac, p);
    }
    for (const eid of this.arpsByBridge.get(id) ?? []) {
      const e = this.rawArps.get(eid);
      if (!e) continue;
      const mac = parseMac(e.mac);
      if (mac < 0) continue;
      if (e.ip.includes(":")) {
        const c = parseCidr6(e.ip);
        if (c) nd.set(formatIp6(c.addr), mac);
      } else {
        const ip = parseIp4(e.ip);
        if (ip >= 0) arp.set(ip, mac);
      }
    }
    return {
      id,
      tag: new Tag(tag.device(id)),
      floodTag: new Tag(tag.flood(id)),
      raw,
      ports,
      exteriorPorts: ports.filter((p) => p.exterior),
      staticMacs,
      arp,
      nd,
      remoteSitePorts,
      macTags: new TagCache((mac) => tag.mac(id, mac)),
      arpTags: new TagCache((ip) => tag.arp(id, ip)),
    };
  }

  private rebuildRouter(id: string): void {
    const raw = this.rawRouters.get(id);
    if (!raw) {
      this.routers.delete(id);
      return;
    }
    const ports = this.devicePorts(id);
    const portIps = new Map<number, PortView>();
    for (const p of ports) for (const a of p.ips4) portIps.set(a.ip, p);
    const trie = new LpmTrie<RouteView>();
    const badRoutes: RouterView["badRoutes"] = [];
    for (const rid of this.routesByRouter.get(id) ?? []) {
      const r = this.rawRoutes.get(rid);
      if (!r) continue;
      const dst = parseCidr4(r.dstPrefix);
      const src = parseCidr4(r.srcPrefix || "0.0.0.0/0");
      const gw = r.nextHopGateway ? parseIp4(r.nextHopGateway) : -1;
      if (!dst || !src || (r.nextHopGateway && gw < 0)) {
        badRoutes.push({ id: rid, why: `route ${rid}: bad prefix or gateway` });
        continue;
      }
      trie.insert({
        id: rid,
        tag: new Tag(tag.route(rid)),
        raw: r,
        dst,
        src,
        weight: r.weight,
        type: r.type,
        nextHopPort: r.nextHopPortId,
        gateway: gw,
      });
    }
    this.routers.set(id, {
      id,
      tag: new Tag(tag.device(id)),
      noRouteTag: new Tag(tag.noRoute(id)),
      raw,
      ports,
      portIps,
      portIpList: [...portIps.keys()],
      trie,
      badRoutes,
      arpTags: new TagCache((ip) => tag.arp(id, ip)),
    });
  }

  /** A rule is no longer current (replaced or deleted, rawRules already says so): its entry is stale. */
  private retireRule(r: topologypb.Rule): void {
    const n = (this.staleRules.get(r.chainId) ?? 0) + 1;
    this.staleRules.set(r.chainId, n);
    const list = this.rulesByChain.get(r.chainId);
    // Bounded: stale entries never outnumber the current ones by much.
    if (list !== undefined && n > 16 && 2 * n > list.length) this.currentRules(r.chainId);
  }

  /** The chain's current rules, each once: its packed ones (decoded now) and those from changes. */
  private chainRules(chainId: string): topologypb.Rule[] {
    const list = this.currentRules(chainId);
    const packed = this.packed?.rulesOf(chainId);
    if (packed === undefined || packed.length === 0) return list;
    const all = list.slice();
    for (const i of packed) all.push(this.packed!.rule(i));
    return all;
  }

  /** The chain's current rules from changes, each once; drops its stale entries first if it has any. */
  private currentRules(chainId: string): topologypb.Rule[] {
    const list = this.rulesByChain.get(chainId);
    if (list === undefined) return [];
    if (!this.staleRules.has(chainId)) return list;
    this.staleRules.delete(chainId);
    // Current = what rawRules holds under its id; an object made current twice is listed twice.
    const seen = new Set<topologypb.Rule>();
    const current: topologypb.Rule[] = [];
    for (const r of list) {
      if (this.rawRules.get(r.id) !== r || seen.has(r)) continue;
      seen.add(r);
      current.push(r);
    }
    if (current.length === 0) this.rulesByChain.delete(chainId);
    else this.rulesByChain.set(chainId, current);
    return current;
  }

  /** The chain `id` compiled from its rules as they are now; undefined when there is no such chain. */
  private compileChain(id: string): ChainView | undefined {
    if (!this.rawChains.has(id)) return undefined;
    const rules: CompiledRule[] = [];
    for (const r of this.chainRules(id)) rules.push(compileRule(r));
    rules.sort((a, b) => a.position - b.position || (a.id < b.id ? -1 : 1));
    for (let i = 0; i < rules.length; i++) rules[i]!.index = i;
    return { id, tag: new Tag(tag.chain(id)), rules, runs: indexRules(rules) };
  }
}
