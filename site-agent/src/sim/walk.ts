// One simulation in progress: the working match being rewritten as the packet crosses devices,
// the result being assembled, and the port entry/exit steps every device shares (filters, loop
// bound, delivery to a local port or a tunnel). Devices live in bridge.ts and router.ts.
import { topologypb } from "@isthmus/schema";
import type { Packet } from "../packets/packet.js";
import { VXLAN_PORT } from "../packets/vxlan.js";
import { simulateBridge } from "./bridge.js";
import { CHAIN_ACCEPT, type ChainCtx, filterAt } from "./chain-eval.js";
import { type CtTuple, ip4CtKey } from "./conntrack.js";
import { F, FlowMatch } from "./flow-match.js";
import type { Action, DecTtlAction, Ingress, SetFieldsAction, SimResult, TraceStep } from "./result.js";
import { simulateRouter } from "./router.js";
import type { SimState } from "./sim-state.js";
import type { Tag } from "./tag-cache.js";
import { type BridgeView, type PortView, type TopologyView, tag } from "./topology-view.js";

const PT = topologypb.PortType;
const NO_IP6 = new Uint32Array(4);

export interface SimContext {
  /** Milliseconds on the agent's clock (expiry of learned state). */
  now: number;
  /** The host this simulation runs on: ports bound here get `output`, others `encap`. */
  hostId: string;
  state: SimState;
  /** Record every device, chain, rule and decision in `result.trace`. */
  trace?: boolean;
  /** Seed for ECMP and NAT choices (per agent, so hosts spread differently). */
  hashSeed?: number;
}

let walks = 0;

/** The usual TTL step (one router): shared, since actions are never mutated after a walk. */
const DEC_TTL_1: DecTtlAction = Object.freeze({ kind: "decTtl", by: 1 }) as DecTtlAction;

/** Recent Ethernet-only rewrites (see Walk.sharedDiff): direct-mapped by (src, dst), fixed size. */
const SHARED_SETS = 64;
const sharedSets: (SetFieldsAction | undefined)[] = new Array(SHARED_SETS).fill(undefined);
const sharedSetKeys = new Float64Array(SHARED_SETS * 2);

/** Result lists nothing was added to share this empty, frozen list (see Walk.list). */
const NONE: never[] = Object.freeze([]) as unknown as never[];
type ListField = "generated" | "conntrack" | "nat" | "learned" | "invalidate" | "resubmit";

/**
 * One walk per nesting depth (0: the packet, 1: a packet it generated) is reused: simulate() is
 * synchronous and not re-entrant, so only the result and the match are allocated per packet.
 */
const pool: Walk[] = [];

export class Walk {
  // Ingress values of the fields a walk may rewrite (the rest are never written).
  private oEthSrc = 0;
  private oEthDst = 0;
  private oNwSrc = 0;
  private oNwDst = 0;
  private oTpSrc = 0;
  private oIcmpId = 0;
  private oTpDst = 0;
  private oNwTtl = 0;
  m!: FlowMatch;
  result!: SimResult;
  view!: TopologyView;
  ctx!: SimContext;
  pkt!: Packet;
  ingress!: Ingress;
  devices = 0;
  ttlDec = 0;
  /** Forward conntrack keys (and the device that checked) to commit if the packet is not dropped. */
  // Arrays reused across walks are filled up to a count, never truncated: truncating an array
  // releases its backing store, and the next walk would allocate it again.
  private readonly ctKeys: string[] = [];
  private readonly ctZones: string[] = [];
  /** Per pending key: IPv4 proto, src, sport, dst, dport (proto -1: not IPv4, commit by key). */
  private readonly ctTuples: number[] = [];
  private nCt = 0;
  /** Tags collected so far (copied into the result, at its exact size, by finish()). */
  readonly tags: string[] = [];
  private nTags = 0;
  /** Actions so far (copied into the result, at its exact size, by finish()). */
  private readonly actions: Action[] = [];
  private nActions = 0;
  /** Filter context, refilled before each filter runs (filters never overlap within a walk). */
  readonly cc: ChainCtx = { inPortId: "", outPortId: "", zoneId: "", replyPort: null };
  /** Scratch 5-tuple for conntrack, NAT and ECMP (each use finishes before the next fills it). */
  readonly tuple: CtTuple = {
    ipVersion: 0,
    proto: 0,
    src: 0,
    dst: 0,
    src6: NO_IP6,
    dst6: NO_IP6,
    sport: 0,
    dport: 0,
  };
  /** Why the packet was dropped (first reason wins). */
  dropReason: string | null = null;
  held: string | null = null;
  /** Whether steps are recorded: call sites check it so detail strings are only built when tracing. */
  tracing = false;
  /** Chains being evaluated (jump loop detection), reused across filters. */
  readonly jumpStack: string[] = [];
  jumpDepth = 0;
  private epoch = 0;
  /** Generated packets may not generate further packets. */
  generatedDepth = 0;
  private lastSet: SetFieldsAction | null = null;
  private lastTtl = 0;

