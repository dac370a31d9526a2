// A VM port bound at this site → a VM port on its network's bridge with two chains: frames from
// the VM pass anti-spoofing (source MAC and address must be the port's) and then the port's
// groups' egress chains; frames to the VM pass the groups' ingress chains. Plus the port's MAC
// and addresses as MAC/ARP entries on the bridge.
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
  portOutboundChainId,
  securityGroupChainId,
} from "./ids.js";
import type { IntentView } from "./view.js";

/** Positions in a port chain: fixed guards, then one jump per group, then the final verdict. */
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
  const groups = [...new Set(b.securityGroupIds)];
  const inChain = portInboundChainId(id);
  const outChain = portOutboundChainId(id);
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
    outboundFilterId: outChain,
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
    inRule("arp", ACCEPT, { etherType: ETHER_TYPE_ARP });
    groupJumps(id, inChain, "egress", groups, out);
  }

  // To the VM: ARP and DHCP replies always reach it; the rest goes through the ingress groups.
  out.chain({ id: outChain, name: `port-${b.name || id}-outbound` });
  pos = 0;
  const outRule = (
    role: string,
    action: topologypb.RuleAction,
    condition: Partial<topologypb.Condition>,
  ): void => {
    pos += 10;
    out.rule({
      id: derivedId(id, `outbound/${role}`),
      chainId: outChain,
      position: pos,
      condition,
      action,
      intentId: id,
    });
  };
  outRule("arp", ACCEPT, { etherType: ETHER_TYPE_ARP });
  outRule("dhcp-server", ACCEPT, {
    etherType: ETHER_TYPE_IPV4,
    nwProto: UDP,
    tpSrc: { start: 67, end: 67 },
    tpDst: { start: 68, end: 68 },
  });
  outRule("ipv6-nd", ACCEPT, { etherType: ETHER_TYPE_IPV6, nwProto: ICMPV6, nwSrc: LINK_LOCAL_V6 });
  groupJumps(id, outChain, "ingress", groups, out);

  if (mac) {
    out.macEntry({ id: derivedId(id, "mac-entry"), bridgeId: b.networkId, mac, portId: id });
    for (const ip of ips) out.arpEntry({ id: derivedId(id, `arp/${ip}`), bridgeId: b.networkId, ip, mac });
  }
}

/**
 * One JUMP per group, then DROP. A group chain ACCEPTs what a rule allows and otherwise returns,
 * so a frame passes when any of the port's groups allows it. A port with no groups is unfiltered
 * (final ACCEPT); anti-spoofing still applies.
 */
function groupJumps(
  portId: string,
  chainId: string,
  dir: "ingress" | "egress",
  groups: string[],
  out: DerivedSet,
): void {
  const side = dir === "egress" ? "inbound" : "outbound";
  groups.forEach((g, i) => {
    out.rule({
      id: derivedId(portId, `${side}/jump/${g}`),
      chainId,
      position: PORT_GROUP_JUMP_POSITION + i,
      condition: {},
      action: JUMP,
      jumpChainId: securityGroupChainId(g, dir),
      intentId: g,
    });
  });
  out.rule({
    id: derivedId(portId, `${side}/final`),
    chainId,
    position: Math.max(PORT_FINAL_POSITION, PORT_GROUP_JUMP_POSITION + groups.length),
    condition: {},
    action: groups.length > 0 ? DROP : ACCEPT,
    intentId: portId,
  });
}
