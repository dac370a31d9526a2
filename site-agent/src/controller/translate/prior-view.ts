// The state before a change, seen through the state after it: the view after the change with
// the changed objects swapped back to their prior versions. Translating both sides of only the
// affected units is what keeps a change's cost independent of the size of the state.
import type { intentpb } from "@isthmus/schema";
import {
  type IntentView,
  type LocalHost,
  type LocalPortBinding,
  type ViewKind,
  type ViewKinds,
  viewObjectId,
} from "./view.js";
import { INDEX_KIND, type IndexName, indexEntries } from "./view-indexes.js";

/** One object a change touched: its version before the change (undefined = did not exist). */
export interface ChangedObject<K extends ViewKind = ViewKind> {
  kind: K;
  id: string;
  before: ViewKinds[K] | undefined;
}

export class PriorView implements IntentView {
  readonly site: string;
  private readonly changed = new Map<string, ChangedObject>();
  private readonly changedIdsByKind = new Map<ViewKind, Set<string>>();

  constructor(
    private readonly after: IntentView,
    changes: Iterable<ChangedObject>,
  ) {
    this.site = after.site;
    for (const c of changes) {
      const key = `${c.kind}/${c.id}`;
      // The first entry wins: it is the version before the whole change.
      if (this.changed.has(key)) continue;
      this.changed.set(key, c);
      const ids = this.changedIdsByKind.get(c.kind) ?? new Set<string>();
      this.changedIdsByKind.set(c.kind, ids);
      ids.add(c.id);
    }
  }

  get<K extends ViewKind>(kind: K, id: string): ViewKinds[K] | undefined {
    const c = this.changed.get(`${kind}/${id}`);
    if (c) return c.before as ViewKinds[K] | undefined;
    return this.after.get(kind, id);
  }

  *list<K extends ViewKind>(kind: K): Iterable<ViewKinds[K]> {
    const changedIds = this.changedIdsByKind.get(kind);
    for (const [, c] of this.changed) {
      if (c.kind === kind && c.before !== undefined) yield c.before as ViewKinds[K];
    }
    for (const obj of this.after.list(kind)) {
      if (changedIds?.has(viewObjectId(kind, obj as never))) continue;
      yield obj;
    }
  }

  private *lookup<N extends IndexName>(
    name: N,
    key: string,
    afterAnswer: Iterable<ViewKinds[(typeof INDEX_KIND)[N]]>,
  ): Iterable<ViewKinds[(typeof INDEX_KIND)[N]]> {
    const kind = INDEX_KIND[name];
    const changedIds = this.changedIdsByKind.get(kind);
    for (const obj of afterAnswer) {
      if (changedIds?.has(viewObjectId(kind, obj as never))) continue;
      yield obj;
    }
    if (!changedIds) return;
    for (const id of changedIds) {
      const before = this.changed.get(`${kind}/${id}`)!.before;
      if (before === undefined) continue;
      if (
        indexEntries(this.site, kind as ViewKind, before as never).some(([n, k]) => n === name && k === key)
      ) {
        yield before as ViewKinds[(typeof INDEX_KIND)[N]];
      }
    }
  }

  routerInterfacesOfRouter(routerId: string): Iterable<intentpb.RouterInterface> {
    return this.lookup("routerInterfacesOfRouter", routerId, this.after.routerInterfacesOfRouter(routerId));
  }
  routerInterfacesOfNetwork(networkId: string): Iterable<intentpb.RouterInterface> {
    return this.lookup(
      "routerInterfacesOfNetwork",
      networkId,
      this.after.routerInterfacesOfNetwork(networkId),
    );
  }
  rulesOfGroup(securityGroupId: string): Iterable<intentpb.SecurityGroupRule> {
    return this.lookup("rulesOfGroup", securityGroupId, this.after.rulesOfGroup(securityGroupId));
  }
  portRecordsOfGroup(securityGroupId: string): Iterable<intentpb.PortRecord> {
    return this.lookup("portRecordsOfGroup", securityGroupId, this.after.portRecordsOfGroup(securityGroupId));
  }
  portRecordsOfNetwork(networkId: string): Iterable<intentpb.PortRecord> {
    return this.lookup("portRecordsOfNetwork", networkId, this.after.portRecordsOfNetwork(networkId));
  }
  floatingIpsOfRouter(routerId: string): Iterable<intentpb.FloatingIP> {
    return this.lookup("floatingIpsOfRouter", routerId, this.after.floatingIpsOfRouter(routerId));
  }
  routersWithUplinkHere(): Iterable<intentpb.Router> {
    return this.lookup("routersWithUplinkHere", "", this.after.routersWithUplinkHere());
  }
  localPortsWithGroups(setKey: string): Iterable<LocalPortBinding> {
    return this.lookup("localPortsByGroups", setKey, this.after.localPortsWithGroups(setKey));
  }
  tunnelKeyOf(portId: string): number {
    return this.after.tunnelKeyOf(portId);
  }
  gatewayHosts(): Iterable<LocalHost> {
    return this.lookup("gatewayHosts", "", this.after.gatewayHosts());
  }
}

/** An object to show in place of the view's own (value undefined = show it as absent). */
export interface OverlayObject<K extends ViewKind = ViewKind> {
  kind: K;
  id: string;
  value: ViewKinds[K] | undefined;
}

/**
 * `view` with some objects replaced or hidden — e.g. the state after a pending local change,
 * before the index is updated: translateLocalPort(overlayView(index, [next]), id, old).
 */
export function overlayView(view: IntentView, objects: Iterable<OverlayObject>): IntentView {
  return new PriorView(
    view,
    [...objects].map((o) => ({ kind: o.kind, id: o.id, before: o.value }) as ChangedObject),
  );
}
