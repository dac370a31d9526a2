// The agent's local read-only copy of the parts of its site's topology (isthmus.topology.v1) the
// agent reads itself — hosts, bridges, ports, remote gateways, MAC entries, address-group members —
// kept from the controller's Watch stream: a snapshot, then ordered changes. Each applied change
// reports the ids it touched so the flows tagged with them can be invalidated. Rules, chains,
// routes and the other kinds only the simulation reads live in the simulator's TopologyView alone
// (agent-topology.ts keeps both): indexing ~150k rules twice was a fifth of an agent's first snapshot.
import { topologypb } from "@isthmus/schema";
import { objectTag } from "./tags.js";

type Obj = topologypb.TopologyObject;
type Kind = Exclude<keyof Obj, never>;

const KIND_BY_ENUM: Record<number, Kind> = {
  [topologypb.TopologyKind.TOPOLOGY_KIND_HOST]: "host",
  [topologypb.TopologyKind.TOPOLOGY_KIND_BRIDGE]: "bridge",
  [topologypb.TopologyKind.TOPOLOGY_KIND_ROUTER]: "router",
  [topologypb.TopologyKind.TOPOLOGY_KIND_PORT]: "port",
  [topologypb.TopologyKind.TOPOLOGY_KIND_ROUTE]: "route",
  [topologypb.TopologyKind.TOPOLOGY_KIND_CHAIN]: "chain",
  [topologypb.TopologyKind.TOPOLOGY_KIND_RULE]: "rule",
  [topologypb.TopologyKind.TOPOLOGY_KIND_IP_ADDR_GROUP]: "ipAddrGroup",
  [topologypb.TopologyKind.TOPOLOGY_KIND_PORT_GROUP]: "portGroup",
  [topologypb.TopologyKind.TOPOLOGY_KIND_MAC_ENTRY]: "macEntry",
  [topologypb.TopologyKind.TOPOLOGY_KIND_ARP_ENTRY]: "arpEntry",
  [topologypb.TopologyKind.TOPOLOGY_KIND_REMOTE_GATEWAY]: "remoteGateway",
  [topologypb.TopologyKind.TOPOLOGY_KIND_IP_ADDR_GROUP_MEMBER]: "ipAddrGroupMember",
};

/**
 * The object's kind. Named property reads, not `o[k]` over KINDS: a snapshot is hundreds of
 * thousands of objects, and a keyed read with a varying key is several times slower.
 */
export function objectKind(o: Obj): Kind | undefined {
  if (o.rule !== undefined) return "rule";
  if (o.port !== undefined) return "port";
  if (o.chain !== undefined) return "chain";
  if (o.macEntry !== undefined) return "macEntry";
  if (o.arpEntry !== undefined) return "arpEntry";
  if (o.route !== undefined) return "route";
  if (o.ipAddrGroupMember !== undefined) return "ipAddrGroupMember";
  if (o.ipAddrGroup !== undefined) return "ipAddrGroup";
  if (o.portGroup !== undefined) return "portGroup";
  if (o.bridge !== undefined) return "bridge";
  if (o.router !== undefined) return "router";
  if (o.host !== undefined) return "host";
  if (o.remoteGateway !== undefined) return "remoteGateway";
  return undefined;
}

export function objectId(o: Obj): string {
  const k = objectKind(o);
  return k ? (o[k] as { id: string }).id : "";
}

function put<V>(map: Map<string, V>, id: string, value: V, kind: Kind): string {
  if (id === "") throw new Error(`topology ${kind} without an id`);
  map.set(id, value);
  return id;
}

/** A kind the store does not keep: only checked (and named in the change's tags). */
function seen(id: string, kind: Kind): string {
  if (id === "") throw new Error(`topology ${kind} without an id`);
  return id;
}

export class TopologyStore {
  readonly hosts = new Map<string, topologypb.Host>();
  readonly bridges = new Map<string, topologypb.Bridge>();
  readonly ports = new Map<string, topologypb.Port>();
  readonly remoteGateways = new Map<string, topologypb.RemoteGateway>();
  readonly macEntries = new Map<string, topologypb.MacEntry>();
  /** Address-group members by id (a change to one names its group's flows, even when deleted). */
  readonly addrGroupMembers = new Map<string, topologypb.IpAddrGroupMember>();
  revision = 0;
  /** Whether a snapshot has been applied (before it, the agent cannot simulate). */
  ready = false;

  /** Replaces everything with a snapshot. */
  applySnapshot(s: topologypb.TopologySnapshot): void {
    this.hosts.clear();
    this.bridges.clear();
    this.ports.clear();
    this.remoteGateways.clear();
    this.macEntries.clear();
    this.addrGroupMembers.clear();
    for (const o of s.objects) this.upsert(o);
    this.revision = s.revision;
    this.ready = true;
  }

