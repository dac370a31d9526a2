// Filter chains: ordered rules whose conditions read the working match (so the flow mask records
// exactly what was looked at) and whose actions accept, drop, reject, jump, return or translate
// addresses. Conntrack state (forward/return) and NAT bindings are consulted here.
import { topologypb } from "@isthmus/schema";
import { formatIp4, inCidr6, readU16, readU32 } from "../packets/addr.js";
import { ETH_ARP, FRAG_LATER, PROTO_ICMP, PROTO_TCP, PROTO_UDP } from "../packets/packet.js";
import { type CtTuple, ctKey, ctReturnKey, ip4CtKey, ip4CtTag } from "./conntrack.js";
import { flowHash } from "./flow-hash.js";
import { F } from "./flow-match.js";
import { emitGenerated } from "./generate.js";
import { type NatBinding, natKey } from "./nat-table.js";
import {
  ICMP_UNREACH,
  ICMP6_UNREACH,
  ICMP6_UNREACH_ADMIN,
  icmp6Error,
  icmpError,
  mayAnswerWithError,
  tcpReset,
  tcpReset6,
  UNREACH_ADMIN,
} from "./replies.js";
import type { CompiledCondition, CompiledRule } from "./rule-compile.js";
import { bucketEtherType, bucketKey, type IndexedRun } from "./rule-index.js";
import { type PortView, tag } from "./topology-view.js";
import type { Walk } from "./walk.js";

const RA = topologypb.RuleAction;

export const CHAIN_ACCEPT = 0;
export const CHAIN_DROP = 1;
/** Internal: fell off the end of a jumped-to chain, or RETURN: continue in the caller. */
const CHAIN_CONTINUE = 2;

export interface ChainCtx {
  /** The port the packet entered the chain's device by ("" for tunnel ingress). */
  inPortId: string;
  /** The port it is leaving by (outbound port filters only). */
  outPortId: string;
  /** The device owning the chain: conntrack zone and NAT scope. */
  zoneId: string;
  /** Where a REJECT's reply is sent back out (null: reject silently drops). */
  replyPort: PortView | null;
}

/** Fills the walk's filter context and runs the filter `chainId` (see ChainCtx for the fields). */
export function filterAt(
  w: Walk,
  chainId: string,
  inPortId: string,
  outPortId: string,
  zoneId: string,
  replyPort: PortView | null,
): number {
  const cc = w.cc;
  cc.inPortId = inPortId;
  cc.outPortId = outPortId;
  cc.zoneId = zoneId;
  cc.replyPort = replyPort;
  return runFilter(w, chainId, cc);
}

/** Runs the filter chain `chainId`; CHAIN_ACCEPT or CHAIN_DROP (drop reason set on the walk). */
export function runFilter(w: Walk, chainId: string, cc: ChainCtx): number {
  w.jumpDepth = 0; // evalChain unwinds what it pushes; this only matters after a throw
  const v = evalChain(w, chainId, cc);
  return v === CHAIN_DROP ? CHAIN_DROP : CHAIN_ACCEPT;
}

/** A rule did not decide: go on with the next one. */
const NEXT = -1;

function evalChain(w: Walk, chainId: string, cc: ChainCtx): number {
  const chain = w.view.chains.get(chainId);
  if (chain) w.tag(chain.tag);
  else w.tagStr(tag.chain(chainId));
  if (!chain) {
    w.drop(`chain ${chainId} is not in the topology (failing closed)`);
    return CHAIN_DROP;
  }
  // The jump stack is filled up to jumpDepth and never truncated (that would free its storage).
  const stack = w.jumpStack;
  const depth = w.jumpDepth;
  for (let i = 0; i < depth; i++) {
    if (stack[i] === chainId) {
      w.drop(`jump loop: ${[...stack.slice(0, depth), chainId].join(" → ")}`);
      return CHAIN_DROP;
    }
  }
  if (depth >= w.state.limits.maxJumpDepth) {
    w.drop(`chain jumps nested deeper than ${w.state.limits.maxJumpDepth}`);
    return CHAIN_DROP;
  }
  stack[depth] = chainId;
  w.jumpDepth = depth + 1;
  if (w.tracing) w.trace("chain", chainId, `evaluate ${chain.rules.length} rules`);
  try {
    const rules = chain.rules;
    const runs = chain.runs;
    // Indexed loops on the packet path: a for-of iterator is not always optimized away.
    for (let r = 0; r < runs.length; r++) {
      const run = runs[r]!;
      let v = NEXT;
      if (run.buckets !== undefined) v = evalIndexed(w, run, cc);
      else {
        for (let i = run.start; i < run.end && v === NEXT; i++) v = stepRule(w, rules[i]!, cc);
      }
      if (v !== NEXT) return v;
    }
    if (w.tracing) w.trace("chain", chainId, "end of chain");
    return depth === 0 ? CHAIN_ACCEPT : CHAIN_CONTINUE;
  } finally {
    w.jumpDepth = depth;
  }
}

