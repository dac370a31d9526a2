// The agent's Simulator over the packet simulation engine (src/sim): keeps the engine's TopologyView
// and SimState, translates a SimResult into output groups in the datapath's compact action form,
// its FlowMask into flow-key fields, and its conntrack/NAT commits into flow-state entries — and
// installs peers' entries into the engine's tables.
import { flowstatepb, topologypb } from "@isthmus/schema";
import {
  type Action,
  F,
  type FieldName,
  InMemoryNatBlockRegistry,
  type NatLeaseSource,
  type ResubmitPacket,
  type SimLimits,
  type SimResult,
  SimState,
  simulate,
  TopologyView,
  tag,
} from "../sim/index.js";
import type { RuleSnapshot } from "../sim/packed-rules.js";
import { ETH_TYPE_IPV4, type FlowField, KEY, KEY_SIZE } from "./flow-key.js";
import type { FlowStateEntry } from "./flow-state.js";
import type { OutputGroup, SimulationInput, SimulationOutcome, Simulator } from "./simulator.js";

/** Which flow-key field carries each simulation match field. */
const FIELD_OF: Record<FieldName, FlowField> = {
  IN_PORT: "inPort",
  TUNNEL_KEY: "tunnelKey",
  ETH_SRC: "ethSrc",
  ETH_DST: "ethDst",
  VLAN: "vlan",
  ETHER_TYPE: "ethType",
  NW_SRC: "ipSrc",
  NW_DST: "ipDst",
  NW_PROTO: "ipProto",
  NW_TOS: "ipTos",
  NW_TTL: "ipTtl",
  NW_FRAG: "ipFrag",
  TP_SRC: "tpSrc",
  TP_DST: "tpDst",
  ICMP_ID: "icmpId",
  ARP_OP: "ipProto",
  ARP_SPA: "ipSrc",
  ARP_TPA: "ipDst",
  ARP_SHA: "arpSha",
  ARP_THA: "arpTha",
  TCP_FLAGS: "tcpFlags",
};

export function maskToFields(mask: number): FlowField[] {
  const out = new Set<FlowField>();
  for (const [name, bit] of Object.entries(F) as [FieldName, number][]) {
    if ((mask & bit) !== 0) out.add(FIELD_OF[name]);
  }
  // The key's protocol/port fields are only meaningful together with the ether type.
  if (out.size > 0) out.add("ethType");
  return [...out];
}

/** Distinct engine masks whose field lists an EngineSimulator keeps (a handful per host is typical). */
const FIELD_LIST_CACHE_LIMIT = 1024;

/**
 * How many leading bits of the destination an IPv4 result depended on, when fewer than all: the
 * simulation counts only the bits a route lookup examined, and anything that read the whole
 * address (ARP for it, conntrack, an address rule, NAT, ECMP) made it 32. The key's ipDst also
 * carries an ARP frame's target address, so a result that read that keeps it whole.
 */
function ipDstPrefixBits(r: SimResult, key: Buffer): number | undefined {
  if ((r.mask & F.NW_DST) === 0 || (r.mask & F.ARP_TPA) !== 0) return undefined;
  if (key.length !== KEY_SIZE || key.readUInt16BE(KEY.ethType) !== ETH_TYPE_IPV4) return undefined;
  return r.dstBits > 0 && r.dstBits < 32 ? r.dstBits : undefined;
}

// Rewrite values come from the shared pool (allocUnsafe) and are written whole: a routed flow has
// two of them, and a fresh ArrayBuffer each costs far more than the six bytes.
function mac6(v: number): Buffer {
  const b = Buffer.allocUnsafe(6);
  b.writeUIntBE(v, 0, 6);
  return b;
}

function ip4(v: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}

