// The translation entry points. Every derived object belongs to exactly one "unit" (a source
// object and the role it plays); a change re-derives only the units it can affect, on both
// sides of the change, and the difference is the delta. translateAll derives every unit.
import { type intentpb, topologypb } from "@isthmus/schema";
import { DerivedSet, refKey, topologyRefOf } from "./derived-set.js";
import { chosenGatewayHost } from "./gateway-host.js";
import { deriveGateway, deriveHost } from "./hosts-gateways.js";
import { securityGroupSetKey } from "./ids.js";
import { deriveLocalPort, derivePortProfile } from "./local-port.js";
import { deriveNetwork, deriveRemotePortRecord } from "./network.js";
import { type ChangedObject, PriorView } from "./prior-view.js";
import { deriveFloatingIp, deriveRouter, deriveRouterInterface } from "./router.js";
import { deriveGroupMembers, deriveSecurityGroup, deriveSecurityGroupRule } from "./security-group.js";
import type { IntentView, LocalHost, LocalPortBinding, TopologyDelta, ViewKind } from "./view.js";
import { kindOfObjectKind, unwrapIntentObject } from "./view-indexes.js";

type UnitKind =
  | "network"
  | "remotePort"
  | "router"
  | "routerInterface"
  | "floatingIp"
  | "securityGroup"
  | "securityGroupRule"
  | "groupMember"
  | "gateway"
  | "localPort"
  | "portProfile"
  | "host";

const DERIVE: Record<UnitKind, (view: IntentView, id: string, out: DerivedSet) => void> = {
  network: deriveNetwork,
  remotePort: deriveRemotePortRecord,
  router: deriveRouter,
  routerInterface: deriveRouterInterface,
  floatingIp: deriveFloatingIp,
  securityGroup: deriveSecurityGroup,
  securityGroupRule: deriveSecurityGroupRule,
  groupMember: deriveGroupMembers,
  gateway: deriveGateway,
  localPort: deriveLocalPort,
  portProfile: derivePortProfile,
  host: deriveHost,
};

/** The unit every object of a view kind heads (sites head none: nothing local derives from them). */
const UNIT_OF_KIND: Record<ViewKind, UnitKind | undefined> = {
  site: undefined,
  gateway: "gateway",
  router: "router",
  network: "network",
  routerInterface: "routerInterface",
  securityGroup: "securityGroup",
  securityGroupRule: "securityGroupRule",
  floatingIp: "floatingIp",
  portRecord: "remotePort",
  localPort: "localPort",
  host: "host",
};

const unitKey = (kind: UnitKind, id: string): string => `${kind}:${id}`;

function idOfMeta(o: { meta?: intentpb.ObjectMeta }): string {
  return o.meta?.id ?? "";
}

/**
 * The units whose derivation reads `c` — on either side of the change, since a change can move
 * an object between index buckets (a port record leaving one group for another).
 */
