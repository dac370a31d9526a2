// An in-memory IntentView: the site's copy of global intent plus its hosts and port bindings,
// with the reverse indexes translation needs. Applying a change returns the prior versions of
// what it touched, which is exactly what translateChange needs to see the state before it.
import type { intentpb } from "@isthmus/schema";
import { uplinkPortId } from "./ids.js";
import {
  INTENT_KINDS,
  type IntentView,
  type LocalHost,
  type LocalPortBinding,
  type ViewKind,
  type ViewKinds,
} from "./view.js";
import {
  type IndexName,
  indexEntries,
  type KindedObject,
  kindOfObjectKind,
  unwrapIntentObject,
} from "./view-indexes.js";

export interface IntentIndexOptions {
  /** Most objects (intent and local together) the index holds; beyond it an apply throws. */
  maxObjects?: number;
}

export const DEFAULT_MAX_INDEX_OBJECTS = 2_000_000;

/** A derived port's tunnel key changing (0 = none). */
export interface TunnelKeyMove {
  portId: string;
  before: number;
  after: number;
}

const EMPTY: ReadonlyMap<string, unknown> = new Map<string, unknown>();

export class IntentIndex implements IntentView {
  readonly maxObjects: number;
  // Not readonly: replaceWith takes another index's tables over whole.
  private objects = new Map<ViewKind, Map<string, unknown>>();
  private indexes = new Map<IndexName, Map<string, Map<string, unknown>>>();
  private derivedPortKeys = new Map<string, number>();
  /** Site-local tunnel key → how many ports (VM ports and derived ports) hold it. */
  private keyHolders = new Map<number, number>();
  private count = 0;

  constructor(
    readonly site: string,
    options: IntentIndexOptions = {},
  ) {
    this.maxObjects = options.maxObjects ?? DEFAULT_MAX_INDEX_OBJECTS;
  }

  get size(): number {
    return this.count;
  }

  get<K extends ViewKind>(kind: K, id: string): ViewKinds[K] | undefined {
    return this.objects.get(kind)?.get(id) as ViewKinds[K] | undefined;
  }

  list<K extends ViewKind>(kind: K): Iterable<ViewKinds[K]> {
    return (this.objects.get(kind)?.values() ?? []) as Iterable<ViewKinds[K]>;
  }

  private bucket<T>(name: IndexName, key: string): Iterable<T> {
    return ((this.indexes.get(name)?.get(key) ?? EMPTY) as Map<string, T>).values();
  }

  routerInterfacesOfRouter(routerId: string): Iterable<intentpb.RouterInterface> {
    return this.bucket("routerInterfacesOfRouter", routerId);
  }
  routerInterfacesOfNetwork(networkId: string): Iterable<intentpb.RouterInterface> {
    return this.bucket("routerInterfacesOfNetwork", networkId);
  }
  rulesOfGroup(securityGroupId: string): Iterable<intentpb.SecurityGroupRule> {
    return this.bucket("rulesOfGroup", securityGroupId);
  }
  portRecordsOfGroup(securityGroupId: string): Iterable<intentpb.PortRecord> {
    return this.bucket("portRecordsOfGroup", securityGroupId);
  }
  portRecordsOfNetwork(networkId: string): Iterable<intentpb.PortRecord> {
    return this.bucket("portRecordsOfNetwork", networkId);
  }
  floatingIpsOfRouter(routerId: string): Iterable<intentpb.FloatingIP> {
    return this.bucket("floatingIpsOfRouter", routerId);
  }
  routersWithUplinkHere(): Iterable<intentpb.Router> {
    return this.bucket("routersWithUplinkHere", "");
  }
  localPortsWithGroups(setKey: string): Iterable<LocalPortBinding> {
    return this.bucket("localPortsByGroups", setKey);
  }
  tunnelKeyOf(portId: string): number {
    return this.derivedPortKeys.get(portId) ?? 0;
  }
  /** Records the key allocated for a derived port (0 = release it). */
  setTunnelKey(portId: string, key: number): void {
    this.holdKey(this.derivedPortKeys.get(portId) ?? 0, -1);
    this.holdKey(key, 1);
    if (key === 0) this.derivedPortKeys.delete(portId);
    else this.derivedPortKeys.set(portId, key);
  }