/** One rule: NEXT when it does not decide, else the chain's result. */
function stepRule(w: Walk, rule: CompiledRule, cc: ChainCtx): number {
  if (rule.error) {
    w.tag(rule.tag);
    w.drop(`${rule.error} (failing closed)`);
    return CHAIN_DROP;
  }
  if (rule.cond && !matches(w, rule.cond, cc)) return NEXT;
  w.tag(rule.tag);
  const v = applyRule(w, rule, cc);
  if (v !== CHAIN_CONTINUE) return v;
  return rule.action === RA.RULE_ACTION_RETURN ? CHAIN_CONTINUE : NEXT;
}

const NO_RULES: CompiledRule[] = [];

/**
 * An indexed run: only the rules of the packet's (ether type, protocol) bucket, and of those on a
 * single destination port only the packet's, merged back into position order. Reads the fields
 * in the order the linear walk would: the ether type (every rule of the run reads it first), the
 * protocol (if some rule's ether type fits), tp_dst (once the walk reaches the first single-port
 * rule of the bucket).
 */
function evalIndexed(w: Walk, run: IndexedRun, cc: ChainCtx): number {
  const m = w.m;
  const et = m.etherType;
  if (!run.anyEtherType && !run.etherTypes.has(et)) return NEXT;
  const bucket = run.buckets.get(bucketKey(bucketEtherType(run, et), protoOf(w)));
  if (bucket === undefined) return NEXT;
  const others = bucket.others;
  let byPort: CompiledRule[] | null = null;
  let o = 0;
  let p = 0;
  for (;;) {
    const next = o < others.length ? others[o]! : null;
    if (byPort === null && (next === null || next.index > bucket.firstPortRule)) {
      // The linear walk reaches the first single-port rule here and reads the port.
      if (bucket.byPort.size === 0) byPort = NO_RULES;
      else byPort = hasPorts(w) ? (bucket.byPort.get(m.tpDst) ?? NO_RULES) : NO_RULES;
    }
    const portRule = byPort !== null && p < byPort.length ? byPort[p]! : null;
    let rule: CompiledRule;
    if (next !== null && (portRule === null || next.index < portRule.index)) {
      rule = next;
      o++;
    } else if (portRule !== null) {
      rule = portRule;
      p++;
    } else return NEXT;
    const v = stepRule(w, rule, cc);
    if (v !== NEXT) return v;
  }
}

function applyRule(w: Walk, rule: CompiledRule, cc: ChainCtx): number {
  switch (rule.action) {
    case RA.RULE_ACTION_ACCEPT:
      if (w.tracing) w.trace("rule", rule.id, "accept");
      return CHAIN_ACCEPT;
    case RA.RULE_ACTION_DROP:
      if (w.tracing) w.trace("rule", rule.id, "drop");
      w.drop(`dropped by rule ${rule.id} in chain ${rule.chainId}`);
      return CHAIN_DROP;
    case RA.RULE_ACTION_REJECT:
      if (w.tracing) w.trace("rule", rule.id, "reject");
      reject(w, cc);
      w.drop(`rejected by rule ${rule.id} in chain ${rule.chainId}`);
      return CHAIN_DROP;
    case RA.RULE_ACTION_CONTINUE:
      if (w.tracing) w.trace("rule", rule.id, "continue");
      return CHAIN_CONTINUE;
    case RA.RULE_ACTION_RETURN:
      if (w.tracing) w.trace("rule", rule.id, "return");
      return CHAIN_CONTINUE;
    case RA.RULE_ACTION_JUMP: {
      if (w.tracing) w.trace("rule", rule.id, `jump to ${rule.jumpChainId}`);
      const v = evalChain(w, rule.jumpChainId, cc);
      return v === CHAIN_CONTINUE ? CHAIN_CONTINUE : v;
    }
    case RA.RULE_ACTION_SNAT:
    case RA.RULE_ACTION_DNAT:
      return forwardNat(w, rule, cc) ? CHAIN_ACCEPT : w.dropReason ? CHAIN_DROP : CHAIN_CONTINUE;
    case RA.RULE_ACTION_REVERSE_SNAT:
    case RA.RULE_ACTION_REVERSE_DNAT:
      return reverseNat(w, rule, cc) ? CHAIN_ACCEPT : CHAIN_CONTINUE;
    default:
      w.drop(`rule ${rule.id} has unknown action ${rule.action} (failing closed)`);
      return CHAIN_DROP;
  }
}