/** Splits the engine's ordered action list into groups: rewrites, then the outputs that follow them. */
export function toGroups(actions: Action[]): { groups: OutputGroup[]; dropReason?: string } {
  const groups: OutputGroup[] = [];
  let cur: OutputGroup = { rewrites: {}, outputs: [] };
  let dropReason: string | undefined;
  for (const a of actions) {
    // A rewrite after outputs applies only to later outputs: start a new group carrying what came
    // before (inline rather than a closure made per call).
    if ((a.kind === "set" || a.kind === "decTtl") && cur.outputs.length > 0) {
      groups.push(cur);
      cur = { rewrites: { ...cur.rewrites }, outputs: [] };
    }
    switch (a.kind) {
      case "set":
        if (a.ethSrc !== undefined) cur.rewrites.setEthSrc = mac6(a.ethSrc);
        if (a.ethDst !== undefined) cur.rewrites.setEthDst = mac6(a.ethDst);
        if (a.nwSrc !== undefined) cur.rewrites.setIpSrc = ip4(a.nwSrc);
        if (a.nwDst !== undefined) cur.rewrites.setIpDst = ip4(a.nwDst);
        if (a.tpSrc !== undefined) cur.rewrites.setTpSrc = a.tpSrc;
        if (a.tpDst !== undefined) cur.rewrites.setTpDst = a.tpDst;
        if (a.icmpId !== undefined) cur.rewrites.setIcmpId = a.icmpId;
        break;
      case "decTtl":
        cur.rewrites.decTtl = (cur.rewrites.decTtl ?? 0) + a.by;
        break;
      case "output":
        cur.outputs.push({ kind: "port", portId: a.portId });
        break;
      case "encap":
        cur.outputs.push({
          kind: "tunnel",
          key: a.tunnelKey,
          remoteIp: a.remoteIp,
          remotePort: a.remotePort,
          hostId: a.hostId,
        });
        break;
      case "drop":
        dropReason ??= a.reason;
        break;
    }
  }
  if (cur.outputs.length > 0 || groups.length === 0) groups.push(cur);
  return { groups, dropReason };
}

function resubmitOf(p: ResubmitPacket): SimulationOutcome["resubmit"][number] {
  return {
    frame: Buffer.from(p.frame),
    ...("portId" in p.ingress
      ? { ingressPortId: p.ingress.portId }
      : { tunnelKey: p.ingress.tunnelKey, fromSite: p.ingress.fromSite }),
  };
}

/** Uplink neighbours whose last shared ARP answer is remembered (then the memory starts over). */
const MAX_ARP_SHARED = 4096;

export interface EngineSimulatorOptions {
  hostId: string;
  limits?: Partial<SimLimits>;
  /** Where SNAT port blocks come from (default: this process only; see docs/agent.md). */
  natLeases?: NatLeaseSource;
  hashSeed?: number;
}

export class EngineSimulator implements Simulator {
  view = new TopologyView();
  readonly state: SimState;
  private released: SimulationOutcome["resubmit"] = [];
  /** ARP answers this host shared last, per `${routerId}|${ip}` (bounded by MAX_ARP_SHARED). */
  private readonly arpShared = new Map<string, { mac: number; at: number }>();
  /** maskToFields per engine mask: shared lists, never written by the handler. */
  private readonly fieldLists = new Map<number, FlowField[]>();

  constructor(private readonly o: EngineSimulatorOptions) {
    this.state = new SimState(o.natLeases ?? new InMemoryNatBlockRegistry().forHost(o.hostId), o.limits);
  }

  simulate(input: SimulationInput): SimulationOutcome {
    const ingress =
      input.ingressPortId !== undefined
        ? { portId: input.ingressPortId }
        : { tunnelKey: input.tunnelKey ?? 0, fromSite: input.fromSite };
    const r: SimResult = simulate(this.view, input.frame, ingress, {
      now: input.now,
      hostId: this.o.hostId,
      state: this.state,
      trace: input.traced,
      hashSeed: this.o.hashSeed,
    });
    const { groups, dropReason } = toGroups(r.actions);
    const flowState: FlowStateEntry[] = [];
    for (const c of r.conntrack) {
      flowState.push({
        conntrack: { key: c.key, zoneId: c.zoneId },
        ttlMs: Math.max(1, Math.round(c.expiresAt - input.now)),
      });
    }
    for (const n of r.nat) {
      const nat: flowstatepb.NatEntry = {
        kind: n.kind === "snat" ? flowstatepb.NatKind.NAT_KIND_SNAT : flowstatepb.NatKind.NAT_KIND_DNAT,
        key: n.key,
        reverseKey: n.reverseKey,
        deviceId: n.deviceId,
        origIp: n.origIp >>> 0,
        origPort: n.origPort,
        natIp: n.natIp >>> 0,
        natPort: n.natPort,
      };
      flowState.push({ nat, ttlMs: Math.max(1, Math.round(n.expiresAt - input.now)) });
    }
    const arp = input.ingressPortId === undefined ? undefined : this.uplinkArpReply(input);
    if (arp) flowState.push({ arp, ttlMs: this.state.limits.arpTtlMs });
    return {
      groups,
      dropReason: r.dropReason ?? dropReason,
      maskFields: this.fieldsOf(r.mask),
      ipDstPrefixBits: ipDstPrefixBits(r, input.key),
      // The engine's result is its own per simulation (a fresh list), so no copy.
      tags: r.tags,
      cacheable: r.cacheable,
      generated:
        r.generated.length === 0
          ? []
          : r.generated.map((g) => ({
              frame: Buffer.from(g.frame),
              groups: toGroups(g.actions).groups,
            })),
      flowState,
      invalidate: r.invalidate,
      resubmit: r.resubmit.length === 0 ? [] : r.resubmit.map(resubmitOf),
    };
  }

