// The reverse lookups of IntentView, stated once as "which index buckets does this object sit in",
// so the in-memory IntentIndex and the prior-state overlay answer them identically.
import { intentKindFromEnum, type intentpb, topologypb } from "@isthmus/schema";
import { securityGroupSetKey } from "./ids.js";
import type { IntentKind, LocalPortBinding, ViewKind, ViewKinds } from "./view.js";

export type IndexName =
  | "routerInterfacesOfRouter"
  | "routerInterfacesOfNetwork"
  | "rulesOfGroup"
  | "portRecordsOfGroup"
  | "portRecordsOfNetwork"
  | "floatingIpsOfRouter"
  | "routersWithUplinkHere"
  | "gatewayHosts"
  | "localPortsByName"
  | "localPortsByGroups";

/** The kind of object each index holds. */
export const INDEX_KIND = {
  routerInterfacesOfRouter: "routerInterface",
  routerInterfacesOfNetwork: "routerInterface",
  rulesOfGroup: "securityGroupRule",
  portRecordsOfGroup: "portRecord",
  portRecordsOfNetwork: "portRecord",
  floatingIpsOfRouter: "floatingIp",
  routersWithUplinkHere: "router",
  gatewayHosts: "host",
  localPortsByName: "localPort",
  localPortsByGroups: "localPort",
} as const satisfies Record<IndexName, ViewKind>;

export type IndexEntry = readonly [IndexName, string];

/** The (index, key) buckets `obj` belongs to; single-bucket indexes use the key "". */
export function indexEntries<K extends ViewKind>(site: string, kind: K, obj: ViewKinds[K]): IndexEntry[] {
  switch (kind) {
    case "routerInterface": {
      const ri = obj as intentpb.RouterInterface;
      return [
        ["routerInterfacesOfRouter", ri.routerId],
        ["routerInterfacesOfNetwork", ri.networkId],
      ];
    }
    case "securityGroupRule":
      return [["rulesOfGroup", (obj as intentpb.SecurityGroupRule).securityGroupId]];
    case "portRecord": {
      const p = obj as intentpb.PortRecord;
      const groups = [...new Set(p.securityGroupIds)];
      return [
        ...groups.map((g) => ["portRecordsOfGroup", g] as const),
        ["portRecordsOfNetwork", p.networkId],
      ];
    }
    case "floatingIp":
      return [["floatingIpsOfRouter", (obj as intentpb.FloatingIP).routerId]];
    case "router":
      return (obj as intentpb.Router).uplinks.some((u) => u.site === site)
        ? [["routersWithUplinkHere", ""]]
        : [];
    case "host":
      return (obj as topologypb.Host).role === topologypb.HostRole.HOST_ROLE_GATEWAY
        ? [["gatewayHosts", ""]]
        : [];
    case "localPort":
      // Port names are unique per site: CreatePort checks a name with one lookup. Ports with the
      // same groups share a profile's chains, which exist while one such port does.
      return [
        ["localPortsByName", (obj as LocalPortBinding).name],
        ["localPortsByGroups", securityGroupSetKey((obj as LocalPortBinding).securityGroupIds)],
      ];
    default:
      return [];
  }
}

/** intentpb.ObjectKind → the view kind (IntentObject oneof field) it names. */
export function kindOfObjectKind(k: intentpb.ObjectKind): IntentKind | undefined {
  return intentKindFromEnum(k);
}

export interface KindedObject<K extends IntentKind = IntentKind> {
  kind: K;
  id: string;
  value: ViewKinds[K];
}

/** The one set case of an IntentObject; throws when none is set (a malformed change). */
export function unwrapIntentObject(o: intentpb.IntentObject): KindedObject {
  for (const kind of Object.keys(o) as IntentKind[]) {
    const value = o[kind];
    if (value !== undefined) {
      const id = value.meta?.id ?? "";
      if (id === "") throw new Error(`intent object of kind ${kind} has no meta.id`);
      return { kind, id, value } as KindedObject;
    }
  }
  throw new Error("intent object has no kind set");
}

/** Wraps a kinded intent object back into an IntentObject. */
export function wrapIntentObject(o: KindedObject): intentpb.IntentObject {
  return { [o.kind]: o.value } as intentpb.IntentObject;
}