function inRange(v: number, start: number, end: number): boolean {
  return v >= start && v <= end;
}

/** Every set field must match; each inversion negates its own field. */
function matches(w: Walk, c: CompiledCondition, cc: ChainCtx): boolean {
  const m = w.m;
  if (c.inPorts && c.inPorts.has(cc.inPortId) === c.invInPorts) return false;
  if (c.outPorts && c.outPorts.has(cc.outPortId) === c.invOutPorts) return false;
  if (c.portGroupId) {
    const g = w.view.portGroups.get(c.portGroupId);
    if (g) w.tag(g.tag);
    else w.tagStr(tag.portGroup(c.portGroupId));
    if ((g?.ports.has(cc.inPortId) ?? false) === c.invPortGroup) return false;
  }
  if (c.ethSrc >= 0 && (m.ethSrc === c.ethSrc) === c.invEthSrc) return false;
  if (c.ethDst >= 0 && (m.ethDst === c.ethDst) === c.invEthDst) return false;
  if (c.etherType !== 0 && (m.etherType === c.etherType) === c.invEtherType) return false;
  if (c.vlan !== 0 && m.vlan !== c.vlan) return false;
  if (c.noVlan && m.vlan !== 0) return false;
  if (c.nwProto !== 0 && (protoOf(w) === c.nwProto) === c.invNwProto) return false;
  // Ports before addresses: rule-index.ts relies on nothing being read between the protocol and
  // tp_dst for single-port rules.
  if (c.tpSrcStart >= 0 && (hasPorts(w) && inRange(m.tpSrc, c.tpSrcStart, c.tpSrcEnd)) === c.invTpSrc)
    return false;
  if (c.tpDstStart >= 0 && (hasPorts(w) && inRange(m.tpDst, c.tpDstStart, c.tpDstEnd)) === c.invTpDst)
    return false;
  if ((c.nwSrc4 || c.nwSrc6) && addrMatch(w, true, c) === c.invNwSrc) return false;
  if ((c.nwDst4 || c.nwDst6) && addrMatch(w, false, c) === c.invNwDst) return false;
  if (c.ipGroupSrc && groupMatch(w, c.ipGroupSrc, true) === c.invIpGroupSrc) return false;
  if (c.ipGroupDst && groupMatch(w, c.ipGroupDst, false) === c.invIpGroupDst) return false;
  if (c.matchForward || c.matchReturn) {
    const ret = isReturnFlow(w, cc.zoneId);
    if (c.matchReturn && !ret) return false;
    if (c.matchForward && ret) return false;
  }
  if (c.matchEstablished && isEstablished(w, cc.zoneId) === c.invEstablished) return false;
  return true;
}

function hasPorts(w: Walk): boolean {
  const m = w.m;
  if (m.ipVersion === 0 || m.nwFrag === FRAG_LATER) return false;
  const p = m.nwProto;
  return p === PROTO_TCP || p === PROTO_UDP || p === PROTO_ICMP || p === 58;
}

/** The network protocol a condition sees: the IP protocol, or for ARP the operation (as MidoNet). */
function protoOf(w: Walk): number {
  const m = w.m;
  const v = m.ipVersion;
  if (v !== 0) return m.nwProto;
  return m.etherType === ETH_ARP ? m.arpOp : -1;
}

/**
 * The IPv4 source/destination a condition sees: for ARP frames the sender/target protocol address
 * (MidoNet's convention, which anti-spoofing rules rely on: one address check covers IP and ARP).
 */
function ip4Of(w: Walk, src: boolean): number {
  const m = w.m;
  if (m.ipVersion === 4) return src ? m.nwSrc : m.nwDst;
  if (m.ipVersion === 0 && m.etherType === ETH_ARP) return src ? m.arpSpa : m.arpTpa;
  return -1;
}

