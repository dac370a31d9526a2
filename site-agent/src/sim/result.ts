// What a simulation returns: the actions the datapath applies to this packet (and, when
// `cacheable`, to every packet its masked match covers), the tags the result depends on, state it
// created that the agent must propagate, and packets the simulation generated.
import type { FlowMask, FlowMatch } from "./flow-match.js";

/** Header rewrites relative to the ingress packet (only the fields that changed are present). */
export interface SetFieldsAction {
  kind: "set";
  ethSrc?: number;
  ethDst?: number;
  nwSrc?: number;
  nwDst?: number;
  tpSrc?: number;
  tpDst?: number;
  /** ICMP echo identifier (SNAT of an echo request, reverse SNAT of its reply). */
  icmpId?: number;
}
export interface DecTtlAction {
  kind: "decTtl";
  /** How many routers the packet crossed. */
  by: number;
}
/** Deliver to a port bound on this host. */
export interface OutputAction {
  kind: "output";
  portId: string;
}
/** VXLAN-encapsulate with `tunnelKey` and send to another host or gateway. */
export interface EncapAction {
  kind: "encap";
  tunnelKey: number;
  remoteIp: string;
  remotePort: number;
  /** The receiving host's id, or "site:<name>" for a remote site's gateway. */
  hostId: string;
}
export interface DropAction {
  kind: "drop";
  reason: string;
}
export type Action = SetFieldsAction | DecTtlAction | OutputAction | EncapAction | DropAction;

/** A packet the simulation created (ARP/ND reply, ICMP error or echo reply, TCP RST, ARP request),
 * already simulated: the datapath sends `frame` with `actions` and installs nothing for it. */
export interface GeneratedPacket {
  frame: Uint8Array;
  actions: Action[];
  why: string;
}

export interface ConntrackCommit {
  key: string;
  /** The device whose chains consulted conntrack (the entry's zone). */
  zoneId: string;
  expiresAt: number;
}

export interface NatCommit {
  /** "snat" | "dnat" */
  kind: "snat" | "dnat";
  /** Key of the forward tuple before translation. */
  key: string;
  /** Key the reverse translation looks up. */
  reverseKey: string;
  deviceId: string;
  origIp: number;
  origPort: number;
  natIp: number;
  natPort: number;
  expiresAt: number;
}

export interface LearnedMac {
  bridgeId: string;
  vlan: number;
  mac: number;
  portId: string;
}

/** A packet held while a router resolves a next hop; `resubmit` it when released. */
export interface ResubmitPacket {
  frame: Uint8Array;
  ingress: Ingress;
}

export type Ingress =
  | { portId: string }
  | {
      /** Tunnel key (VNI) the frame arrived with; the trace bit (0x800000) is ignored here. */
      tunnelKey: number;
      /** For global keys: the remote site whose gateway sent it (unset = a host of this site). */
      fromSite?: string;
    };

export interface TraceStep {
  kind: "device" | "port" | "chain" | "rule" | "route" | "conntrack" | "nat" | "arp" | "decision";
  id: string;
  detail: string;
}

export interface SimResult {
  actions: Action[];
  /** The ingress packet's match (original field values); `mask` says which fields matter. */
  match: FlowMatch;
  mask: FlowMask;
  /**
   * With F.NW_DST in `mask`: how many leading bits of the IPv4 destination the result depends on
   * (32 = the whole address; IPv6 destinations always count whole). A route lookup alone reads
   * only the prefix bits it examined, so one megaflow can cover a route's destinations.
   */
  dstBits: number;
  /** Tags of everything the result depends on, each once (see docs/simulation.md). */
  tags: string[];
  /** False when the result must not be installed as a flow (ARP, echo, queued packets, errors). */
  cacheable: boolean;
  /** Set when the packet itself is dropped (no output at all). */
  dropReason: string | null;
  /** Set when a router holds the packet until an ARP reply arrives (nothing to do meanwhile). */
  held: string | null;
  generated: GeneratedPacket[];
  conntrack: ConntrackCommit[];
  nat: NatCommit[];
  learned: LearnedMac[];
  /** Tags of flows made stale by state this simulation changed (e.g. a MAC that moved). */
  invalidate: string[];
  /** Packets released by this simulation (an ARP reply resolved their next hop): simulate again. */
  resubmit: ResubmitPacket[];
  /** Trace steps, when the context asked for a trace. */
  trace: TraceStep[] | null;
}
