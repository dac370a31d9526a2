// SecurityGroup → an ingress and an egress chain plus an IpAddrGroup; each port (PortRecord, any
// site) in the group → one IpAddrGroupMember with its addresses; each SecurityGroupRule → one
// ACCEPT rule in its group's chain. A rule naming a remote group matches through that group's
// IpAddrGroup and its members, so a port joining or leaving anywhere in the federation changes
// one member object here — not the group's whole address list, nor the rules naming it.
import { intentpb, topologypb } from "@isthmus/schema";
import { canonicalIp, networkOf, parseCidr } from "./cidr.js";
import { type DerivedSet, ETHER_TYPE_IPV4, ETHER_TYPE_IPV6 } from "./derived-set.js";
import { derivedId, securityGroupAddrGroupId, securityGroupChainId, securityGroupMemberId } from "./ids.js";
import type { IntentView } from "./view.js";

/** Positions inside a group chain: the return-flow accept first, then the group's rules. */
export const SG_RETURN_FLOW_POSITION = 0;
export const SG_RULE_POSITION = 100;

const PROTOCOLS: Record<string, number> = { any: 0, tcp: 6, udp: 17, icmp: 1, icmpv6: 58 };
const PORT_PROTOCOLS = new Set([6, 17, 132]); // tcp, udp, sctp
const ICMP_PROTOCOLS = new Set([1, 58]);

/**
 * Unit "securityGroup": the two chains (with the stateful return-flow accept) and the address
 * group, which holds no addresses itself: its members do (deriveGroupMembers).
 */
export function deriveSecurityGroup(view: IntentView, id: string, out: DerivedSet): void {
  const g = view.get("securityGroup", id);
  if (!g) return;
  const name = g.meta?.name ?? "";
  for (const dir of ["ingress", "egress"] as const) {
    const chainId = securityGroupChainId(id, dir);
    out.chain({ id: chainId, name: `sg-${name}-${dir}` });
    if (!g.stateless) {
      out.rule({
        id: derivedId(id, `return-flow/${dir}`),
        chainId,
        position: SG_RETURN_FLOW_POSITION,
        condition: { matchReturnFlow: true },
        action: topologypb.RuleAction.RULE_ACTION_ACCEPT,
        intentId: id,
      });
    }
  }
  out.ipAddrGroup({ id: securityGroupAddrGroupId(id), name: `sg-${name}`, addresses: [] });
}

/**
 * Unit "groupMember" (one per PortRecord): the record's addresses as a member of each existing
 * group it lists. A record without a valid address adds nothing to any group and has no member.
 */
export function deriveGroupMembers(view: IntentView, id: string, out: DerivedSet): void {
  const p = view.get("portRecord", id);
  if (!p) return;
  const addresses = new Set<string>();
  for (const text of p.ips) {
    const ip = canonicalIp(text);
    if (ip) addresses.add(ip); // malformed addresses are reported by the record's own unit
  }
  if (addresses.size === 0) return;
  const sorted = [...addresses].sort();
  for (const g of [...new Set(p.securityGroupIds)].sort()) {
    if (!view.get("securityGroup", g)) continue;
    out.ipAddrGroupMember({
      id: securityGroupMemberId(g, id),
      groupId: securityGroupAddrGroupId(g),
      addresses: sorted,
      intentId: id,
    });
  }
}

/** Unit "securityGroupRule": one ACCEPT rule in the group's chain for the rule's direction. */
export function deriveSecurityGroupRule(view: IntentView, id: string, out: DerivedSet): void {
  const rule = view.get("securityGroupRule", id);
  if (!rule) return;
  const g = view.get("securityGroup", rule.securityGroupId);
  if (!g) return;
  const condition = ruleCondition(rule);
  if (typeof condition === "string") {
    out.problem(`security group rule ${id}: ${condition}; rule not installed`);
    return;
  }
  const dir = rule.direction === intentpb.RuleDirection.RULE_DIRECTION_EGRESS ? "egress" : "ingress";
  out.rule({
    id: derivedId(id, "rule"),
    chainId: securityGroupChainId(rule.securityGroupId, dir),
    position: SG_RULE_POSITION,
    condition,
    action: topologypb.RuleAction.RULE_ACTION_ACCEPT,
    intentId: id,
  });
}

/**
 * The match of a rule, or what is wrong with it. Ingress rules filter traffic to the VM, so the
 * remote side is the source; egress rules filter traffic from the VM, the remote is the destination.
 */
export function ruleCondition(rule: intentpb.SecurityGroupRule): Partial<topologypb.Condition> | string {
  const ingress = rule.direction === intentpb.RuleDirection.RULE_DIRECTION_INGRESS;
  if (!ingress && rule.direction !== intentpb.RuleDirection.RULE_DIRECTION_EGRESS) {
    return "direction must be INGRESS or EGRESS";
  }
  const protoText = rule.protocol.trim().toLowerCase();
  let proto: number;
  if (protoText === "") proto = 0;
  else if (protoText in PROTOCOLS) proto = PROTOCOLS[protoText]!;
  else if (/^\d{1,3}$/.test(protoText) && Number(protoText) <= 255) proto = Number(protoText);
  else return `protocol "${rule.protocol}" is not any, tcp, udp, icmp, icmpv6 or 0–255`;

  let family: 4 | 6 | undefined;
  if (rule.ethertype === intentpb.EtherType.ETHER_TYPE_IPV4) family = 4;
  else if (rule.ethertype === intentpb.EtherType.ETHER_TYPE_IPV6) family = 6;
  else if (proto === 1) family = 4;
  else if (proto === 58) family = 6;

  const c: Partial<topologypb.Condition> = { nwProto: proto };
  if (rule.remoteCidr !== "" && rule.remoteGroupId !== "") {
    return "remote_cidr and remote_group_id are mutually exclusive";
  }
  if (rule.remoteCidr !== "") {
    const cidr = rule.remoteCidr.includes("/")
      ? rule.remoteCidr
      : `${rule.remoteCidr}/${rule.remoteCidr.includes(":") ? 128 : 32}`;
    const parsed = parseCidr(cidr);
    const net = networkOf(cidr);
    if (!parsed || !net) return `remote_cidr "${rule.remoteCidr}" is not a CIDR`;
    if (family !== undefined && parsed.family !== family)
      return `remote_cidr "${rule.remoteCidr}" is not IPv${family}`;
    family = parsed.family;
    if (ingress) c.nwSrc = net;
    else c.nwDst = net;
  } else if (rule.remoteGroupId !== "") {
    if (ingress) c.ipAddrGroupSrc = securityGroupAddrGroupId(rule.remoteGroupId);
    else c.ipAddrGroupDst = securityGroupAddrGroupId(rule.remoteGroupId);
  }
  if (family !== undefined) c.etherType = family === 4 ? ETHER_TYPE_IPV4 : ETHER_TYPE_IPV6;

  const min = rule.portRangeMin;
  const max = rule.portRangeMax;
  if (PORT_PROTOCOLS.has(proto) && (min !== 0 || max !== 0)) {
    const end = max === 0 ? min : max;
    if (min > end || end > 65535) return `port range ${min}–${max} is not a range of ports`;
    c.tpDst = { start: min, end };
  } else if (ICMP_PROTOCOLS.has(proto) && (min !== 0 || max !== 0)) {
    // ICMP: min is the type, max the code (above 255 = any code); the packet model carries the
    // ICMP type in tp_src and the code in tp_dst.
    if (min > 255) return `icmp type ${min} is above 255`;
    c.tpSrc = { start: min, end: min };
    if (max <= 255) c.tpDst = { start: max, end: max };
  }
  return c;
}