function addrMatch(w: Walk, src: boolean, c: CompiledCondition): boolean {
  const m = w.m;
  const v = m.ipVersion;
  if (v !== 6) {
    const cidr = src ? c.nwSrc4 : c.nwDst4;
    if (!cidr) return false;
    const a = ip4Of(w, src);
    if (a < 0) return false;
    return (a & cidr.mask) >>> 0 === cidr.addr;
  }
  if (v === 6) {
    const cidr = src ? c.nwSrc6 : c.nwDst6;
    return cidr !== null && inCidr6(cidr, src ? m.nwSrc6 : m.nwDst6);
  }
  return false;
}

function groupMatch(w: Walk, groupId: string, src: boolean): boolean {
  const g = w.view.ipGroups.get(groupId);
  if (!g) {
    w.tagStr(tag.ipGroup(groupId));
    return false;
  }
  w.tag(g.tag);
  const m = w.m;
  const v = m.ipVersion;
  if (v !== 6) {
    const a = ip4Of(w, src);
    if (a < 0) return false;
    if (g.v4.has(a)) return true;
    const cidrs = g.v4Cidrs;
    for (let i = 0; i < cidrs.length; i++) {
      const c = cidrs[i]!;
      if ((a & c.mask) >>> 0 === c.addr) return true;
    }
    return false;
  }
  if (v === 6) {
    const a = src ? m.nwSrc6 : m.nwDst6;
    for (const c of g.v6) if (inCidr6(c, a)) return true;
  }
  return false;
}

/**
 * The 5-tuple conntrack and NAT key on (ICMP: the echo identifier stands in for ports), in the
 * walk's scratch tuple: use it before anything else asks for a tuple.
 */
export function tupleOf(w: Walk): CtTuple {
  const m = w.m;
  const proto = m.nwProto;
  const icmp = proto === PROTO_ICMP || proto === 58;
  const frag = m.nwFrag === FRAG_LATER;
  const v = m.ipVersion;
  const t = w.tuple;
  t.ipVersion = v;
  t.proto = proto;
  t.src = v === 4 ? m.nwSrc : 0;
  t.dst = v === 4 ? m.nwDst : 0;
  t.src6 = v === 6 ? m.nwSrc6 : EMPTY6;
  t.dst6 = v === 6 ? m.nwDst6 : EMPTY6;
  // ICMP: the echo identifier stands in for both ports, so the tuple is symmetric and a reply's
  // reversed tuple equals its request's (conntrack return keys and reverse NAT keys match).
  t.sport = frag ? 0 : icmp ? m.icmpId : m.tpSrc;
  t.dport = frag ? 0 : icmp ? m.icmpId : m.tpDst;
  return t;
}
const EMPTY6 = new Uint32Array(4);
const ICMP_ECHO_REQUEST = 8;
const ICMP_ECHO_REPLY = 0;
const CT_ZONE = "";

/**
 * Whether the packet belongs to the return direction of a committed connection. A
 * forward packet records its own key, committed when the simulation ends without a drop.
 */
function isReturnFlow(w: Walk, checkedAt: string): boolean {
  if (w.m.ipVersion === 0) return false;
  // A packet the simulation generated (echo reply, ICMP error, TCP reset) answers the packet just
  // simulated, back toward its sender: return traffic for a stateful filter, though that packet
  // committed nothing (it was absorbed or dropped) and an ICMP error matches no reversed tuple.
  // It is never cached and commits nothing.
  if (w.generatedDepth > 0) {
    if (w.tracing) w.trace("conntrack", "", "generated reply: return traffic");
    return true;
  }
  const t = tupleOf(w);
  if (t.ipVersion === 4 && t.proto === PROTO_ICMP && isIcmp4Error(w.m.tpSrc)) return relatedIcmp4(w);
  // One conntrack zone per agent: the forward packet and its reply are checked at different
  // devices (each VM's own bridge), so a per-device zone would never see the reply.
  const zone = CT_ZONE;
  const ct = w.state.conntrack;
  if (t.ipVersion === 4) {
    // IPv4 (zone ""): looked up and recorded by numbers; key strings are built only for the result.
    // Tagged either way: a result decided by the entry's absence (a drop of a reply whose state
    // had not arrived yet) must go stale when the entry is installed, as one decided by its
    // presence must when it expires.
    w.tagStr(ip4CtTag(t.proto, t.dst, t.dport, t.src, t.sport));
    if (ct.hasTuple(t.proto, t.dst, t.dport, t.src, t.sport, w.ctx.now)) {
      if (w.tracing) w.trace("conntrack", ctReturnKey(zone, t), "return flow");
      return true;
    }
    w.pendCt4(t.proto, t.src, t.sport, t.dst, t.dport, checkedAt);
    if (w.tracing) w.trace("conntrack", ctKey(zone, t), "forward flow");
    return false;
  }
  const rk = ctReturnKey(zone, t);
  w.tagStr(tag.ct(rk));
  if (ct.has(rk, w.ctx.now)) {
    if (w.tracing) w.trace("conntrack", rk, "return flow");
    return true;
  }
  const fk = ctKey(zone, t);
  w.pendCt(fk, checkedAt);
  if (w.tracing) w.trace("conntrack", fk, "forward flow");
  return false;
}

