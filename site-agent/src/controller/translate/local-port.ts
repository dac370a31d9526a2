// A VM port bound at this site → a VM port on its network's bridge. Frames from the VM pass the
// port's own chain (anti-spoofing: source MAC and address must be the port's), then its profile's
// inbound chain (its groups' egress chains); frames to the VM pass its profile's outbound chain
// (its groups' ingress chains). A profile's chains are shared by every port here with the same
// groups, so a port adds five rules, not a copy of the guards and jumps. Plus the port's MAC and
// addresses as MAC/ARP entries on the bridge.
import { topologypb } from "@isthmus/schema";
import { canonicalIpList } from "./cidr.js";
import {
  type DerivedSet,
  ETHER_TYPE_ARP,
  ETHER_TYPE_IPV4,
  ETHER_TYPE_IPV6,
  normalizeMac,
} from "./derived-set.js";
import {
  derivedId,
  portAddrGroupId,
  portInboundChainId,
  portProfileChainId,
  securityGroupChainId,
  securityGroupSetKey,
} from "./ids.js";
import type { IntentView } from "./view.js";

/** Positions in a profile chain: fixed guards, then one jump per group, then the final verdict. */
export const PORT_GROUP_JUMP_POSITION = 100;
export const PORT_FINAL_POSITION = 1000;

const { RULE_ACTION_ACCEPT: ACCEPT, RULE_ACTION_DROP: DROP, RULE_ACTION_JUMP: JUMP } = topologypb.RuleAction;
const UDP = 17;
const ICMPV6 = 58;
const LINK_LOCAL_V6 = "fe80::/10";

/** Unit "localPort". */
export function deriveLocalPort(view: IntentView, id: string, out: DerivedSet): void {
  const b = view.get("localPort", id);
  if (!b) return;
  const mac = normalizeMac(b.mac);
  if (!mac)
    out.problem(
      `local port ${id}: mac "${b.mac}" is not a unicast MAC; the port drops everything from its VM`,
    );
  const ips = canonicalIpList(b.ips, (bad) =>
    out.problem(`local port ${id}: ips: "${bad}" is not an IP address; not allowed as a source`),
  );
  const profile = securityGroupSetKey(b.securityGroupIds);
  const inChain = portInboundChainId(id);
  const addrGroup = portAddrGroupId(id);

  out.port({
    id,
    name: b.name,
    type: topologypb.PortType.PORT_TYPE_VM,
    deviceId: b.networkId,
    hostId: b.hostId,
    interfaceName: b.interfaceName,
    mac: mac ?? "",
    ips,
    tunnelKey: b.tunnelKey,
    inboundFilterId: inChain,
    outboundFilterId: portProfileChainId(profile, "outbound"),
    adminStateUp: b.adminStateUp ?? true,
    intentId: id,
  });
  out.ipAddrGroup({ id: addrGroup, name: `port-${b.name || id}-ips`, addresses: [...ips].sort() });

  // From the VM. For ARP frames nw_src is the sender protocol address (MidoNet's convention,
  // which the simulation follows), so one group check covers both IP and ARP spoofing; a frame
  // with no network source (neither IP nor ARP) is in no group and is dropped by the same rule.
  out.chain({ id: inChain, name: `port-${b.name || id}-inbound` });
  let pos = 0;
  const inRule = (
    role: string,
    action: topologypb.RuleAction,
    condition: Partial<topologypb.Condition>,
  ): void => {
    pos += 10;
    out.rule({
      id: derivedId(id, `inbound/${role}`),
      chainId: inChain,
      position: pos,
      condition,
      action,
      intentId: id,
    });
  };
  if (!mac) {
    inRule("bad-mac", DROP, {});
  } else {
    inRule("spoofed-mac", DROP, { ethSrc: mac, invEthSrc: true });
    // DHCPv4 clients send from 0.0.0.0 before they have an address.
    inRule("dhcp-client", ACCEPT, {
      etherType: ETHER_TYPE_IPV4,
      nwProto: UDP,
      tpSrc: { start: 68, end: 68 },
      tpDst: { start: 67, end: 67 },
    });
    // IPv6 neighbour discovery from the link-local address.
    inRule("ipv6-nd", ACCEPT, { etherType: ETHER_TYPE_IPV6, nwProto: ICMPV6, nwSrc: LINK_LOCAL_V6 });
    inRule("spoofed-ip", DROP, { ipAddrGroupSrc: addrGroup, invIpAddrGroupSrc: true });
    // ARP passed the address check above; what else the VM may send is its groups' business.
    pos += 10;
    out.rule({
      id: derivedId(id, "inbound/profile"),
      chainId: inChain,
      position: pos,
      condition: {},
      action: JUMP,
      jumpChainId: portProfileChainId(profile, "inbound"),
      intentId: id,
    });
  }

  // No MacEntry or ArpEntry: the bridge takes a VM port's MAC and addresses from the port itself
  // (translation version 4; they repeated the port, two or more objects for every port of a site
  // in every agent's snapshot).
}