  /** Applies one change in order; returns tags naming what it touched. Out-of-order changes are an error. */
  applyChange(c: topologypb.TopologyChange): Set<string> {
    if (!this.ready) throw new Error(`topology change ${c.revision} before any snapshot`);
    if (c.revision <= this.revision) {
      throw new Error(`topology change ${c.revision} is not after revision ${this.revision}`);
    }
    const touched = new Set<string>();
    // A member joining, leaving or changing changes what its group matches: its group's tag.
    const memberTouched = (m: topologypb.IpAddrGroupMember | undefined) => {
      if (m) touched.add(objectTag("ipAddrGroup", m.groupId));
    };
    for (const o of c.upserts) {
      if (o.ipAddrGroupMember) memberTouched(this.addrGroupMembers.get(o.ipAddrGroupMember.id));
      touched.add(objectTag(objectKind(o) ?? "", this.upsert(o)));
      memberTouched(o.ipAddrGroupMember);
    }
    for (const d of c.deletes) {
      const kind = KIND_BY_ENUM[d.kind];
      if (!kind) throw new Error(`topology change ${c.revision}: delete of unknown kind ${d.kind}`);
      if (kind === "ipAddrGroupMember") memberTouched(this.addrGroupMembers.get(d.id));
      this.remove(kind, d.id);
      touched.add(objectTag(kind, d.id));
    }
    this.revision = c.revision;
    return touched;
  }

  /**
   * Named reads in objectKind's order (a snapshot is hundreds of thousands of objects: a keyed read
   * `o[kind]` and a switch on the kind's name cost more than the map insertion).
   */
  private upsert(o: Obj): string {
    if (o.rule !== undefined) return seen(o.rule.id, "rule");
    if (o.port !== undefined) return put(this.ports, o.port.id, o.port, "port");
    if (o.chain !== undefined) return seen(o.chain.id, "chain");
    if (o.macEntry !== undefined) return put(this.macEntries, o.macEntry.id, o.macEntry, "macEntry");
    if (o.arpEntry !== undefined) return seen(o.arpEntry.id, "arpEntry");
    if (o.route !== undefined) return seen(o.route.id, "route");
    if (o.ipAddrGroupMember !== undefined) {
      return put(this.addrGroupMembers, o.ipAddrGroupMember.id, o.ipAddrGroupMember, "ipAddrGroupMember");
    }
    if (o.ipAddrGroup !== undefined) return seen(o.ipAddrGroup.id, "ipAddrGroup");
    if (o.portGroup !== undefined) return seen(o.portGroup.id, "portGroup");
    if (o.bridge !== undefined) return put(this.bridges, o.bridge.id, o.bridge, "bridge");
    if (o.router !== undefined) return seen(o.router.id, "router");
    if (o.host !== undefined) return put(this.hosts, o.host.id, o.host, "host");
    if (o.remoteGateway !== undefined) {
      return put(this.remoteGateways, o.remoteGateway.id, o.remoteGateway, "remoteGateway");
    }
    throw new Error("topology object without a kind");
  }

  private remove(k: Kind, id: string): void {
    switch (k) {
      case "host":
        this.hosts.delete(id);
        break;
      case "bridge":
        this.bridges.delete(id);
        break;
      case "port":
        this.ports.delete(id);
        break;
      case "remoteGateway":
        this.remoteGateways.delete(id);
        break;
      case "macEntry":
        this.macEntries.delete(id);
        break;
      case "ipAddrGroupMember":
        this.addrGroupMembers.delete(id);
        break;
      default:
      // Not kept here (the simulator's view has it).
    }
  }

  /** Every object the store keeps (the kinds in its header). */
  objects(): Obj[] {
    const out: Obj[] = [];
    for (const host of this.hosts.values()) out.push({ host });
    for (const bridge of this.bridges.values()) out.push({ bridge });
    for (const port of this.ports.values()) out.push({ port });
    for (const remoteGateway of this.remoteGateways.values()) out.push({ remoteGateway });
    for (const macEntry of this.macEntries.values()) out.push({ macEntry });
    for (const ipAddrGroupMember of this.addrGroupMembers.values()) out.push({ ipAddrGroupMember });
    return out;
  }

  /** Exterior ports bound to this host. */
  portsOnHost(hostId: string): topologypb.Port[] {
    return [...this.ports.values()].filter((p) => p.hostId === hostId && p.interfaceName !== "");
  }

  gateways(): topologypb.Host[] {
    return [...this.hosts.values()].filter((h) => h.role === topologypb.HostRole.HOST_ROLE_GATEWAY);
  }
}
