// The translator's read-only, synchronous window onto the site's copy of global intent plus its
// local hosts and ports, and the in-memory index that implements it. The index is loaded from the
// database at start and changed only together with a committed transaction (apply → translate →
// commit, or undo when the transaction fails), so translation never waits on the database.
import { intentpb } from "@isthmus/schema";
import type { LocalHost, LocalPortBinding } from "./local-objects.js";
import { type IntentKey, intentKeyOf, keyString } from "./objects.js";

type IntentObject = intentpb.IntentObject;
const K = intentpb.ObjectKind;

export interface IntentView {
  /** The site this controller realizes intent for. */
  readonly site: string;
  get(kind: intentpb.ObjectKind, id: string): IntentObject | undefined;
  list(kind: intentpb.ObjectKind): IntentObject[];
  /**
   * Objects of `kind` that reference object id `refId` through one of their reference fields
   * (e.g. SecurityGroupRules of a group or naming it as remote group, PortRecords in a group or on
   * a network, RouterInterfaces of a router or network, FloatingIPs of a router or port).
   */
  referencing(kind: intentpb.ObjectKind, refId: string): IntentObject[];
  /** PortRecords (every site's) that are members of a security group. */
  portsBySecurityGroup(groupId: string): intentpb.PortRecord[];
  /** While a change is being translated: the object as it was before the change (undefined if new). */
  previous(kind: intentpb.ObjectKind, id: string): IntentObject | undefined;
  localHost(id: string): LocalHost | undefined;
  localHosts(): LocalHost[];
  localPort(id: string): LocalPortBinding | undefined;
  localPorts(): LocalPortBinding[];
  localPortsByNetwork(networkId: string): LocalPortBinding[];
}

/** Reference fields per kind, for `referencing`. */
function referencesOf(o: IntentObject): string[] {
  if (o.securityGroupRule) {
    return [o.securityGroupRule.securityGroupId, o.securityGroupRule.remoteGroupId].filter(Boolean);
  }
  if (o.portRecord) return [o.portRecord.networkId, ...o.portRecord.securityGroupIds].filter(Boolean);
  if (o.routerInterface) return [o.routerInterface.routerId, o.routerInterface.networkId].filter(Boolean);
  if (o.floatingIp) return [o.floatingIp.routerId, o.floatingIp.portId].filter(Boolean);
  return [];
}

/** What `apply` replaced, so a failed transaction can put the index back exactly. */
export interface IndexUndo {
  objects: [IntentKey, IntentObject | undefined][];
}

export class IntentIndex implements IntentView {
  private readonly objects = new Map<string, IntentObject>();
  private readonly byKind = new Map<intentpb.ObjectKind, Map<string, IntentObject>>();
  /** "kind/refId" → keys of objects of that kind referencing refId. */
  private readonly refs = new Map<string, Set<string>>();
  private readonly hosts = new Map<string, LocalHost>();
  private readonly ports = new Map<string, LocalPortBinding>();
  private previousValues: Map<string, IntentObject | undefined> | undefined;

  constructor(
    readonly site: string,
    /** Bound on intent objects held; exceeding it is an error, not silent eviction. */
    readonly maxObjects = 2_000_000,
  ) {}

  get size(): number {
    return this.objects.size;
  }

  get(kind: intentpb.ObjectKind, id: string): IntentObject | undefined {
    return this.objects.get(keyString(kind, id));
  }

  list(kind: intentpb.ObjectKind): IntentObject[] {
    return [...(this.byKind.get(kind)?.values() ?? [])];
  }

  referencing(kind: intentpb.ObjectKind, refId: string): IntentObject[] {
    const keys = this.refs.get(keyString(kind, refId));
    if (!keys) return [];
    return [...keys].map((k) => this.objects.get(k)!).filter(Boolean);
  }