/**
 * Whether the packet belongs to an established connection: return traffic (isReturnFlow), or a
 * forward packet whose connection an earlier packet committed. A packet that opens a connection
 * commits it (isReturnFlow records its key), so the next packet with the same key is established:
 * a result that read "not established" is not cached — installed as a flow it would go on treating
 * the connection's later packets as new. An established forward packet's result is tagged with
 * its entry, so it goes stale when the entry expires.
 */
function isEstablished(w: Walk, checkedAt: string): boolean {
  if (w.m.ipVersion === 0) return false; // only IP is tracked; nothing changes for later frames
  if (isReturnFlow(w, checkedAt)) return true;
  if (w.generatedDepth > 0) return false; // isReturnFlow took it as return traffic already
  const t = tupleOf(w);
  const ct = w.state.conntrack;
  let committed: boolean;
  if (t.ipVersion === 4 && t.proto === PROTO_ICMP && isIcmp4Error(w.m.tpSrc)) {
    committed = false; // an error related to nothing (relatedIcmp4 said so; not cached)
  } else if (t.ipVersion === 4) {
    w.tagStr(ip4CtTag(t.proto, t.src, t.sport, t.dst, t.dport));
    committed = ct.hasTuple(t.proto, t.src, t.sport, t.dst, t.dport, w.ctx.now);
  } else {
    const fk = ctKey(CT_ZONE, t);
    w.tagStr(tag.ct(fk));
    committed = ct.has(fk, w.ctx.now);
  }
  if (w.tracing) w.trace("conntrack", "", committed ? "established" : "new connection");
  if (!committed) w.result.cacheable = false;
  return committed;
}

/** ICMPv4 error types: unreachable, source quench, redirect, time exceeded, parameter problem. */
function isIcmp4Error(type: number): boolean {
  return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
}

/**
 * An ICMP error is related to the connection whose packet it quotes (conntrack's RELATED): return
 * traffic when that packet is a committed forward packet of the error's destination. Decided by
 * bytes no flow key holds, so never cached.
 */
function relatedIcmp4(w: Walk): boolean {
  w.result.cacheable = false;
  const p = w.pkt;
  const b = p.buf;
  const q = p.payloadOff;
  if (q < 0 || q + 20 > p.ipEnd || b[q]! >>> 4 !== 4) return false;
  const ihl = (b[q]! & 0x0f) * 4;
  const proto = b[q + 9]!;
  const src = readU32(b, q + 12);
  const dst = readU32(b, q + 16);
  // Only about the packet the error's destination sent, and with the part of its L4 header a key needs.
  if (ihl < 20 || src !== w.m._nwDst || q + ihl + 8 > p.ipEnd) return false;
  const l4 = q + ihl;
  let sport: number;
  let dport: number;
  if (proto === PROTO_TCP || proto === PROTO_UDP) {
    sport = readU16(b, l4);
    dport = readU16(b, l4 + 2);
  } else if (proto === PROTO_ICMP) sport = dport = readU16(b, l4 + 4);
  else return false;
  const found = w.state.conntrack.hasTuple(proto, src, sport, dst, dport, w.ctx.now);
  if (w.tracing)
    w.trace(
      "conntrack",
      ip4CtKey(proto, src, sport, dst, dport),
      found ? "related ICMP error" : "ICMP error about no connection",
    );
  return found;
}

function isStatic(rule: CompiledRule): boolean {
  const t = rule.natTargets[0];
  return (
    rule.natTargets.length === 1 &&
    t !== undefined &&
    t.ipStart === t.ipEnd &&
    t.portStart === 0 &&
    t.portEnd === 0
  );
}