function addAffectedUnits(c: ChangedObject, after: IntentView, before: IntentView, units: Set<string>): void {
  const own = UNIT_OF_KIND[c.kind];
  if (own) units.add(unitKey(own, c.id));
  const views = [before, after];
  switch (c.kind) {
    case "router":
      for (const v of views) {
        for (const ri of v.routerInterfacesOfRouter(c.id))
          units.add(unitKey("routerInterface", idOfMeta(ri)));
        for (const f of v.floatingIpsOfRouter(c.id)) units.add(unitKey("floatingIp", idOfMeta(f)));
      }
      break;
    case "network":
      for (const v of views) {
        for (const ri of v.routerInterfacesOfNetwork(c.id)) {
          units.add(unitKey("routerInterface", idOfMeta(ri)));
          units.add(unitKey("router", ri.routerId)); // whether the router spans this site
        }
        for (const p of v.portRecordsOfNetwork(c.id)) units.add(unitKey("remotePort", idOfMeta(p)));
      }
      break;
    case "routerInterface":
      for (const v of views) {
        const ri = v.get("routerInterface", c.id);
        if (ri) units.add(unitKey("router", ri.routerId));
      }
      break;
    case "securityGroup":
      for (const v of views) {
        for (const r of v.rulesOfGroup(c.id)) units.add(unitKey("securityGroupRule", idOfMeta(r)));
      }
      // Members exist only while their group does: a group's creation or deletion touches each
      // of its ports (a change to an existing group leaves its membership alone).
      if (
        (before.get("securityGroup", c.id) === undefined) !==
        (after.get("securityGroup", c.id) === undefined)
      ) {
        for (const v of views) {
          for (const p of v.portRecordsOfGroup(c.id)) units.add(unitKey("groupMember", idOfMeta(p)));
        }
      }
      break;
    case "portRecord":
      // Its memberships: one object per group it lists, so nothing else in the group moves.
      units.add(unitKey("groupMember", c.id));
      break;
    case "localPort":
      // The profile it leaves may lose its last port, the one it joins may gain its first.
      for (const v of views) {
        const p = v.get("localPort", c.id);
        if (p) units.add(unitKey("portProfile", securityGroupSetKey(p.securityGroupIds)));
      }
      break;
    case "host":
      // Uplinks follow the chosen gateway host; only when the choice moves do they change.
      if (chosenGatewayHost(before)?.id !== chosenGatewayHost(after)?.id) {
        for (const v of views) {
          for (const r of v.routersWithUplinkHere()) units.add(unitKey("router", idOfMeta(r)));
        }
        // Remote-site ports move too. A rare event (gateway failover) that touches every
        // stretched network here, so listing networks costs about what the change is.
        for (const n of after.list("network")) {
          if (n.sites.length > 1 && n.sites.includes(after.site)) units.add(unitKey("network", idOfMeta(n)));
        }
      }
      break;
    default:
      break;
  }
}

function deriveUnits(view: IntentView, units: Iterable<string>): DerivedSet {
  return deriveUnitsInto(view, units, new DerivedSet());
}

function deriveUnitsInto(view: IntentView, units: Iterable<string>, out: DerivedSet): DerivedSet {
  for (const u of units) {
    const colon = u.indexOf(":");
    DERIVE[u.slice(0, colon) as UnitKind](view, u.slice(colon + 1), out);
  }
  return out;
}

