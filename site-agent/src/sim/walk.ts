// One simulation in progress: the working match being rewritten as the packet crosses devices,
// the result being assembled, and the port entry/exit steps every device shares (filters, loop
// bound, delivery to a local port or a tunnel). Devices live in bridge.ts and router.ts.
import { topologypb } from "@isthmus/schema";
import type { Packet } from "../packets/packet.js";
import { VXLAN_PORT } from "../packets/vxlan.js";
import { simulateBridge } from "./bridge.js";
import { CHAIN_ACCEPT, type ChainCtx, runFilter } from "./chain-eval.js";
import { FlowMatch } from "./flow-match.js";
import type { Action, Ingress, SetFieldsAction, SimResult, TraceStep } from "./result.js";
import { simulateRouter } from "./router.js";
import type { SimState } from "./sim-state.js";
import type { Tag } from "./tag-cache.js";
import { type BridgeView, type PortView, type TopologyView, tag } from "./topology-view.js";

const PT = topologypb.PortType;

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

export class Walk {
  /** Ingress values of the fields a walk may rewrite (the rest are never written). */
  private readonly orig: Pick<
    FlowMatch,
    "_ethSrc" | "_ethDst" | "_nwSrc" | "_nwDst" | "_tpSrc" | "_tpDst" | "_nwTtl"
  >;
  readonly m: FlowMatch;
  readonly result: SimResult;
  devices = 0;
  ttlDec = 0;
  /** Forward conntrack keys to commit if the packet is not dropped. */
  readonly ctPending: { key: string; zoneId: string }[] = [];
  /** Why the packet was dropped (first reason wins). */
  dropReason: string | null = null;
  held: string | null = null;
  /** Whether steps are recorded: call sites check it so detail strings are only built when tracing. */
  readonly tracing: boolean;
  /** Chains being evaluated (jump loop detection), reused across filters. */
  readonly jumpStack: string[] = [];
  private readonly epoch: number;
  /** Generated packets may not generate further packets. */
  readonly generatedDepth: number;
  private lastSet: SetFieldsAction | null = null;
  private lastTtl = 0;

