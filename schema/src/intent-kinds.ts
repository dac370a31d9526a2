// The kinds of global intent object, stated once for every package: each kind's IntentObject
// oneof field, its message type and its ObjectKind enum value. The coordinator (federation) and
// the site controller's translation (site-agent) both build on this table.
import * as intentpb from "./gen/isthmus/v1/intent.js";

/** An IntentObject oneof field, one per kind. */
export type IntentKindKey =
  | "site"
  | "gateway"
  | "router"
  | "network"
  | "routerInterface"
  | "securityGroup"
  | "securityGroupRule"
  | "floatingIp"
  | "portRecord";

/** Every kind, in ObjectKind order (snapshots and listings use this order). */
export const INTENT_KIND_KEYS: readonly IntentKindKey[] = [
  "site",
  "gateway",
  "router",
  "network",
  "routerInterface",
  "securityGroup",
  "securityGroupRule",
  "floatingIp",
  "portRecord",
];

/** The message each kind holds. */
export interface IntentKindMessages {
  site: intentpb.Site;
  gateway: intentpb.Gateway;
  router: intentpb.Router;
  network: intentpb.Network;
  routerInterface: intentpb.RouterInterface;
  securityGroup: intentpb.SecurityGroup;
  securityGroupRule: intentpb.SecurityGroupRule;
  floatingIp: intentpb.FloatingIP;
  portRecord: intentpb.PortRecord;
}

const ENUM_OF: Record<IntentKindKey, intentpb.ObjectKind> = {
  site: intentpb.ObjectKind.OBJECT_KIND_SITE,
  gateway: intentpb.ObjectKind.OBJECT_KIND_GATEWAY,
  router: intentpb.ObjectKind.OBJECT_KIND_ROUTER,
  network: intentpb.ObjectKind.OBJECT_KIND_NETWORK,
  routerInterface: intentpb.ObjectKind.OBJECT_KIND_ROUTER_INTERFACE,
  securityGroup: intentpb.ObjectKind.OBJECT_KIND_SECURITY_GROUP,
  securityGroupRule: intentpb.ObjectKind.OBJECT_KIND_SECURITY_GROUP_RULE,
  floatingIp: intentpb.ObjectKind.OBJECT_KIND_FLOATING_IP,
  portRecord: intentpb.ObjectKind.OBJECT_KIND_PORT_RECORD,
};

const KEY_OF = new Map<intentpb.ObjectKind, IntentKindKey>(INTENT_KIND_KEYS.map((k) => [ENUM_OF[k], k]));

/** The ObjectKind enum value of a kind. */
export function intentKindEnum(k: IntentKindKey): intentpb.ObjectKind {
  return ENUM_OF[k];
}

/** The kind an ObjectKind names; undefined for UNSPECIFIED and values this build does not know. */
export function intentKindFromEnum(e: intentpb.ObjectKind): IntentKindKey | undefined {
  return KEY_OF.get(e);
}
