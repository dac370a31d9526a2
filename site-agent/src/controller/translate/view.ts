// What the translation reads: a synchronous view of the site's copy of global intent plus the
// site-local objects (hosts, VM port bindings). The controller implements it over its in-memory
// index (IntentIndex is a ready one); translation never writes through it.
import {
  INTENT_KIND_KEYS,
  type IntentKindKey,
  type IntentKindMessages,
  type intentpb,
  type topologypb,
} from "@isthmus/schema";

/**
 * A VM port bound at this site (site-local API). Its id is also the id of the PortRecord the site
 * reports upward, so global objects (floating IPs) can name it.
 */
export interface LocalPortBinding {
  id: string;
  name: string;
  networkId: string;
  /** Host the port is bound to; empty = created but not bound yet. */
  hostId: string;
  /** Interface name on the host (TAP/veth). */
  interfaceName: string;
  mac: string;
  /** Plain addresses ("10.0.0.5", "2001:db8::5") the VM may use. */
  ips: string[];
  securityGroupIds: string[];
  /** Site-local tunnel key (0x000001–0x0FFFFF) naming the port; 0 = unassigned. */
  tunnelKey: number;
  /** Undefined = up. */
  adminStateUp?: boolean;
}

/**
 * A host registered at this site, as the translation needs it (topologypb.Host satisfies it).
 * `alive` undefined counts as alive.
 */
export interface LocalHost {
  id: string;
  name: string;
  tunnelIp: string;
  tunnelPort: number;
  role: topologypb.HostRole;
  alive?: boolean;
  wanIp: string;
  wanPort: number;
}

/**
 * Every kind of object the view holds, keyed like intentpb.IntentObject's oneof fields: the
 * intent kinds (the shared table in @isthmus/schema) plus the site-local ones.
 */
export interface ViewKinds extends IntentKindMessages {
  /** Site-local: VM port bindings. */
  localPort: LocalPortBinding;
  /** Site-local: hosts (including gateway hosts). */
  host: LocalHost;
}

export type ViewKind = keyof ViewKinds;
export type IntentKind = IntentKindKey;

export const INTENT_KINDS: readonly IntentKind[] = INTENT_KIND_KEYS;

/**
 * Lookups the translation needs. Everything is synchronous and must cost time proportional to the
 * size of its answer (the reverse lookups are indexes, not scans), so translating one change
 * costs time proportional to what the change touches, not to the size of the state.
 * Iteration order does not matter: the translation sorts what it emits.
 */
export interface IntentView {
  /** This site's name. */
  readonly site: string;
  get<K extends ViewKind>(kind: K, id: string): ViewKinds[K] | undefined;
  /** Every object of a kind (only translateAll lists whole kinds). */
  list<K extends ViewKind>(kind: K): Iterable<ViewKinds[K]>;
  routerInterfacesOfRouter(routerId: string): Iterable<intentpb.RouterInterface>;
  routerInterfacesOfNetwork(networkId: string): Iterable<intentpb.RouterInterface>;
  rulesOfGroup(securityGroupId: string): Iterable<intentpb.SecurityGroupRule>;
  /** PortRecords of every site that list the group (membership is federation-wide). */
  portRecordsOfGroup(securityGroupId: string): Iterable<intentpb.PortRecord>;
  portRecordsOfNetwork(networkId: string): Iterable<intentpb.PortRecord>;
  floatingIpsOfRouter(routerId: string): Iterable<intentpb.FloatingIP>;
  /** VM ports bound here whose groups are `setKey` (ids.securityGroupSetKey): a profile's users. */
  localPortsWithGroups(setKey: string): Iterable<LocalPortBinding>;
  /** Routers with an uplink at this site (their uplink ports follow the gateway host choice). */
  routersWithUplinkHere(): Iterable<intentpb.Router>;
  /** Local hosts in the gateway role (uplinks and remote-site ports are bound to one of them). */
  gatewayHosts(): Iterable<LocalHost>;
  /**
   * The site-local tunnel key the controller allocated for a derived exterior port (0 = none).
   * Today: each router's uplink port at this site, uplinkPortId(routerId, site). The controller
   * allocates it in the same transaction that gives the router an uplink here (before
   * translating) and keeps it unchanged while the uplink exists.
   */
  tunnelKeyOf(portId: string): number;
}

/** Local topology changes: objects to create or replace, and objects to remove. */
export interface TopologyDelta {
  upserts: topologypb.TopologyObject[];
  deletes: topologypb.TopologyRef[];
  /**
   * Parts of the input the translation skipped because they are invalid (a malformed CIDR, a
   * route whose next hop no interface reaches), one line each naming the object and field.
   * The rest of the change is translated; the skipped part is absent, never guessed.
   */
  problems: string[];
}

/** The id of any view object (intent objects carry it in meta). */
export function viewObjectId<K extends ViewKind>(kind: K, obj: ViewKinds[K]): string {
  if (kind === "localPort" || kind === "host") return (obj as { id: string }).id;
  return (obj as { meta?: intentpb.ObjectMeta }).meta?.id ?? "";
}