/**
 * Unit "portProfile" (id: a securityGroupSetKey): the two chains every VM port here with exactly
 * those groups shares, derived while at least one such port exists. Their rules depend on the
 * group ids alone (not on the ports, not on the groups' rules), so ports joining and leaving a
 * profile change nothing in it. From the VM (after the port's own anti-spoofing): ARP, then the
 * groups' egress chains. To the VM: ARP, DHCP and IPv6 ND replies always, then the groups'
 * ingress chains.
 */
export function derivePortProfile(view: IntentView, setKey: string, out: DerivedSet): void {
  if (!hasAny(view.localPortsWithGroups(setKey))) return;
  const groups = setKey === "" ? [] : setKey.split("+");
  const inChain = portProfileChainId(setKey, "inbound");
  const outChain = portProfileChainId(setKey, "outbound");
  // Named after the groups; a profile has no single intent object, so its rules name none
  // (the jumps name their group, as before).
  const name = `profile-${groups.length === 0 ? "none" : groups.map((g) => g.slice(0, 8)).join("+")}`;
  const rule = (
    chainId: string,
    role: string,
    position: number,
    action: topologypb.RuleAction,
    condition: Partial<topologypb.Condition>,
  ): void => {
    out.rule({
      id: derivedId(`port-profile/${setKey}`, role),
      chainId,
      position,
      condition,
      action,
      intentId: "",
    });
  };
  out.chain({ id: inChain, name: `${name}-inbound` });
  rule(inChain, "inbound/arp", 10, ACCEPT, { etherType: ETHER_TYPE_ARP });
  groupJumps(setKey, inChain, "egress", groups, out);

  out.chain({ id: outChain, name: `${name}-outbound` });
  rule(outChain, "outbound/arp", 10, ACCEPT, { etherType: ETHER_TYPE_ARP });
  rule(outChain, "outbound/dhcp-server", 20, ACCEPT, {
    etherType: ETHER_TYPE_IPV4,
    nwProto: UDP,
    tpSrc: { start: 67, end: 67 },
    tpDst: { start: 68, end: 68 },
  });
  rule(outChain, "outbound/ipv6-nd", 30, ACCEPT, {
    etherType: ETHER_TYPE_IPV6,
    nwProto: ICMPV6,
    nwSrc: LINK_LOCAL_V6,
  });
  groupJumps(setKey, outChain, "ingress", groups, out);
}

function hasAny(it: Iterable<unknown>): boolean {
  for (const _ of it) return true;
  return false;
}

/**
 * One JUMP per group, then DROP. A group chain ACCEPTs what a rule allows and otherwise returns,
 * so a frame passes when any of the groups allows it. No groups: unfiltered (final ACCEPT);
 * anti-spoofing still applies.
 */
function groupJumps(
  setKey: string,
  chainId: string,
  dir: "ingress" | "egress",
  groups: string[],
  out: DerivedSet,
): void {
  const side = dir === "egress" ? "inbound" : "outbound";
  const source = `port-profile/${setKey}`;
  groups.forEach((g, i) => {
    out.rule({
      id: derivedId(source, `${side}/jump/${g}`),
      chainId,
      position: PORT_GROUP_JUMP_POSITION + i,
      condition: {},
      action: JUMP,
      jumpChainId: securityGroupChainId(g, dir),
      intentId: g,
    });
  });
  out.rule({
    id: derivedId(source, `${side}/final`),
    chainId,
    position: Math.max(PORT_FINAL_POSITION, PORT_GROUP_JUMP_POSITION + groups.length),
    condition: {},
    action: groups.length > 0 ? DROP : ACCEPT,
    intentId: "",
  });
}