  private fieldsOf(mask: number): FlowField[] {
    let list = this.fieldLists.get(mask);
    if (list === undefined) {
      if (this.fieldLists.size >= FIELD_LIST_CACHE_LIMIT) this.fieldLists.clear();
      list = maskToFields(mask);
      this.fieldLists.set(mask, list);
    }
    return list;
  }

  /**
   * An ARP reply that entered by a router uplink and taught the router its sender: the other
   * hosts route out of this uplink too but never see the neighbour's replies, so it is shared.
   */
  private uplinkArpReply(input: SimulationInput): flowstatepb.ArpState | undefined {
    const f = input.frame;
    if (f.length < 42 || f.readUInt16BE(12) !== 0x0806 || f.readUInt16BE(20) !== 2) return undefined;
    const port = this.view.ports.get(input.ingressPortId!);
    if (port?.raw.type !== topologypb.PortType.PORT_TYPE_ROUTER_UPLINK) return undefined;
    const ip = f.readUInt32BE(28);
    const mac = this.state.arp.lookup(port.deviceId, ip, input.now);
    if (mac < 0) return undefined;
    // Every share goes to every host of the site: a neighbour repeating its reply (or spraying
    // them) is passed on only when the MAC changed or half the ARP lifetime has gone by.
    const k = `${port.deviceId}|${ip}`;
    const last = this.arpShared.get(k);
    if (last && last.mac === mac && input.now - last.at < this.state.limits.arpTtlMs / 2) return undefined;
    if (!last && this.arpShared.size >= MAX_ARP_SHARED) this.arpShared.clear();
    this.arpShared.set(k, { mac, at: input.now });
    return { routerId: port.deviceId, ip, mac };
  }

  /** Packets released by peers' ARP answers (installFlowState), to simulate again now. */
  takeResubmits(): SimulationOutcome["resubmit"] {
    const out = this.released;
    this.released = [];
    return out;
  }

  applySnapshot(s: RuleSnapshot): void {
    this.view = new TopologyView(s.objects, s.revision, s.packedRules);
  }

  applyChange(c: topologypb.TopologyChange): string[] {
    return this.view.apply(c);
  }

  installFlowState(entries: FlowStateEntry[], now: number): string[] {
    const tags: string[] = [];
    for (const e of entries) {
      const expiresAt = now + (e.ttlMs > 0 ? e.ttlMs : this.state.limits.conntrackIdleMs);
      if (e.conntrack && e.conntrack.key !== "") {
        // Only a new entry changes a decision: a refresh of a known one (sent every second while
        // the connection runs) must not invalidate the flows that depend on it.
        const known = this.state.conntrack.has(e.conntrack.key, now);
        if (
          this.state.conntrack.put({ key: e.conntrack.key, zoneId: e.conntrack.zoneId, expiresAt }) &&
          !known
        ) {
          tags.push(tag.ct(e.conntrack.key));
        }
      } else if (e.nat && e.nat.key !== "" && e.nat.kind !== flowstatepb.NatKind.NAT_KIND_UNSPECIFIED) {
        const n = e.nat;
        const prev = this.state.nat.lookupForward(n.key, now);
        const same = prev !== undefined && prev.natIp === n.natIp && prev.natPort === n.natPort;
        const ok = this.state.nat.put({
          kind: n.kind === flowstatepb.NatKind.NAT_KIND_SNAT ? "snat" : "dnat",
          key: n.key,
          reverseKey: n.reverseKey,
          deviceId: n.deviceId,
          origIp: n.origIp,
          origPort: n.origPort,
          natIp: n.natIp,
          natPort: n.natPort,
          expiresAt,
        });
        if (ok && !same) tags.push(tag.nat(n.key), tag.nat(n.reverseKey));
      } else if (e.arp && e.arp.routerId !== "") {
        const a = e.arp;
        const known = this.state.arp.lookup(a.routerId, a.ip, now);
        const released = this.state.arp.learn(a.routerId, a.ip, a.mac, now);
        if (known !== a.mac) tags.push(tag.arp(a.routerId, a.ip));
        // Bounded: the ARP cache holds at most arpQueueTotal packets waiting.
        for (const p of released) this.released.push(resubmitOf(p));
      }
    }
    return tags;
  }

  refreshFlowState(entries: FlowStateEntry[], now: number): void {
    for (const e of entries) {
      if (e.conntrack) this.state.conntrack.touch(e.conntrack.key, now);
      if (e.nat) this.state.nat.touch(e.nat.key, now);
    }
  }

  expire(now: number): string[] {
    return this.state.expire(now);
  }
}