function compareRefs(a: topologypb.TopologyRef, b: topologypb.TopologyRef): number {
  return a.kind - b.kind || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function sameObject(a: topologypb.TopologyObject, b: topologypb.TopologyObject): boolean {
  return Buffer.from(topologypb.TopologyObject.encode(a).finish()).equals(
    Buffer.from(topologypb.TopologyObject.encode(b).finish()),
  );
}

/** Indexes derived objects by "kind/id", asserting that no two units derived the same object. */
function byRef(set: DerivedSet): Map<string, topologypb.TopologyObject> {
  const m = new Map<string, topologypb.TopologyObject>();
  for (const o of set.objects) {
    const key = refKey(topologyRefOf(o));
    if (m.has(key)) throw new Error(`translation invariant violated: topology object ${key} derived twice`);
    m.set(key, o);
  }
  return m;
}

/** Translates a set of changed objects: derive the affected units before and after, and diff. */
export function translateChangedObjects(after: IntentView, changes: ChangedObject[]): TopologyDelta {
  const before = new PriorView(after, changes);
  const units = new Set<string>();
  for (const c of changes) addAffectedUnits(c, after, before, units);
  const sorted = [...units].sort();
  const was = byRef(deriveUnits(before, sorted));
  const nowSet = deriveUnits(after, sorted);
  const now = byRef(nowSet);
  const upserts: topologypb.TopologyObject[] = [];
  const deletes: topologypb.TopologyRef[] = [];
  for (const [key, obj] of now) {
    const old = was.get(key);
    if (!old || !sameObject(old, obj)) upserts.push(obj);
  }
  for (const [key, obj] of was) if (!now.has(key)) deletes.push(topologyRefOf(obj));
  upserts.sort((a, b) => compareRefs(topologyRefOf(a), topologyRefOf(b)));
  deletes.sort(compareRefs);
  return { upserts, deletes, problems: [...new Set(nowSet.problems)] };
}

/**
 * Local topology changes caused by one committed intent change.
 * @param view the view AFTER the change was applied.
 * @param prior the versions, before the change, of the objects it upserts or deletes (objects
 *   the change creates are simply absent) — what IntentIndex.applyIntentChange returns.
 */
export function translateChange(
  view: IntentView,
  change: intentpb.IntentChange,
  prior: readonly intentpb.IntentObject[],
): TopologyDelta {
  const priorByKey = new Map<string, unknown>();
  for (const o of prior) {
    const k = unwrapIntentObject(o);
    priorByKey.set(`${k.kind}/${k.id}`, k.value);
  }
  const changes: ChangedObject[] = [];
  const add = (kind: ViewKind, id: string): void => {
    changes.push({ kind, id, before: priorByKey.get(`${kind}/${id}`) } as ChangedObject);
  };
  for (const o of change.upserts) {
    const k = unwrapIntentObject(o);
    add(k.kind, k.id);
  }
  for (const ref of change.deletes) {
    const kind = kindOfObjectKind(ref.kind);
    if (kind === undefined) throw new Error(`intent delete names unknown kind ${ref.kind} (id ${ref.id})`);
    add(kind, ref.id);
  }
  return translateChangedObjects(view, changes);
}

/**
 * Local topology changes after a port binding was created, changed or removed.
 * @param view the view after the change (the binding present, or absent when removed).
 * @param prior the binding as it was before (undefined when new).
 */
export function translateLocalPort(
  view: IntentView,
  portId: string,
  prior: LocalPortBinding | undefined,
): TopologyDelta {
  return translateChangedObjects(view, [{ kind: "localPort", id: portId, before: prior }]);
}

/** Local topology changes after a host registered, changed (liveness, role) or was removed. */
export function translateHost(view: IntentView, hostId: string, prior: LocalHost | undefined): TopologyDelta {
  return translateChangedObjects(view, [{ kind: "host", id: hostId, before: prior }]);
}

/** The whole local topology of the view, sorted by kind then id (snapshots and rebuilds). */
export function translateAll(view: IntentView): { objects: topologypb.TopologyObject[]; problems: string[] } {
  const steps = translateAllSteps(view, Number.POSITIVE_INFINITY);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/**
 * translateAll in steps of `unitsPerStep` units: the generator yields between steps (so a caller
 * with an event loop can let it run while a large federation is translated) and returns the result.
 */
export function* translateAllSteps(
  view: IntentView,
  unitsPerStep: number,
): Generator<void, { objects: topologypb.TopologyObject[]; problems: string[] }> {
  const units: string[] = [];
  for (const kind of Object.keys(UNIT_OF_KIND) as ViewKind[]) {
    const unit = UNIT_OF_KIND[kind];
    if (!unit) continue;
    for (const o of view.list(kind)) {
      const id = kind === "localPort" || kind === "host" ? (o as { id: string }).id : idOfMeta(o as never);
      units.push(unitKey(unit, id));
    }
  }
  // Every port record also heads its group memberships.
  for (const o of view.list("portRecord")) units.push(unitKey("groupMember", idOfMeta(o)));
  // Profiles are headed by no object: one unit per distinct set of groups among the local ports.
  const profiles = new Set<string>();
  for (const p of view.list("localPort")) profiles.add(securityGroupSetKey(p.securityGroupIds));
  for (const key of profiles) units.push(unitKey("portProfile", key));
  units.sort();
  const set = new DerivedSet();
  for (let i = 0; i < units.length; i += unitsPerStep) {
    deriveUnitsInto(view, units.slice(i, i + unitsPerStep), set);
    if (i + unitsPerStep < units.length) yield;
  }
  // A large federation derives 100k+ objects: each ref is computed once (not in every
  // comparison), and the pass over them lets the caller's event loop run now and then.
  const keyed: { kind: number; id: string; obj: topologypb.TopologyObject }[] = [];
  const seen = new Set<string>();
  for (const [i, obj] of set.objects.entries()) {
    const ref = topologyRefOf(obj);
    const key = refKey(ref);
    if (seen.has(key))
      throw new Error(`translation invariant violated: topology object ${key} derived twice`);
    seen.add(key);
    keyed.push({ kind: ref.kind, id: ref.id, obj });
    if (i % unitsPerStep === unitsPerStep - 1) yield;
  }
  keyed.sort((a, b) => a.kind - b.kind || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { objects: keyed.map((k) => k.obj), problems: [...new Set(set.problems)] };
}