  /** A walk for one packet (the pooled walk of its depth, reset). */
  static begin(
    view: TopologyView,
    ctx: SimContext,
    pkt: Packet,
    ingress: Ingress,
    inPort: string,
    tunnelKey: number,
    depth: number,
  ): Walk {
    let w = pool[depth];
    if (w === undefined) {
      w = new Walk();
      pool[depth] = w;
    }
    w.reset(view, ctx, pkt, ingress, inPort, tunnelKey, depth);
    return w;
  }

  private reset(
    view: TopologyView,
    ctx: SimContext,
    pkt: Packet,
    ingress: Ingress,
    inPort: string,
    tunnelKey: number,
    depth: number,
  ): void {
    this.view = view;
    this.ctx = ctx;
    this.pkt = pkt;
    this.ingress = ingress;
    this.generatedDepth = depth;
    this.epoch = ++walks;
    this.tracing = ctx.trace === true;
    this.devices = 0;
    this.ttlDec = 0;
    this.nCt = 0;
    this.jumpDepth = 0;
    this.nTags = 0;
    this.nActions = 0;
    this.dropReason = null;
    this.held = null;
    this.lastSet = null;
    this.lastTtl = 0;
    const m = FlowMatch.fromPacket(pkt, inPort, tunnelKey);
    this.m = m;
    this.oEthSrc = m._ethSrc;
    this.oEthDst = m._ethDst;
    this.oNwSrc = m._nwSrc;
    this.oNwDst = m._nwDst;
    this.oTpSrc = m._tpSrc;
    this.oIcmpId = m._icmpId;
    this.oTpDst = m._tpDst;
    this.oNwTtl = m._nwTtl;
    this.result = {
      actions: NONE,
      match: m, // restored to the ingress values by finish()
      mask: 0,
      dstBits: 0,
      tags: NONE,
      cacheable: true,
      dropReason: null,
      generated: NONE,
      conntrack: NONE,
      nat: NONE,
      learned: NONE,
      invalidate: NONE,
      resubmit: NONE,
      trace: this.tracing ? [] : null,
      held: null,
    };
  }

  /** A result list to add to (allocated on first use; untouched lists stay the shared empty one). */
  list<K extends ListField>(k: K): SimResult[K] {
    const r = this.result;
    let l = r[k];
    if (l === NONE) {
      l = [];
      r[k] = l;
    }
    return l;
  }

  /** Adds one item to a result list (a first item gets a list of exactly one). */
  add<K extends ListField>(k: K, item: SimResult[K][number]): void {
    const r = this.result;
    const l = r[k] as SimResult[K][number][];
    if (l === NONE) (r[k] as SimResult[K][number][]) = [item];
    else l.push(item);
  }

  private action(a: Action): void {
    this.actions[this.nActions++] = a;
  }

  get state(): SimState {
    return this.ctx.state;
  }

  trace(kind: TraceStep["kind"], id: string, detail: string): undefined {
    this.result.trace?.push({ kind, id, detail });
  }

  /** Adds a precomputed tag once per walk (no hashing: the tag's stamp marks it added). */
  tag(t: Tag): undefined {
    if (t.stamp !== this.epoch) {
      t.stamp = this.epoch;
      this.tags[this.nTags++] = t.s;
    }
  }

  /** Adds a tag built for this packet (conntrack and NAT keys, objects missing from the view). */
  tagStr(s: string): undefined {
    const tags = this.tags;
    for (let i = 0; i < this.nTags; i++) if (tags[i] === s) return;
    tags[this.nTags++] = s;
  }

  /** Records an IPv4 forward tuple (zone "") to commit at the end, once. */
  pendCt4(proto: number, src: number, sport: number, dst: number, dport: number, zoneId: string): void {
    const n = this.ctTuples;
    for (let i = 0; i < this.nCt; i++) {
      const o = i * 5;
      if (n[o] === proto && n[o + 1] === src && n[o + 2] === sport && n[o + 3] === dst && n[o + 4] === dport)
        return;
    }
    const i = this.nCt++;
    const o = i * 5;
    this.ctKeys[i] = "";
    this.ctZones[i] = zoneId;
    n[o] = proto;
    n[o + 1] = src;
    n[o + 2] = sport;
    n[o + 3] = dst;
    n[o + 4] = dport;
  }