/** SNAT/DNAT. Returns true when translated (the rule then accepts). */
function forwardNat(w: Walk, rule: CompiledRule, cc: ChainCtx): boolean {
  const m = w.m;
  const snat = rule.action === RA.RULE_ACTION_SNAT;
  if (rule.natTargets.length === 0) {
    w.drop(`rule ${rule.id}: ${snat ? "SNAT" : "DNAT"} without targets (failing closed)`);
    return false;
  }
  if (m.ipVersion !== 4) return false;
  // Static 1:1 (floating IP): one address, no ports — rewrite the address, keep no state.
  if (isStatic(rule)) {
    const ip = rule.natTargets[0]!.ipStart;
    if (snat) m._nwSrc = ip;
    else m._nwDst = ip;
    m.written |= snat ? F.NW_SRC : F.NW_DST;
    if (w.tracing) w.trace("nat", rule.id, `static ${snat ? "SNAT" : "DNAT"} to ${formatIp4(ip)}`);
    return true;
  }
  const t = tupleOf(w);
  if (m.nwFrag === FRAG_LATER) {
    w.drop(`rule ${rule.id}: cannot translate a non-first IP fragment`);
    return false;
  }
  const kind = snat ? "snat" : "dnat";
  // Only an echo request's bytes 4-5 are an identifier (other ICMP messages keep them: unused,
  // or a parameter problem's pointer), so only it has one translated.
  const echo = t.proto === PROTO_ICMP && m.tpSrc === ICMP_ECHO_REQUEST;
  const key = natKey(kind, cc.zoneId, t.proto, t.src, t.sport, t.dst, t.dport);
  const now = w.ctx.now;
  let b = w.state.nat.lookupForward(key, now);
  if (!b) {
    if (w.state.nat.full()) {
      w.drop(`NAT table full (${w.state.nat.maxBindings} bindings): rule ${rule.id}`);
      // Not cached, as a full conntrack table: the next packet may find room.
      w.result.cacheable = false;
      return false;
    }
    const h = flowHash(t, w.ctx.hashSeed ?? 0);
    const target = rule.natTargets[h % rule.natTargets.length]!;
    const natIp = (target.ipStart + (h % (target.ipEnd - target.ipStart + 1))) >>> 0;
    const icmp = t.proto === PROTO_ICMP;
    let natPort: number;
    let allocated = false;
    // ICMP echo: SNAT takes the identifier from the host's leased blocks as it takes a port (two
    // hosts' pings with one id to one destination must not share replies); DNAT keeps it.
    if (target.portEnd === 0 || (icmp && !(snat && echo))) natPort = snat ? t.sport : t.dport;
    else if (snat) {
      natPort = w.state.natPorts.allocate(
        cc.zoneId,
        natIp,
        Math.max(1, target.portStart),
        target.portEnd,
        h,
        now,
      );
      if (natPort < 0) {
        w.drop(`rule ${rule.id}: no SNAT port available on ${formatIp4(natIp)} (no free leased block)`);
        // Not cached: the host asks for a block in the background and the next packet may get one.
        w.result.cacheable = false;
        return false;
      }
      allocated = true;
    } else natPort = target.portStart + (h % (target.portEnd - target.portStart + 1));
    b = snat
      ? binding(
          "snat",
          key,
          // An echo reply carries the translated identifier in both "port" positions.
          natKey("rsnat", cc.zoneId, t.proto, t.dst, icmp ? natPort : t.dport, natIp, natPort),
          cc.zoneId,
          t.src,
          t.sport,
          natIp,
          natPort,
          now + w.state.nat.idleMs,
        )
      : binding(
          "dnat",
          key,
          natKey("rdnat", cc.zoneId, t.proto, natIp, natPort, t.src, t.sport),
          cc.zoneId,
          t.dst,
          t.dport,
          natIp,
          natPort,
          now + w.state.nat.idleMs,
        );
    // Translations whose replies look alike (SNAT of echo ids outside a port range; DNAT of two
    // addresses to one backend) would share a reverse entry, and one side's replies would reach
    // the other.
    const clash = w.state.nat.lookupReverse(b.reverseKey, now);
    if (clash !== undefined && clash.key !== key) {
      w.drop(
        `rule ${rule.id}: ${kind} to ${formatIp4(b.natIp)}:${b.natPort} would collide with the replies of binding ${clash.key}`,
      );
      if (allocated) w.state.natPorts.free(cc.zoneId, natIp, natPort, now);
      // Not cached: the other connection may end first.
      w.result.cacheable = false;
      return false;
    }
    w.state.nat.put(b);
    w.add("nat", { ...b });
  }
  w.tagStr(tag.nat(b.key));
  const ports = t.proto !== PROTO_ICMP;
  if (snat) {
    m._nwSrc = b.natIp;
    if (ports) m._tpSrc = b.natPort;
    else if (echo) m._icmpId = b.natPort;
  } else {
    m._nwDst = b.natIp;
    if (ports) m._tpDst = b.natPort;
  }
  m.written |= snat
    ? F.NW_SRC | (ports ? F.TP_SRC : echo ? F.ICMP_ID : 0)
    : F.NW_DST | (ports ? F.TP_DST : 0);
  if (w.tracing) w.trace("nat", rule.id, `${kind} to ${formatIp4(b.natIp)}:${b.natPort}`);
  return true;
}