  /** Whether a VM port or a derived port holds this site-local tunnel key (one lookup). */
  tunnelKeyInUse(key: number): boolean {
    return this.keyHolders.has(key);
  }

  private holdKey(key: number, delta: 1 | -1): void {
    if (key === 0) return;
    const n = (this.keyHolders.get(key) ?? 0) + delta;
    if (n > 0) this.keyHolders.set(key, n);
    else this.keyHolders.delete(key);
  }
  /** Every derived port holding a key (to persist, or to mark the keys used in an allocator). */
  tunnelKeys(): ReadonlyMap<string, number> {
    return this.derivedPortKeys;
  }

  /**
   * After applyIntentChange: gives every router the change touched a key for its uplink port
   * here when it has an uplink here (calling `allocate`), and releases the key when it no longer
   * has one. Returns what moved, for the controller to persist and, on failure, to undo with
   * restoreTunnelKeys. Call it before translating the change.
   */
  syncUplinkTunnelKeys(change: intentpb.IntentChange, allocate: (portId: string) => number): TunnelKeyMove[] {
    const routerIds = new Set<string>();
    for (const o of change.upserts) if (o.router?.meta?.id) routerIds.add(o.router.meta.id);
    for (const ref of change.deletes) {
      if (kindOfObjectKind(ref.kind) === "router") routerIds.add(ref.id);
    }
    const moves: TunnelKeyMove[] = [];
    for (const routerId of routerIds) {
      const portId = uplinkPortId(routerId, this.site);
      const had = this.tunnelKeyOf(portId);
      const needs = this.get("router", routerId)?.uplinks.some((u) => u.site === this.site) ?? false;
      if (needs && had === 0) {
        const key = allocate(portId);
        this.setTunnelKey(portId, key);
        moves.push({ portId, before: 0, after: key });
      } else if (!needs && had !== 0) {
        this.setTunnelKey(portId, 0);
        moves.push({ portId, before: had, after: 0 });
      }
    }
    return moves;
  }

  /** Undoes syncUplinkTunnelKeys. */
  restoreTunnelKeys(moves: readonly TunnelKeyMove[]): void {
    for (const m of [...moves].reverse()) this.setTunnelKey(m.portId, m.before);
  }

  gatewayHosts(): Iterable<LocalHost> {
    return this.bucket("gatewayHosts", "");
  }

  /** The site's VM port with this name, if any (names are unique per site). */
  localPortNamed(name: string): LocalPortBinding | undefined {
    for (const p of this.bucket<LocalPortBinding>("localPortsByName", name)) return p;
    return undefined;
  }

  /** Stores or replaces one object; returns its previous version. */
  put<K extends ViewKind>(kind: K, id: string, value: ViewKinds[K]): ViewKinds[K] | undefined {
    const prior = this.remove(kind, id);
    if (this.count >= this.maxObjects) {
      if (prior !== undefined) this.insert(kind, id, prior);
      throw new Error(
        `intent index is full (${this.maxObjects} objects, option maxObjects): cannot add ${kind} ${id}`,
      );
    }
    this.insert(kind, id, value);
    return prior;
  }

  /** Removes one object; returns what was stored (undefined when absent). */
  remove<K extends ViewKind>(kind: K, id: string): ViewKinds[K] | undefined {
    const byId = this.objects.get(kind);
    const prior = byId?.get(id) as ViewKinds[K] | undefined;
    if (prior === undefined) return undefined;
    byId!.delete(id);
    this.count--;
    if (kind === "localPort") this.holdKey((prior as LocalPortBinding).tunnelKey, -1);
    for (const [name, key] of indexEntries(this.site, kind, prior)) {
      const buckets = this.indexes.get(name)!;
      const b = buckets.get(key)!;
      b.delete(id);
      if (b.size === 0) buckets.delete(key);
    }
    return prior;
  }

  private insert<K extends ViewKind>(kind: K, id: string, value: ViewKinds[K]): void {
    const byId = this.objects.get(kind) ?? new Map<string, unknown>();
    this.objects.set(kind, byId);
    byId.set(id, value);
    this.count++;
    if (kind === "localPort") this.holdKey((value as LocalPortBinding).tunnelKey, 1);
    for (const [name, key] of indexEntries(this.site, kind, value)) {
      const buckets = this.indexes.get(name) ?? new Map<string, Map<string, unknown>>();
      this.indexes.set(name, buckets);
      const b = buckets.get(key) ?? new Map<string, unknown>();
      buckets.set(key, b);
      b.set(id, value);
    }
  }