  /** Records any other forward key to commit at the end, once. */
  pendCt(key: string, zoneId: string): void {
    for (let i = 0; i < this.nCt; i++) if (this.ctTuples[i * 5] === -1 && this.ctKeys[i] === key) return;
    const i = this.nCt++;
    this.ctKeys[i] = key;
    this.ctZones[i] = zoneId;
    this.ctTuples[i * 5] = -1;
  }

  drop(reason: string): undefined {
    if (this.dropReason === null) this.dropReason = reason;
    if (this.tracing) this.trace("decision", "", `drop: ${reason}`);
  }

  /** The packet arrives at a device through `port` (from a VM, a tunnel or a peer device). */
  enterPort(port: PortView): undefined {
    this.tag(port.tag);
    if (++this.devices > this.state.limits.maxDevices) {
      this.drop(`loop: more than ${this.state.limits.maxDevices} devices traversed`);
      return;
    }
    if (this.tracing) this.trace("port", port.id, `enter ${port.raw.name || port.id}`);
    if (!port.up) return this.drop(`port ${port.id} is administratively down`);
    const inbound = port.raw.inboundFilterId;
    if (inbound && filterAt(this, inbound, port.id, "", port.deviceId, port) !== CHAIN_ACCEPT) return;
    const bridge = this.view.bridges.get(port.deviceId);
    if (bridge) return simulateBridge(this, bridge, port);
    const router = this.view.routers.get(port.deviceId);
    if (router) return simulateRouter(this, router, port);
    this.tagStr(tag.device(port.deviceId));
    this.drop(`port ${port.id} belongs to unknown device ${port.deviceId}`);
  }

  /**
   * The packet leaves a device through `port`: its outbound filter, then delivery (exterior) or
   * the peer device (interior). `from` is the port it entered the device by (filter context).
   */
  exitPort(port: PortView, from: PortView | null, skipFilter = false): undefined {
    this.tag(port.tag);
    if (!port.up) return this.drop(`port ${port.id} is administratively down`);
    const outbound = port.raw.outboundFilterId;
    if (!skipFilter && outbound) {
      if (filterAt(this, outbound, from?.id ?? "", port.id, port.deviceId, from) !== CHAIN_ACCEPT) return;
    }
    if (port.exterior) return this.deliver(port);
    const peer = this.view.ports.get(port.raw.peerId);
    if (!peer) {
      this.tagStr(tag.port(port.raw.peerId));
      return this.drop(`port ${port.id} has no peer (peer_id "${port.raw.peerId}" unknown)`);
    }
    this.enterPort(peer);
  }

  /** Output to an exterior port: local output, or a tunnel to its host or a remote site. */
  deliver(port: PortView): undefined {
    this.tag(port.tag);
    const hostId = port.raw.hostId;
    if (port.type === PT.PORT_TYPE_REMOTE_SITE) {
      const bridge = this.view.bridges.get(port.deviceId);
      const key = bridge?.raw.tunnelKey ?? 0;
      if (!key)
        return this.drop(
          `bridge ${port.deviceId} has no global tunnel key for remote site ${port.raw.remoteSite}`,
        );
      if (hostId === this.ctx.hostId) {
        const site = port.raw.remoteSite;
        this.tagStr(tag.gateway(site));
        const gw = this.view.remoteGateways.get(site);
        if (!gw) return this.drop(`no gateway known for remote site ${site}`);
        return this.emit({
          kind: "encap",
          tunnelKey: key,
          remoteIp: gw.ip,
          remotePort: gw.port || VXLAN_PORT,
          hostId: `site:${site}`,
        });
      }
      return this.tunnelToHost(hostId, key, port);
    }
    if (hostId === this.ctx.hostId) return this.emit(port.output);
    if (!port.raw.tunnelKey) return this.drop(`port ${port.id} on host ${hostId} has no tunnel key`);
    this.tunnelToHost(hostId, port.raw.tunnelKey, port);
  }

  private tunnelToHost(hostId: string, key: number, port: PortView): undefined {
    const ht = this.view.hostTags.get(hostId);
    if (ht) this.tag(ht);
    else this.tagStr(tag.host(hostId));
    const host = this.view.hosts.get(hostId);
    if (!hostId || !host) return this.drop(`port ${port.id} is bound to unknown host "${hostId}"`);
    if (!host.tunnelIp) return this.drop(`host ${hostId} has no tunnel IP`);
    this.emit({
      kind: "encap",
      tunnelKey: key,
      remoteIp: host.tunnelIp,
      remotePort: host.tunnelPort || VXLAN_PORT,
      hostId,
    });
  }