function binding(
  kind: "snat" | "dnat",
  key: string,
  reverseKey: string,
  deviceId: string,
  origIp: number,
  origPort: number,
  natIp: number,
  natPort: number,
  expiresAt: number,
): NatBinding {
  return { kind, key, reverseKey, deviceId, origIp, origPort, natIp, natPort, expiresAt };
}

function reverseNat(w: Walk, rule: CompiledRule, cc: ChainCtx): boolean {
  const m = w.m;
  if (m.ipVersion !== 4) return false;
  const t = tupleOf(w);
  const snat = rule.action === RA.RULE_ACTION_REVERSE_SNAT;
  const key = natKey(snat ? "rsnat" : "rdnat", cc.zoneId, t.proto, t.src, t.sport, t.dst, t.dport);
  const b = w.state.nat.lookupReverse(key, w.ctx.now);
  if (!b) {
    if (w.tracing) w.trace("nat", rule.id, `no ${snat ? "SNAT" : "DNAT"} binding: continue`);
    return false;
  }
  w.tagStr(tag.nat(b.key));
  const ports = t.proto !== PROTO_ICMP;
  const echoReply = !ports && m.tpSrc === ICMP_ECHO_REPLY;
  if (snat) {
    m._nwDst = b.origIp;
    if (ports) m._tpDst = b.origPort;
    else if (echoReply) m._icmpId = b.origPort;
  } else {
    m._nwSrc = b.origIp;
    if (ports) m._tpSrc = b.origPort;
  }
  m.written |= snat
    ? F.NW_DST | (ports ? F.TP_DST : echoReply ? F.ICMP_ID : 0)
    : F.NW_SRC | (ports ? F.TP_SRC : 0);
  if (w.tracing)
    w.trace("nat", rule.id, `reverse ${snat ? "SNAT" : "DNAT"} to ${formatIp4(b.origIp)}:${b.origPort}`);
  return true;
}

/** REJECT: a TCP reset or ICMP(v6) admin-prohibited back toward the sender, when one may be sent. */
function reject(w: Walk, cc: ChainCtx): void {
  const port = cc.replyPort;
  const m = w.m;
  const p = w.pkt;
  if (!port || w.generatedDepth > 0) return;
  // Whether to answer depends on fields the mask does not hold (TCP flags, ICMP type, addresses
  // classes): each rejected packet is decided on its own, never by a flow.
  w.result.cacheable = false;
  if (!mayAnswerWithError(p)) {
    if (w.tracing) w.trace("decision", port.id, "reject: no reply to this packet (RFC 1122 3.2.2 / RFC 793)");
    return;
  }
  const tcp = m.nwProto === PROTO_TCP;
  let frame: Uint8Array;
  if (m.ipVersion === 4)
    frame = tcp
      ? tcpReset(p, m._ethDst, m._ethSrc, m._nwDst, m._nwSrc, m._tpDst, m._tpSrc)
      : icmpError(p, ICMP_UNREACH, UNREACH_ADMIN, m._ethDst, m._ethSrc, m._nwDst, m._nwSrc);
  else
    frame = tcp
      ? tcpReset6(p, m._ethDst, m._ethSrc)
      : icmp6Error(p, ICMP6_UNREACH, ICMP6_UNREACH_ADMIN, m._ethDst, m._ethSrc);
  emitGenerated(w, frame, port, "reject");
}