  portsBySecurityGroup(groupId: string): intentpb.PortRecord[] {
    return this.referencing(K.OBJECT_KIND_PORT_RECORD, groupId)
      .map((o) => o.portRecord!)
      .filter((p) => p.securityGroupIds.includes(groupId));
  }

  previous(kind: intentpb.ObjectKind, id: string): IntentObject | undefined {
    const k = keyString(kind, id);
    if (this.previousValues?.has(k)) return this.previousValues.get(k);
    return this.objects.get(k);
  }

  localHost(id: string): LocalHost | undefined {
    return this.hosts.get(id);
  }
  localHosts(): LocalHost[] {
    return [...this.hosts.values()];
  }
  localPort(id: string): LocalPortBinding | undefined {
    return this.ports.get(id);
  }
  localPorts(): LocalPortBinding[] {
    return [...this.ports.values()];
  }
  localPortsByNetwork(networkId: string): LocalPortBinding[] {
    return this.localPorts().filter((p) => p.networkId === networkId);
  }

  /** Puts or removes one object (undefined = remove), keeping every secondary index in step. */
  private put(key: IntentKey, obj: IntentObject | undefined): void {
    const k = keyString(key.kind, key.id);
    const old = this.objects.get(k);
    if (old) {
      for (const r of referencesOf(old)) this.refs.get(keyString(key.kind, r))?.delete(k);
      this.byKind.get(key.kind)?.delete(k);
      this.objects.delete(k);
    }
    if (!obj) return;
    if (this.objects.size >= this.maxObjects) {
      throw new Error(`intent index is full (${this.maxObjects} objects); raise controller.maxIntentObjects`);
    }
    this.objects.set(k, obj);
    let kindMap = this.byKind.get(key.kind);
    if (!kindMap) {
      kindMap = new Map();
      this.byKind.set(key.kind, kindMap);
    }
    kindMap.set(k, obj);
    for (const r of referencesOf(obj)) {
      const rk = keyString(key.kind, r);
      let set = this.refs.get(rk);
      if (!set) {
        set = new Set();
        this.refs.set(rk, set);
      }
      set.add(k);
    }
  }

  /** Applies a change's upserts and deletes; `previous` answers for them until `settle`. */
  apply(change: Pick<intentpb.IntentChange, "upserts" | "deletes">): IndexUndo {
    const undo: IndexUndo = { objects: [] };
    const prev = new Map<string, IntentObject | undefined>();
    const record = (key: IntentKey) => {
      const k = keyString(key.kind, key.id);
      const old = this.objects.get(k);
      if (!prev.has(k)) prev.set(k, old);
      undo.objects.push([key, old]);
    };
    try {
      for (const ref of change.deletes) {
        const key = { kind: ref.kind, id: ref.id };
        record(key);
        this.put(key, undefined);
      }
      for (const obj of change.upserts) {
        const key = intentKeyOf(obj);
        record(key);
        this.put(key, obj);
      }
    } catch (err) {
      this.undo(undo);
      throw err;
    }
    this.previousValues = prev;
    return undo;
  }

  /** Forgets the pre-change values once the change is committed. */
  settle(): void {
    this.previousValues = undefined;
  }

  undo(u: IndexUndo): void {
    for (const [key, old] of [...u.objects].reverse()) this.put(key, old);
    this.previousValues = undefined;
  }

  /** Replaces every intent object (a snapshot). */
  replaceAll(objects: IntentObject[]): void {
    this.objects.clear();
    this.byKind.clear();
    this.refs.clear();
    this.previousValues = undefined;
    for (const o of objects) this.put(intentKeyOf(o), o);
  }

  allObjects(): IntentObject[] {
    return [...this.objects.values()];
  }

  setHost(h: LocalHost): void {
    this.hosts.set(h.id, h);
  }
  removeHost(id: string): void {
    this.hosts.delete(id);
  }
  setPort(p: LocalPortBinding): void {
    this.ports.set(p.id, p);
  }
  removePort(id: string): void {
    this.ports.delete(id);
  }
}