  /** Appends an output, preceded by the header rewrites in effect at this point. */
  private emit(a: Action): undefined {
    if (this.m.written !== 0) this.maskUnchangedWrites();
    if (this.lastSet === null && !this.unchanged()) {
      // The first rewrite of the walk: nothing to restore, so a shared action may stand for it.
      const out = this.sharedDiff();
      this.lastSet = out;
      this.action(out);
    } else if (!this.sameAsLastSet()) {
      const out = this.diff();
      const prev = this.lastSet;
      // `out` is shared as lastSet only when no restores are added to it below.
      this.lastSet = this.unchanged() ? null : prev === null ? out : this.diff();
      // A flood port's filter may have rewritten fields for an earlier output: restore them.
      if (prev) {
        if (prev.ethSrc !== undefined && out.ethSrc === undefined) out.ethSrc = this.oEthSrc;
        if (prev.ethDst !== undefined && out.ethDst === undefined) out.ethDst = this.oEthDst;
        if (prev.nwSrc !== undefined && out.nwSrc === undefined) out.nwSrc = this.oNwSrc;
        if (prev.nwDst !== undefined && out.nwDst === undefined) out.nwDst = this.oNwDst;
        if (prev.tpSrc !== undefined && out.tpSrc === undefined) out.tpSrc = this.oTpSrc;
        if (prev.tpDst !== undefined && out.tpDst === undefined) out.tpDst = this.oTpDst;
        if (prev.icmpId !== undefined && out.icmpId === undefined) out.icmpId = this.oIcmpId;
      }
      this.action(out);
    }
    if (this.ttlDec > this.lastTtl) {
      const by = this.ttlDec - this.lastTtl;
      this.action(by === 1 ? DEC_TTL_1 : { kind: "decTtl", by });
      this.lastTtl = this.ttlDec;
    }
    this.action(a);
    if (this.tracing) {
      if (a.kind === "output") this.trace("decision", a.portId, "output");
      else if (a.kind === "encap")
        this.trace("decision", a.hostId, `encap key ${a.tunnelKey} to ${a.remoteIp}`);
    }
  }

  /**
   * A written field equal to its ingress value gets no `set`: the output is right only for
   * packets that already carry that value, so the field joins the mask.
   */
  private maskUnchangedWrites(): void {
    const m = this.m;
    const w = m.written;
    if (w & F.ETH_SRC && m._ethSrc === this.oEthSrc) void m.ethSrc;
    if (w & F.ETH_DST && m._ethDst === this.oEthDst) void m.ethDst;
    if (w & F.NW_SRC && m._nwSrc === this.oNwSrc) void m.nwSrc;
    if (w & F.NW_DST && m._nwDst === this.oNwDst) void m.nwDst;
    if (w & F.TP_SRC && m._tpSrc === this.oTpSrc) void m.tpSrc;
    if (w & F.TP_DST && m._tpDst === this.oTpDst) void m.tpDst;
    if (w & F.ICMP_ID && m._icmpId === this.oIcmpId) void m.icmpId;
  }

  /** Whether no rewritable field differs from the ingress packet. */
  private unchanged(): boolean {
    const m = this.m;
    return (
      m._ethSrc === this.oEthSrc &&
      m._ethDst === this.oEthDst &&
      m._nwSrc === this.oNwSrc &&
      m._nwDst === this.oNwDst &&
      m._tpSrc === this.oTpSrc &&
      m._tpDst === this.oTpDst &&
      m._icmpId === this.oIcmpId
    );
  }

  /** Whether the rewrites in effect now are those of the last `set` emitted (no new `set` needed). */
  private sameAsLastSet(): boolean {
    const b = this.lastSet;
    if (b === null) return this.unchanged();
    const m = this.m;
    return (
      (m._ethSrc === this.oEthSrc ? undefined : m._ethSrc) === b.ethSrc &&
      (m._ethDst === this.oEthDst ? undefined : m._ethDst) === b.ethDst &&
      (m._nwSrc === this.oNwSrc ? undefined : m._nwSrc) === b.nwSrc &&
      (m._nwDst === this.oNwDst ? undefined : m._nwDst) === b.nwDst &&
      (m._tpSrc === this.oTpSrc ? undefined : m._tpSrc) === b.tpSrc &&
      (m._tpDst === this.oTpDst ? undefined : m._tpDst) === b.tpDst &&
      (m._icmpId === this.oIcmpId ? undefined : m._icmpId) === b.icmpId
    );
  }