  constructor(
    readonly view: TopologyView,
    readonly ctx: SimContext,
    readonly pkt: Packet,
    readonly ingress: Ingress,
    inPort: string,
    tunnelKey: number,
    depth: number,
  ) {
    this.generatedDepth = depth;
    this.epoch = ++walks;
    this.tracing = ctx.trace === true;
    this.m = FlowMatch.fromPacket(pkt, inPort, tunnelKey);
    const m = this.m;
    this.orig = {
      _ethSrc: m._ethSrc,
      _ethDst: m._ethDst,
      _nwSrc: m._nwSrc,
      _nwDst: m._nwDst,
      _tpSrc: m._tpSrc,
      _tpDst: m._tpDst,
      _nwTtl: m._nwTtl,
    };
    this.result = {
      actions: [],
      match: this.m, // restored to the ingress values by finish()
      mask: 0,
      tags: [],
      cacheable: true,
      dropReason: null,
      generated: [],
      conntrack: [],
      nat: [],
      learned: [],
      invalidate: [],
      resubmit: [],
      trace: ctx.trace ? [] : null,
      held: null,
    };
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
      this.result.tags.push(t.s);
    }
  }

  /** Adds a tag built for this packet (conntrack and NAT keys, objects missing from the view). */
  tagStr(s: string): undefined {
    if (!this.result.tags.includes(s)) this.result.tags.push(s);
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
    if (port.raw.inboundFilterId) {
      const cc: ChainCtx = { inPortId: port.id, outPortId: "", zoneId: port.deviceId, replyPort: port };
      if (runFilter(this, port.raw.inboundFilterId, cc) !== CHAIN_ACCEPT) return;
    }
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
    if (!skipFilter && port.raw.outboundFilterId) {
      const cc: ChainCtx = {
        inPortId: from?.id ?? "",
        outPortId: port.id,
        zoneId: port.deviceId,
        replyPort: from,
      };
      if (runFilter(this, port.raw.outboundFilterId, cc) !== CHAIN_ACCEPT) return;
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
    if (hostId === this.ctx.hostId) return this.emit({ kind: "output", portId: port.id });
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
    const set = this.diff();
    if (!sameSet(set, this.lastSet)) {
      // A flood port's filter may have rewritten fields for an earlier output: restore them.
      const out: SetFieldsAction = set ? { ...set } : { kind: "set" };
      const prev = this.lastSet;
      const o = this.orig;
      if (prev) {
        if (prev.ethSrc !== undefined && out.ethSrc === undefined) out.ethSrc = o._ethSrc;
        if (prev.ethDst !== undefined && out.ethDst === undefined) out.ethDst = o._ethDst;
        if (prev.nwSrc !== undefined && out.nwSrc === undefined) out.nwSrc = o._nwSrc;
        if (prev.nwDst !== undefined && out.nwDst === undefined) out.nwDst = o._nwDst;
        if (prev.tpSrc !== undefined && out.tpSrc === undefined) out.tpSrc = o._tpSrc;
        if (prev.tpDst !== undefined && out.tpDst === undefined) out.tpDst = o._tpDst;
      }
      this.result.actions.push(out);
      this.lastSet = set;
    }
    if (this.ttlDec > this.lastTtl) {
      this.result.actions.push({ kind: "decTtl", by: this.ttlDec - this.lastTtl });
      this.lastTtl = this.ttlDec;
    }
    this.result.actions.push(a);
    if (a.kind === "output") this.trace("decision", a.portId, "output");
    else if (a.kind === "encap")
      if (this.tracing) this.trace("decision", a.hostId, `encap key ${a.tunnelKey} to ${a.remoteIp}`);
  }

  private diff(): SetFieldsAction | null {
    const o = this.orig;
    const m = this.m;
    if (
      m._ethSrc === o._ethSrc &&
      m._ethDst === o._ethDst &&
      m._nwSrc === o._nwSrc &&
      m._nwDst === o._nwDst &&
      m._tpSrc === o._tpSrc &&
      m._tpDst === o._tpDst
    ) {
      return null;
    }
    const s: SetFieldsAction = { kind: "set" };
    if (m._ethSrc !== o._ethSrc) s.ethSrc = m._ethSrc;
    if (m._ethDst !== o._ethDst) s.ethDst = m._ethDst;
    if (m._nwSrc !== o._nwSrc) s.nwSrc = m._nwSrc;
    if (m._nwDst !== o._nwDst) s.nwDst = m._nwDst;
    if (m._tpSrc !== o._tpSrc) s.tpSrc = m._tpSrc;
    if (m._tpDst !== o._tpDst) s.tpDst = m._tpDst;
    return s;
  }

  /** Bridge lookup helper shared with tunnel ingress. */
  bridge(id: string): BridgeView | undefined {
    return this.view.bridges.get(id);
  }

  /** Closes the result: drop action if nothing was output, commits, mask. */
  finish(): SimResult {
    const r = this.result;
    const outputs = r.actions.some((a) => a.kind === "output" || a.kind === "encap");
    if (!outputs) {
      const reason = this.held ?? this.dropReason ?? "no output port";
      if (this.held === null) {
        r.dropReason = reason;
        r.actions.length = 0;
        r.actions.push({ kind: "drop", reason });
      }
    } else if (this.ctPending.length > 0) {
      for (const p of this.ctPending) {
        const e = this.state.conntrack.commit(p.key, p.zoneId, this.ctx.now);
        if (!e) {
          const reason = `conntrack table full (${this.state.conntrack.maxEntries} entries): new connection refused`;
          r.dropReason = reason;
          r.actions.length = 0;
          r.actions.push({ kind: "drop", reason });
          r.cacheable = false;
          break;
        }
        r.conntrack.push({ key: e.key, zoneId: e.zoneId, expiresAt: e.expiresAt });
      }
    }
    if (this.held !== null) {
      r.cacheable = false;
      r.held = this.held;
    }
    r.mask = this.m.seen;
    const m = this.m;
    const o = this.orig;
    m._ethSrc = o._ethSrc;
    m._ethDst = o._ethDst;
    m._nwSrc = o._nwSrc;
    m._nwDst = o._nwDst;
    m._tpSrc = o._tpSrc;
    m._tpDst = o._tpDst;
    m._nwTtl = o._nwTtl;
    return r;
  }
}

function sameSet(a: SetFieldsAction | null, b: SetFieldsAction | null): boolean {
  if (a === null || b === null) return a === b;
  return (
    a.ethSrc === b.ethSrc &&
    a.ethDst === b.ethDst &&
    a.nwSrc === b.nwSrc &&
    a.nwDst === b.nwDst &&
    a.tpSrc === b.tpSrc &&
    a.tpDst === b.tpDst
  );
}
