// Compiles a topology Rule into the form chain evaluation uses: parsed MACs and prefixes, port
// sets, numeric ranges and NAT targets. A rule that cannot be compiled keeps its error; evaluating
// it drops the packet naming the rule and field (fail closed: a broken security rule never opens
// traffic by being skipped).
import type { topologypb } from "@isthmus/schema";
import { type Cidr4, type Cidr6, parseCidr4, parseCidr6, parseIp4, parseMac } from "../packets/addr.js";
import { Tag } from "./tag-cache.js";

export interface CompiledNatTarget {
  ipStart: number;
  ipEnd: number;
  portStart: number;
  portEnd: number;
}

export interface CompiledCondition {
  inPorts: Set<string> | null;
  invInPorts: boolean;
  outPorts: Set<string> | null;
  invOutPorts: boolean;
  portGroupId: string;
  invPortGroup: boolean;
  ethSrc: number;
  invEthSrc: boolean;
  ethDst: number;
  invEthDst: boolean;
  etherType: number;
  invEtherType: boolean;
  nwSrc4: Cidr4 | null;
  nwSrc6: Cidr6 | null;
  invNwSrc: boolean;
  nwDst4: Cidr4 | null;
  nwDst6: Cidr6 | null;
  invNwDst: boolean;
  nwProto: number;
  invNwProto: boolean;
  tpSrcStart: number;
  tpSrcEnd: number;
  invTpSrc: boolean;
  tpDstStart: number;
  tpDstEnd: number;
  invTpDst: boolean;
  ipGroupSrc: string;
  invIpGroupSrc: boolean;
  ipGroupDst: string;
  invIpGroupDst: boolean;
  matchForward: boolean;
  matchReturn: boolean;
  /** Established (committed by an earlier packet) only; with invEstablished, new only. */
  matchEstablished: boolean;
  invEstablished: boolean;
  vlan: number;
  noVlan: boolean;
}

export interface CompiledRule {
  id: string;
  tag: Tag;
  chainId: string;
  position: number;
  /** Place in its chain's evaluation order (set when the chain is built). */
  index: number;
  action: topologypb.RuleAction;
  jumpChainId: string;
  natTargets: CompiledNatTarget[];
  cond: CompiledCondition | null;
  /** Why the rule could not be compiled; evaluation then drops. */
  error: string | null;
}

function cidr(s: string, field: string, rule: string): { v4: Cidr4 | null; v6: Cidr6 | null } {
  if (!s) return { v4: null, v6: null };
  if (s.includes(":")) {
    const v6 = parseCidr6(s);
    if (!v6) throw new Error(`rule ${rule}: condition.${field} "${s}" is not an IPv6 prefix`);
    return { v4: null, v6 };
  }
  const v4 = parseCidr4(s);
  if (!v4) throw new Error(`rule ${rule}: condition.${field} "${s}" is not an IPv4 prefix`);
  return { v4, v6: null };
}

function mac(s: string, field: string, rule: string): number {
  if (!s) return -1;
  const m = parseMac(s);
  if (m < 0) throw new Error(`rule ${rule}: condition.${field} "${s}" is not a MAC address`);
  return m;
}

function range(r: topologypb.PortRange | undefined, field: string, rule: string): [number, number] {
  if (!r) return [-1, -1];
  if (r.start > r.end || r.end > 65535) {
    throw new Error(`rule ${rule}: condition.${field} range ${r.start}-${r.end} is not within 0-65535`);
  }
  return [r.start, r.end];
}

export function compileRule(r: topologypb.Rule): CompiledRule {
  const base: CompiledRule = {
    id: r.id,
    tag: new Tag(`rule:${r.id}`),
    chainId: r.chainId,
    position: r.position,
    index: -1,
    action: r.action,
    jumpChainId: r.jumpChainId,
    natTargets: [],
    cond: null,
    error: null,
  };
  try {
    for (const t of r.natTargets) {
      const ipStart = parseIp4(t.ipStart);
      const ipEnd = parseIp4(t.ipEnd || t.ipStart);
      if (ipStart < 0 || ipEnd < ipStart) {
        throw new Error(`rule ${r.id}: nat target ${t.ipStart}-${t.ipEnd} is not an IPv4 range`);
      }
      if (t.portStart > t.portEnd || t.portEnd > 65535) {
        throw new Error(`rule ${r.id}: nat target ports ${t.portStart}-${t.portEnd} are not within 0-65535`);
      }
      base.natTargets.push({ ipStart, ipEnd, portStart: t.portStart, portEnd: t.portEnd });
    }
    const c = r.condition;
    if (c) {
      const src = cidr(c.nwSrc, "nw_src", r.id);
      const dst = cidr(c.nwDst, "nw_dst", r.id);
      const [tpSrcStart, tpSrcEnd] = range(c.tpSrc, "tp_src", r.id);
      const [tpDstStart, tpDstEnd] = range(c.tpDst, "tp_dst", r.id);
      base.cond = {
        inPorts: c.inPortIds.length > 0 ? new Set(c.inPortIds) : null,
        invInPorts: c.invInPorts,
        outPorts: c.outPortIds.length > 0 ? new Set(c.outPortIds) : null,
        invOutPorts: c.invOutPorts,
        portGroupId: c.portGroupId,
        invPortGroup: c.invPortGroup,
        ethSrc: mac(c.ethSrc, "eth_src", r.id),
        invEthSrc: c.invEthSrc,
        ethDst: mac(c.ethDst, "eth_dst", r.id),
        invEthDst: c.invEthDst,
        etherType: c.etherType,
        invEtherType: c.invEtherType,
        nwSrc4: src.v4,
        nwSrc6: src.v6,
        invNwSrc: c.invNwSrc,
        nwDst4: dst.v4,
        nwDst6: dst.v6,
        invNwDst: c.invNwDst,
        nwProto: c.nwProto,
        invNwProto: c.invNwProto,
        tpSrcStart,
        tpSrcEnd,
        invTpSrc: c.invTpSrc,
        tpDstStart,
        tpDstEnd,
        invTpDst: c.invTpDst,
        ipGroupSrc: c.ipAddrGroupSrc,
        invIpGroupSrc: c.invIpAddrGroupSrc,
        ipGroupDst: c.ipAddrGroupDst,
        invIpGroupDst: c.invIpAddrGroupDst,
        matchForward: c.matchForwardFlow,
        matchReturn: c.matchReturnFlow,
        matchEstablished: c.matchEstablished,
        invEstablished: c.invEstablished,
        vlan: c.vlan,
        noVlan: c.noVlan,
      };
    }
  } catch (e) {
    base.error = (e as Error).message;
  }
  return base;
}