  /** The rewrites in effect now, relative to the ingress packet (only changed fields present). */
  private diff(): SetFieldsAction {
    const m = this.m;
    const s: SetFieldsAction = { kind: "set" };
    if (m._ethSrc !== this.oEthSrc) s.ethSrc = m._ethSrc;
    if (m._ethDst !== this.oEthDst) s.ethDst = m._ethDst;
    if (m._nwSrc !== this.oNwSrc) s.nwSrc = m._nwSrc;
    if (m._nwDst !== this.oNwDst) s.nwDst = m._nwDst;
    if (m._tpSrc !== this.oTpSrc) s.tpSrc = m._tpSrc;
    if (m._tpDst !== this.oTpDst) s.tpDst = m._tpDst;
    if (m._icmpId !== this.oIcmpId) s.icmpId = m._icmpId;
    return s;
  }

  /**
   * diff(), shared between walks when only the Ethernet addresses changed (a router hop: the
   * same rewrite for every flow to a next hop). Shared actions are frozen.
   */
  private sharedDiff(): SetFieldsAction {
    const m = this.m;
    if (
      m._nwSrc !== this.oNwSrc ||
      m._nwDst !== this.oNwDst ||
      m._tpSrc !== this.oTpSrc ||
      m._tpDst !== this.oTpDst ||
      m._icmpId !== this.oIcmpId
    )
      return this.diff();
    const src = m._ethSrc === this.oEthSrc ? -1 : m._ethSrc;
    const dst = m._ethDst === this.oEthDst ? -1 : m._ethDst;
    const i = (Math.imul(src | 0, 0x9e3779b1) ^ (dst | 0)) & (SHARED_SETS - 1);
    const k = sharedSetKeys;
    let a = sharedSets[i];
    if (a === undefined || k[i * 2] !== src || k[i * 2 + 1] !== dst) {
      a = Object.freeze(this.diff());
      sharedSets[i] = a;
      k[i * 2] = src;
      k[i * 2 + 1] = dst;
    }
    return a;
  }

  /** Bridge lookup helper shared with tunnel ingress. */
  bridge(id: string): BridgeView | undefined {
    return this.view.bridges.get(id);
  }

  /** Closes the result: drop action if nothing was output, commits, mask. */
  finish(): SimResult {
    const r = this.result;
    let outputs = false;
    for (let i = 0; i < this.nActions; i++) {
      const k = this.actions[i]!.kind;
      if (k === "output" || k === "encap") outputs = true;
    }
    r.actions = this.actions.slice(0, this.nActions);
    if (!outputs) {
      const reason = this.held ?? this.dropReason ?? "no output port";
      if (this.held === null) {
        r.dropReason = reason;
        r.actions = [{ kind: "drop", reason }];
      }
    } else if (this.nCt > 0) {
      const ct = this.state.conntrack;
      const n = this.ctTuples;
      for (let i = 0; i < this.nCt; i++) {
        const o = i * 5;
        let key: string;
        let zoneId: string;
        let expiresAt: number;
        if (n[o]! >= 0) {
          expiresAt = ct.commitTuple(
            n[o]!,
            n[o + 1]!,
            n[o + 2]!,
            n[o + 3]!,
            n[o + 4]!,
            this.ctZones[i]!,
            this.ctx.now,
          );
          zoneId = ct.committedZone;
          key = expiresAt < 0 ? "" : ip4CtKey(n[o]!, n[o + 1]!, n[o + 2]!, n[o + 3]!, n[o + 4]!);
        } else {
          const e = ct.commit(this.ctKeys[i]!, this.ctZones[i]!, this.ctx.now);
          expiresAt = e ? e.expiresAt : -1;
          zoneId = e ? e.zoneId : "";
          key = this.ctKeys[i]!;
        }
        if (expiresAt < 0) {
          const reason = `conntrack table full (${ct.maxEntries} entries): new connection refused`;
          r.dropReason = reason;
          r.actions = [{ kind: "drop", reason }];
          r.cacheable = false;
          break;
        }
        this.add("conntrack", { key, zoneId, expiresAt });
      }
    }
    if (this.held !== null) {
      r.cacheable = false;
      r.held = this.held;
    }
    r.mask = this.m.seen;
    r.dstBits = (r.mask & F.NW_DST) !== 0 ? this.m.dstBits : 0;
    r.tags = this.tags.slice(0, this.nTags);
    const m = this.m;
    m._ethSrc = this.oEthSrc;
    m._ethDst = this.oEthDst;
    m._nwSrc = this.oNwSrc;
    m._nwDst = this.oNwDst;
    m._tpSrc = this.oTpSrc;
    m._tpDst = this.oTpDst;
    m._icmpId = this.oIcmpId;
    m._nwTtl = this.oNwTtl;
    return r;
  }
}