  /**
   * Applies one committed intent change (its deletes, then its upserts: an object a change both
   * deletes and upserts ends up written, as the site database's copy has it) and returns the
   * prior versions of every object it touched that existed before — translateChange's `prior`.
   */
  applyIntentChange(change: intentpb.IntentChange): intentpb.IntentObject[] {
    const prior = new Map<string, intentpb.IntentObject>();
    const seen = new Set<string>();
    const remember = (kind: keyof intentpb.IntentObject, id: string): void => {
      const key = `${kind}/${id}`;
      if (seen.has(key)) return;
      seen.add(key);
      const before = this.get(kind, id);
      if (before !== undefined) prior.set(key, { [kind]: before } as intentpb.IntentObject);
    };
    for (const ref of change.deletes) {
      const kind = kindOfObjectKind(ref.kind);
      if (kind === undefined) throw new Error(`intent delete names unknown kind ${ref.kind} (id ${ref.id})`);
      if (ref.id === "") throw new Error(`intent delete of ${kind} has no id`);
      remember(kind, ref.id);
      this.remove(kind, ref.id);
    }
    for (const o of change.upserts) {
      const { kind, id, value } = unwrapIntentObject(o);
      remember(kind, id);
      this.put(kind, id, value);
    }
    return [...prior.values()];
  }

  /**
   * Undoes applyIntentChange (for a transaction that failed after the index was updated):
   * every object the change touched goes back to its prior version, or away if it had none.
   */
  revertIntentChange(change: intentpb.IntentChange, prior: readonly intentpb.IntentObject[]): void {
    const before = new Map<string, KindedObject>();
    for (const o of prior) {
      const k = unwrapIntentObject(o);
      before.set(`${k.kind}/${k.id}`, k);
    }
    const touched: { kind: keyof intentpb.IntentObject; id: string }[] =
      change.upserts.map(unwrapIntentObject);
    for (const ref of change.deletes) {
      const kind = kindOfObjectKind(ref.kind);
      if (kind !== undefined) touched.push({ kind, id: ref.id });
    }
    for (const { kind, id } of touched) {
      const b = before.get(`${kind}/${id}`);
      if (b) this.put(kind, id, b.value);
      else this.remove(kind, id);
    }
  }

  /**
   * Becomes `other` (same site), taking over its tables instead of copying them: a snapshot of a
   * large federation is built in a fresh index, and loading it a second time here would block the
   * controller for as long again. `other` must not be used afterwards.
   */
  replaceWith(other: IntentIndex): void {
    if (other.site !== this.site)
      throw new Error(`replaceWith: index of site ${other.site}, not ${this.site}`);
    this.objects = other.objects;
    this.indexes = other.indexes;
    this.derivedPortKeys = other.derivedPortKeys;
    this.keyHolders = other.keyHolders;
    this.count = other.count;
    other.objects = new Map();
    other.indexes = new Map();
    other.derivedPortKeys = new Map();
    other.keyHolders = new Map();
    other.count = 0;
  }

  /** Replaces all intent objects with a snapshot's (local hosts and ports stay). */
  loadIntentSnapshot(snapshot: intentpb.IntentSnapshot): void {
    for (const kind of INTENT_KINDS) {
      for (const id of [...(this.objects.get(kind)?.keys() ?? [])]) this.remove(kind, id);
    }
    for (const o of snapshot.objects) {
      const { kind, id, value } = unwrapIntentObject(o);
      this.put(kind, id, value);
    }
  }

  putLocalPort(binding: LocalPortBinding): LocalPortBinding | undefined {
    return this.put("localPort", binding.id, binding);
  }
  removeLocalPort(id: string): LocalPortBinding | undefined {
    return this.remove("localPort", id);
  }
  putHost(host: LocalHost): LocalHost | undefined {
    return this.put("host", host.id, host);
  }
  removeHost(id: string): LocalHost | undefined {
    return this.remove("host", id);
  }
}
