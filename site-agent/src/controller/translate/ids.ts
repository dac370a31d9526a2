// Deterministic identities for derived topology: every id and MAC the translation invents is a
// pure function of the source object's id and a role string, so every site and every replay
// derives the same values (UUIDv5-style over SHA-1, per RFC 9562 §5.5).
import { createHash } from "node:crypto";

/** Namespace of every derived id (a fixed random UUID, never to change: ids would all move). */
export const ISTHMUS_ID_NAMESPACE = "5b0f3c1e-8d7a-4e2b-9c61-2f4a7d93e0b5";

const NAMESPACE_BYTES = Buffer.from(ISTHMUS_ID_NAMESPACE.replaceAll("-", ""), "hex");

/** The id of the object playing `role` for source object `sourceId` (a UUIDv5 of "sourceId/role"). */
export function derivedId(sourceId: string, role: string): string {
  const digest = createHash("sha1").update(NAMESPACE_BYTES).update(`${sourceId}/${role}`, "utf8").digest();
  const b = digest.subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | 0x50; // version 5
  b[8] = (b[8]! & 0x3f) | 0x80; // RFC 4122 variant
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/**
 * A locally administered unicast MAC for `role` of `sourceId`. The same on every site, so a
 * router replica answers with one MAC everywhere and a VM never sees its gateway's MAC change.
 */
export function derivedMac(sourceId: string, role: string): string {
  const digest = createHash("sha1").update(`isthmus-mac/${sourceId}/${role}`, "utf8").digest();
  const b = digest.subarray(0, 6);
  b[0] = (b[0]! & 0xfc) | 0x02; // unicast, locally administered
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(":");
}

// The roles, in one place, so every derived id can be traced back to its source by reading this.
// Routers and bridges keep their intent object's id (a router is the same object everywhere).

/** The uplink port of router `routerId`'s replica at `site`. */
export const uplinkPortId = (routerId: string, site: string): string => derivedId(routerId, `uplink/${site}`);
export const uplinkMac = (routerId: string, site: string): string => derivedMac(routerId, `uplink/${site}`);
/** Router chains holding NAT for the uplink at `site`: pre-routing (in) and post-routing (out). */
export const natInChainId = (routerId: string, site: string): string => derivedId(routerId, `nat-in/${site}`);
export const natOutChainId = (routerId: string, site: string): string =>
  derivedId(routerId, `nat-out/${site}`);
/** Linux interface name (≤ 15 bytes) a gateway agent gives the uplink of `routerId`. */
export const uplinkInterfaceName = (routerId: string): string =>
  `isu-${routerId.replaceAll("-", "").slice(0, 8)}`;

export const routerInterfaceRouterPortId = (riId: string): string => derivedId(riId, "router-port");
export const routerInterfaceBridgePortId = (riId: string): string => derivedId(riId, "bridge-port");
export const routerInterfaceMac = (riId: string): string => derivedMac(riId, "router-interface");

/** The bridge port of network `networkId` standing for `site`. */
export const remoteSitePortId = (networkId: string, site: string): string =>
  derivedId(networkId, `remote-site/${site}`);

export type ChainDirection = "ingress" | "egress";
/** A security group's chain for traffic to (ingress) or from (egress) its ports' VMs. */
export const securityGroupChainId = (groupId: string, dir: ChainDirection): string =>
  derivedId(groupId, `chain/${dir}`);
/** The IpAddrGroup a rule naming the group matches through (its members hold the addresses). */
export const securityGroupAddrGroupId = (groupId: string): string => derivedId(groupId, "ip-addr-group");
/** Port `portId`'s addresses as a member of group `groupId`'s IpAddrGroup (any site's port). */
export const securityGroupMemberId = (groupId: string, portId: string): string =>
  derivedId(portId, `ip-addr-group-member/${groupId}`);

/** A VM port's own chain for frames from the VM (anti-spoofing, then its profile's inbound chain). */
export const portInboundChainId = (portId: string): string => derivedId(portId, "chain/inbound");
/**
 * The key of a VM port's set of security groups (its "profile"): the distinct group ids, sorted,
 * joined by "+". Ports with the same groups share the profile's chains.
 */
export const securityGroupSetKey = (groupIds: readonly string[]): string =>
  [...new Set(groupIds)].sort().join("+");
/**
 * The chains shared by every VM port at this site whose groups are `setKey`: frames from the VM
 * after anti-spoofing (inbound: the groups' egress chains) and frames to the VM (outbound: the
 * groups' ingress chains, the port's outbound filter itself).
 */
export const portProfileChainId = (setKey: string, side: "inbound" | "outbound"): string =>
  derivedId(`port-profile/${setKey}`, `chain/${side}`);
/** The IpAddrGroup of a VM port's own addresses (anti-spoofing). */
export const portAddrGroupId = (portId: string): string => derivedId(portId, "ip-addr-group");
