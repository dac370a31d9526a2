// The replicated state machine of global intent. Raft hands it committed entries in log order;
// each entry holds one encoded IntentCommand. apply() is deterministic: ids, VNIs and MACs derive
// from the log index, time only from the command's proposer clock. A refused command changes
// nothing (every check runs before the first mutation) and its error is the entry's result.
import { federationpb, fieldSize, intentpb, writeField } from "@isthmus/schema";
import { type Entry, EntryType, type StateMachine } from "../raft/types.js";
import { parseAddress, prefixContains } from "./address.js";
import { IntentError, invalid } from "./errors.js";
import { ChangeJournal, DEFAULT_JOURNAL_LIMIT } from "./journal.js";
import {
  type AnyObject,
  deterministicMac,
  deterministicUuid,
  KIND_KEYS,
  KIND_NAMES,
  type KindKey,
  type KindMessages,
  kindFromEnum,
  kindOf,
  metaOf,
  refOf,
  wrap,
} from "./kinds.js";
import {
  checkFloatingIp,
  checkGatewayEndpoints,
  checkMeta,
  checkNetwork,
  checkPortRecord,
  checkRouter,
  checkRouterInterface,
  checkRouterSubnetsDisjoint,
  checkSecurityGroup,
  checkSecurityGroupRule,
  checkSiteName,
  GLOBAL_VNI_MAX,
  GLOBAL_VNI_MIN,
  type IntentView,
  networkPrefixes,
  routerInterfaceAddress,
} from "./validate.js";

export interface ApplyOk {
  ok: true;
  index: number;
  /** What this entry changed (undefined when nothing visible to sites changed). */
  change?: intentpb.IntentChange;
  /** The objects the command created or updated, as stored. */
  objects: intentpb.IntentObject[];
  deleted: intentpb.ObjectRef[];
}

export interface ApplyFailed {
  ok: false;
  index: number;
  error: IntentError;
}

export type ApplyResult = ApplyOk | ApplyFailed;

export interface AppliedEvent {
  index: number;
  change?: intentpb.IntentChange;
  /** The state was replaced by a snapshot: watchers must resynchronize. */
  restored?: boolean;
}

export interface IntentStateMachineOptions {
  /** How many recent changes WatchIntent can replay (older positions get a snapshot). */
  journalLimit?: number;
  /** Bound on remembered (consumed or revoked) token ids; must be equal on every replica. */
  maxRememberedTokens?: number;
  /** Bound on objects of any one kind; must be equal on every replica. */
  maxObjectsPerKind?: number;
}

export const DEFAULT_MAX_OBJECTS_PER_KIND = 100_000;

export const DEFAULT_MAX_REMEMBERED_TOKENS = 100_000;

/** Field prefix used in error paths for each kind (proto field spelling). */
const FIELD: Record<KindKey, string> = {
  site: "site",
  gateway: "gateway",
  router: "router",
  network: "network",
  routerInterface: "router_interface",
  securityGroup: "security_group",
  securityGroupRule: "security_group_rule",
  floatingIp: "floating_ip",
  portRecord: "port",
};

interface Staged {
  upserts: { kind: KindKey; obj: AnyObject }[];
  deletes: { kind: KindKey; obj: AnyObject }[];
  nextVni?: number;
  /** Commands whose effect is status only (acks, health) mutate in `after`. */
  after?: () => void;
}

export class IntentStateMachine implements StateMachine<ApplyResult>, IntentView {
  private objects = emptyTables<AnyObject>();
  private names = emptyTables<string>();
  private usedVnis = new Map<number, string>();
  private nextVni = GLOBAL_VNI_MIN;
  private tokens = new Map<string, federationpb.RememberedToken>();
  private siteStatus = new Map<string, federationpb.SiteStatusRecord>();
  private clock = 0;
  private applied = 0;
  private readonly listeners = new Set<(ev: AppliedEvent) => void>();
  /**
   * Each stored object's encoding as an IntentObject, made once. A raft snapshot or a site's
   * snapshot of a large federation (100k+ objects) frames these instead of encoding every object
   * again on the event loop, which stalled a coordinator for seconds. Keyed by the stored object,
   * which an update replaces and nothing changes in place.
   */
  private readonly encodings = new WeakMap<AnyObject, Uint8Array>();
  /** The last intentSnapshotShared(), while the applied index has not moved. */
  private sharedSnapshot: intentpb.IntentSnapshot | undefined;
  readonly journal: ChangeJournal;
  private readonly maxTokens: number;
  private readonly maxObjects: number;

  constructor(opts: IntentStateMachineOptions = {}) {
    this.journal = new ChangeJournal(opts.journalLimit ?? DEFAULT_JOURNAL_LIMIT);
    this.maxTokens = opts.maxRememberedTokens ?? DEFAULT_MAX_REMEMBERED_TOKENS;
    this.maxObjects = opts.maxObjectsPerKind ?? DEFAULT_MAX_OBJECTS_PER_KIND;
  }

  // ---- StateMachine ---------------------------------------------------------------------------

  apply(entry: Entry): ApplyResult {
    if (entry.index <= this.applied) {
      throw new Error(`intent: entry ${entry.index} applied after ${this.applied} (invariant violated)`);
    }
    if (entry.type !== EntryType.Normal || entry.data.length === 0) {
      this.applied = entry.index;
      this.emit({ index: entry.index });
      return { ok: true, index: entry.index, objects: [], deleted: [] };
    }
    let cmd: federationpb.IntentCommand;
    try {
      cmd = federationpb.IntentCommand.decode(entry.data);
    } catch (err) {
      this.applied = entry.index;
      this.emit({ index: entry.index });
      return {
        ok: false,
        index: entry.index,
        error: invalid("command", `undecodable command: ${(err as Error).message}`),
      };
    }
    return this.applyCommand(entry.index, cmd);
  }

  /** Applies one decoded command at `index` (the raft log index of its entry). */
  applyCommand(index: number, cmd: federationpb.IntentCommand): ApplyResult {
    if (index <= this.applied) {
      throw new Error(`intent: entry ${index} applied after ${this.applied} (invariant violated)`);
    }
    this.clock = Math.max(this.clock, cmd.proposedUnixMs);
    let staged: Staged;
    try {
      staged = this.stage(index, cmd);
      this.checkRoom(staged);
    } catch (err) {
      this.applied = index;
      this.emit({ index });
      if (err instanceof IntentError) return { ok: false, index, error: err };
      throw err;
    }
    this.applied = index;
    this.pruneTokens();
    return this.commit(index, staged);
  }

  snapshot(): Uint8Array {
    // The objects are framed from their cached encodings (field 2 of IntentState, each a
    // length-delimited IntentObject), the rest encoded as usual; a decoder joins the two.
    // Written into one buffer in place: at 100k objects, a piece per tag and length prefix
    // (300k small arrays, then joined) cost more than the framing itself.
    const bodies: Uint8Array[] = [];
    for (const k of KIND_KEYS) {
      const table = this.objects[k];
      for (const id of [...table.keys()].sort()) bodies.push(this.encodedOf(k, table.get(id)!));
    }
    const state: federationpb.IntentState = {
      index: this.applied,
      objects: [],
      nextVni: this.nextVni,
      tokens: [...this.tokens.values()].sort((a, b) => cmp(a.tokenId, b.tokenId)),
      siteStatus: [...this.siteStatus.values()].sort((a, b) => cmp(a.site, b.site)),
      clockUnixMs: this.clock,
    };
    const rest = federationpb.IntentState.encode(state).finish();
    let size = rest.length;
    for (const b of bodies) size += fieldSize(b);
    const out = new Uint8Array(size);
    let at = 0;
    for (const b of bodies) at = writeField(out, at, INTENT_STATE_OBJECTS_TAG, b);
    out.set(rest, at);
    if (at + rest.length !== size)
      throw new Error(`intent: snapshot framed ${at + rest.length} of ${size} bytes`);
    return out;
  }

  private encodedOf(kind: KindKey, obj: AnyObject): Uint8Array {
    let body = this.encodings.get(obj);
    if (!body) {
      body = intentpb.IntentObject.encode(wrap(kind, obj as never)).finish();
      this.encodings.set(obj, body);
    }
    return body;
  }

  /** Encoded size of an object as the state holds it (from the cache when it is a stored one). */
  encodedSize(o: intentpb.IntentObject): number {
    const kind = kindOf(o);
    const inner = kind ? (o[kind] as AnyObject) : undefined;
    if (!kind || !inner) return intentpb.IntentObject.encode(o).finish().length;
    if (kind === "site" || this.objects[kind].get(metaOf(inner).id) !== inner) {
      return intentpb.IntentObject.encode(o).finish().length; // a copy (sites carry their status)
    }
    return this.encodedOf(kind, inner).length;
  }

  /**
   * The whole state as sites receive it, without copying the objects: for a stream that encodes
   * them at once (grpc-js serializes on write) and must not change them.
   */
  intentSnapshotShared(): intentpb.IntentSnapshot {
    // Sites reconnecting together (after a coordinator restart, or catching up on a large load)
    // ask for the same state: built once per applied index. Each name is read once, not in
    // every comparison of the sort (100k+ objects).
    if (this.sharedSnapshot?.index === this.applied) return this.sharedSnapshot;
    const objects: intentpb.IntentObject[] = [];
    for (const k of KIND_KEYS) {
      const named = [...this.objects[k].values()].map((o) => ({ name: metaOf(o).name, o }));
      named.sort((a, b) => cmp(a.name, b.name));
      for (const { name, o } of named) objects.push(wrap(k, (k === "site" ? this.site(name) : o) as never));
    }
    this.sharedSnapshot = { index: this.applied, objects };
    return this.sharedSnapshot;
  }

  restore(data: Uint8Array): void {
    const state = federationpb.IntentState.decode(data);
    this.objects = emptyTables<AnyObject>();
    this.names = emptyTables<string>();
    this.usedVnis.clear();
    for (const o of state.objects) {
      const k = kindOf(o);
      if (!k) throw new Error("intent: snapshot holds an object of no kind (corrupt snapshot)");
      this.put(k, o[k] as AnyObject);
    }
    this.nextVni = state.nextVni || GLOBAL_VNI_MIN;
    this.tokens = new Map(state.tokens.map((t) => [t.tokenId, t]));
    this.siteStatus = new Map(state.siteStatus.map((s) => [s.site, s]));
    this.clock = state.clockUnixMs;
    this.applied = state.index;
    this.sharedSnapshot = undefined;
    this.journal.reset(state.index);
    this.emit({ index: state.index, restored: true });
  }

  // ---- Queries --------------------------------------------------------------------------------

  get index(): number {
    return this.applied;
  }

  get<K extends KindKey>(kind: K, id: string): KindMessages[K] | undefined {
    return this.objects[kind].get(id) as KindMessages[K] | undefined;
  }

  byName<K extends KindKey>(kind: K, name: string): KindMessages[K] | undefined {
    const id = this.names[kind].get(name);
    return id === undefined ? undefined : this.get(kind, id);
  }

  list<K extends KindKey>(kind: K): KindMessages[K][] {
    return [...this.objects[kind].values()] as KindMessages[K][];
  }

  site(name: string): intentpb.Site | undefined {
    const s = this.byName("site", name);
    if (!s) return undefined;
    const st = this.siteStatus.get(name);
    return st ? { ...s, appliedIndex: st.appliedIndex, lastHeardUnixMs: st.lastHeardUnixMs } : s;
  }

  /** Copies of every object of `kind` (all kinds when undefined), ordered by name. */
  objectsOf(kind?: KindKey): intentpb.IntentObject[] {
    const out: intentpb.IntentObject[] = [];
    for (const k of kind ? [kind] : KIND_KEYS) {
      const objs = [...this.objects[k].values()].sort((a, b) => cmp(metaOf(a).name, metaOf(b).name));
      for (const o of objs)
        out.push(structuredClone(wrap(k, (k === "site" ? this.site(metaOf(o).name) : o) as never)));
    }
    return out;
  }

  siteStatuses(): federationpb.SiteStatusRecord[] {
    return [...this.siteStatus.values()].map((s) => structuredClone(s));
  }

  /** True when the token id was consumed (onboarding) or revoked and has not yet expired. */
  isTokenRemembered(tokenId: string): boolean {
    return this.tokens.has(tokenId);
  }

  isTokenRevoked(tokenId: string): boolean {
    return this.tokens.get(tokenId)?.revoked === true;
  }

  /** The whole state as sites receive it. */
  intentSnapshot(): intentpb.IntentSnapshot {
    return { index: this.applied, objects: this.objectsOf() };
  }

  onApplied(listener: (ev: AppliedEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // ---- Staging: every check, no mutation -------------------------------------------------------

  private stage(index: number, cmd: federationpb.IntentCommand): Staged {
    if (cmd.create) return this.stageCreate(index, cmd.create.object);
    if (cmd.update) return this.stageUpdate(index, cmd.update.object);
    if (cmd.delete) return this.stageDelete(cmd.delete);
    if (cmd.addSite) {
      const a = cmd.addSite;
      return this.stageCreate(index, {
        site: {
          meta: {
            id: "",
            name: a.name,
            revision: 0,
            description: a.description,
            labels: a.labels,
            createdRevision: 0,
          },
          state: intentpb.SiteState.SITE_STATE_PENDING,
          publicKeyJwk: "",
          appliedIndex: 0,
          lastHeardUnixMs: 0,
          region: a.region,
        },
      });
    }
    if (cmd.joinSite) return this.stageJoin(index, cmd.joinSite);
    if (cmd.revokeSite) return this.stageRevokeSite(cmd.revokeSite.site);
    if (cmd.revokeToken) return this.stageRevokeToken(cmd.revokeToken);
    if (cmd.reportRealized) return this.stageReport(index, cmd.reportRealized);
    if (cmd.ack) return this.stageAck(cmd.ack);
    throw invalid("command", "empty command (no operation set)");
  }

  private stageCreate(index: number, obj: intentpb.IntentObject | undefined): Staged {
    const kind = obj ? kindOf(obj) : undefined;
    if (!obj || !kind) throw invalid("object", "must hold exactly one object kind");
    if (kind === "gateway" || kind === "portRecord") {
      throw new IntentError(
        "failed_precondition",
        `${KIND_NAMES[kind]} objects are reported by their site, not created by admins`,
        FIELD[kind],
      );
    }
    const f = FIELD[kind];
    const msg = structuredClone(obj[kind] as AnyObject);
    const meta = checkMeta(f, msg.meta);
    if (meta.revision !== 0) throw invalid(`${f}.meta.revision`, "must be 0 on create");
    if (this.names[kind].has(meta.name)) {
      throw new IntentError(
        "already_exists",
        `a ${KIND_NAMES[kind]} named "${meta.name}" already exists`,
        `${f}.meta.name`,
      );
    }
    if (meta.id && this.objects[kind].has(meta.id)) {
      throw new IntentError(
        "already_exists",
        `a ${KIND_NAMES[kind]} with id ${meta.id} already exists`,
        `${f}.meta.id`,
      );
    }
    const id = meta.id || deterministicUuid(`${index}`);
    msg.meta = { ...meta, id, revision: index, createdRevision: index };
    const staged: Staged = { upserts: [{ kind, obj: msg }], deletes: [] };
    this.checkKind(kind, msg, undefined, staged);
    return staged;
  }

  private stageUpdate(index: number, obj: intentpb.IntentObject | undefined): Staged {
    const kind = obj ? kindOf(obj) : undefined;
    if (!obj || !kind) throw invalid("object", "must hold exactly one object kind");
    if (kind === "gateway" || kind === "portRecord") {
      throw new IntentError(
        "failed_precondition",
        `${KIND_NAMES[kind]} objects are reported by their site, not updated by admins`,
        FIELD[kind],
      );
    }
    const f = FIELD[kind];
    const msg = structuredClone(obj[kind] as AnyObject);
    const meta = checkMeta(f, msg.meta);
    const existing = meta.id ? this.get(kind, meta.id) : this.byName(kind, meta.name);
    if (!existing) {
      throw new IntentError(
        "not_found",
        `no ${KIND_NAMES[kind]} ${meta.id ? `with id ${meta.id}` : `named "${meta.name}"`}`,
        `${f}.meta.${meta.id ? "id" : "name"}`,
      );
    }
    const old = metaOf(existing);
    if (meta.revision === 0)
      throw invalid(`${f}.meta.revision`, "the expected revision is required for updates");
    if (meta.revision !== old.revision) {
      throw new IntentError(
        "revision_conflict",
        `${KIND_NAMES[kind]} "${old.name}" is at revision ${old.revision}, not ${meta.revision}; read it again and retry`,
        `${f}.meta.revision`,
      );
    }
    if (meta.name !== old.name && this.names[kind].has(meta.name)) {
      throw new IntentError(
        "already_exists",
        `a ${KIND_NAMES[kind]} named "${meta.name}" already exists`,
        `${f}.meta.name`,
      );
    }
    msg.meta = { ...meta, id: old.id, revision: old.revision, createdRevision: old.createdRevision };
    const staged: Staged = { upserts: [{ kind, obj: msg }], deletes: [] };
    this.checkKind(kind, msg, existing, staged);
    if (sameObject(kind, msg, existing)) return { upserts: [], deletes: [] };
    msg.meta.revision = index;
    return staged;
  }

  /** Kind-specific validation, immutables, allocations and integrity of a create or update. */
  private checkKind(kind: KindKey, msg: AnyObject, existing: AnyObject | undefined, staged: Staged): void {
    switch (kind) {
      case "site": {
        const s = msg as intentpb.Site;
        const old = existing as intentpb.Site | undefined;
        if (!old && s.publicKeyJwk)
          throw invalid("site.public_key_jwk", "is registered by the site when it joins");
        if (old && s.publicKeyJwk && s.publicKeyJwk !== old.publicKeyJwk) {
          throw invalid(
            "site.public_key_jwk",
            "is registered by the site when it joins; revoke and re-add the site to re-key",
          );
        }
        if (old && s.state !== intentpb.SiteState.SITE_STATE_UNSPECIFIED && s.state !== old.state) {
          throw invalid("site.state", "changes through join and revoke, not update");
        }
        if (old && s.meta?.name !== old.meta?.name)
          throw invalid("site.meta.name", "a site's name is its identity and cannot change");
        checkSiteName("site.meta.name", s.meta?.name ?? "");
        if (s.region.length > 128) throw invalid("site.region", "longer than 128 characters");
        s.state = old ? old.state : intentpb.SiteState.SITE_STATE_PENDING;
        s.publicKeyJwk = old ? old.publicKeyJwk : "";
        s.appliedIndex = 0;
        s.lastHeardUnixMs = 0;
        return;
      }
      case "network": {
        const n = msg as intentpb.Network;
        const old = existing as intentpb.Network | undefined;
        if (old && n.vni !== 0 && n.vni !== old.vni)
          throw invalid("network.vni", `is immutable (allocated ${old.vni})`);
        if (old) n.vni = old.vni;
        checkNetwork(this, n);
        if (!old) {
          if (n.vni !== 0) this.needFreeVni("network.vni", n.vni);
          else this.allocateVni(staged, (v) => (n.vni = v), "network.vni");
        } else this.checkNetworkStillFits(n, old);
        return;
      }
      case "router": {
        const r = msg as intentpb.Router;
        const old = existing as intentpb.Router | undefined;
        if (old && r.transitVni !== 0 && r.transitVni !== old.transitVni) {
          throw invalid("router.transit_vni", `is immutable (allocated ${old.transitVni})`);
        }
        if (old) r.transitVni = old.transitVni;
        checkRouter(this, r);
        if (!old) {
          if (r.transitVni !== 0) this.needFreeVni("router.transit_vni", r.transitVni);
          else this.allocateVni(staged, (v) => (r.transitVni = v), "router.transit_vni");
        } else {
          for (const fip of this.list("floatingIp")) {
            if (fip.routerId === old.meta?.id && !r.uplinks.some((u) => u.site === fip.site)) {
              throw new IntentError(
                "failed_precondition",
                `floating IP "${fip.meta?.name}" uses the uplink at site "${fip.site}"; delete or move it first`,
                "router.uplinks",
              );
            }
          }
        }
        return;
      }
      case "routerInterface": {
        const ri = msg as intentpb.RouterInterface;
        const old = existing as intentpb.RouterInterface | undefined;
        if (old && ri.routerId !== old.routerId) throw invalid("router_interface.router_id", "is immutable");
        if (old && ri.networkId !== old.networkId)
          throw invalid("router_interface.network_id", "is immutable");
        checkRouterInterface(this, ri);
        if (!ri.mac) ri.mac = old?.mac || deterministicMac(metaOf(ri).id);
        return;
      }
      case "securityGroup":
        checkSecurityGroup(this, msg as intentpb.SecurityGroup);
        return;
      case "securityGroupRule": {
        const r = msg as intentpb.SecurityGroupRule;
        const old = existing as intentpb.SecurityGroupRule | undefined;
        if (old && r.securityGroupId !== old.securityGroupId)
          throw invalid("security_group_rule.security_group_id", "is immutable");
        r.protocol = r.protocol || "any";
        checkSecurityGroupRule(this, r);
        return;
      }
      case "floatingIp": {
        const fixed = checkFloatingIp(this, msg as intentpb.FloatingIP);
        (msg as intentpb.FloatingIP).fixedIp = fixed.fixedIp;
        return;
      }
      default:
        throw new Error(`intent: no admin validation for kind ${kind}`);
    }
  }

  /** After a network update, everything that relied on its subnets and sites must still hold. */
  private checkNetworkStillFits(n: intentpb.Network, old: intentpb.Network): void {
    const id = metaOf(old).id;
    const prefixes = networkPrefixes(n);
    const inside = (ip: string) => {
      const a = parseAddress(ip);
      return a !== undefined && prefixes.some((p) => prefixContains(p, a));
    };
    const rifs = this.list("routerInterface");
    for (const ri of rifs.filter((x) => x.networkId === id)) {
      const ip = ri.ip || routerInterfaceAddress(ri, old);
      if (!inside(ip)) {
        throw new IntentError(
          "failed_precondition",
          `router interface "${ri.meta?.name}" uses ${ip}, outside the new subnets`,
          "network.subnets",
        );
      }
      checkRouterSubnetsDisjoint(this, ri.routerId, rifs, id, n, "network.subnets");
    }
    for (const p of this.list("portRecord").filter((x) => x.networkId === id)) {
      if (!n.sites.includes(p.site)) {
        throw new IntentError(
          "failed_precondition",
          `port "${p.meta?.name}" at site "${p.site}" is on this network`,
          "network.sites",
        );
      }
      const bad = p.ips.find((ip) => !inside(ip));
      if (bad)
        throw new IntentError(
          "failed_precondition",
          `port "${p.meta?.name}" uses ${bad}, outside the new subnets`,
          "network.subnets",
        );
    }
  }

  private needFreeVni(field: string, vni: number): void {
    const owner = this.usedVnis.get(vni);
    if (owner) throw new IntentError("already_exists", `VNI ${vni} is already used by ${owner}`, field);
  }

  private allocateVni(staged: Staged, set: (v: number) => void, field: string): void {
    const span = GLOBAL_VNI_MAX - GLOBAL_VNI_MIN + 1;
    for (let i = 0; i < span; i++) {
      const v = GLOBAL_VNI_MIN + ((this.nextVni - GLOBAL_VNI_MIN + i) % span);
      if (!this.usedVnis.has(v)) {
        set(v);
        staged.nextVni = v === GLOBAL_VNI_MAX ? GLOBAL_VNI_MIN : v + 1;
        return;
      }
    }
    throw new IntentError("resource_exhausted", "the global VNI range 0x100000–0x7ffffe is exhausted", field);
  }

  private stageDelete(d: federationpb.DeleteObjectCommand): Staged {
    const kind = kindFromEnum(d.kind);
    if (!kind) throw invalid("kind", "is required");
    if (kind === "gateway" || kind === "portRecord") {
      throw new IntentError(
        "failed_precondition",
        `${KIND_NAMES[kind]} objects are removed by their site's reports`,
        "kind",
      );
    }
    const obj = d.id ? this.get(kind, d.id) : d.name ? this.byName(kind, d.name) : undefined;
    if (!d.id && !d.name) throw invalid("name", "id or name is required");
    if (!obj)
      throw new IntentError(
        "not_found",
        `no ${KIND_NAMES[kind]} ${d.id ? `with id ${d.id}` : `named "${d.name}"`}`,
        d.id ? "id" : "name",
      );
    const m = metaOf(obj);
    if (d.expectedRevision !== 0 && d.expectedRevision !== m.revision) {
      throw new IntentError(
        "revision_conflict",
        `${KIND_NAMES[kind]} "${m.name}" is at revision ${m.revision}, not ${d.expectedRevision}`,
        "expected_revision",
      );
    }
    const staged: Staged = { upserts: [], deletes: [{ kind, obj }] };
    const busy = (what: string) =>
      new IntentError(
        "failed_precondition",
        `${KIND_NAMES[kind]} "${m.name}" is in use by ${what}; delete that first`,
        d.id ? "id" : "name",
      );
    const id = m.id;
    switch (kind) {
      case "site": {
        for (const n of this.list("network"))
          if (n.sites.includes(m.name)) throw busy(`network "${n.meta?.name}"`);
        for (const r of this.list("router")) {
          if (r.uplinks.some((u) => u.site === m.name) || r.routes.some((rt) => rt.site === m.name))
            throw busy(`router "${r.meta?.name}"`);
        }
        for (const f of this.list("floatingIp"))
          if (f.site === m.name) throw busy(`floating IP "${f.meta?.name}"`);
        for (const p of this.list("portRecord"))
          if (p.site === m.name) staged.deletes.push({ kind: "portRecord", obj: p });
        for (const g of this.list("gateway"))
          if (g.site === m.name) staged.deletes.push({ kind: "gateway", obj: g });
        staged.after = () => this.siteStatus.delete(m.name);
        break;
      }
      case "network":
        for (const ri of this.list("routerInterface"))
          if (ri.networkId === id) throw busy(`router interface "${ri.meta?.name}"`);
        for (const p of this.list("portRecord"))
          if (p.networkId === id) throw busy(`port "${p.meta?.name}" at site "${p.site}"`);
        break;
      case "router":
        for (const ri of this.list("routerInterface"))
          if (ri.routerId === id) throw busy(`router interface "${ri.meta?.name}"`);
        for (const f of this.list("floatingIp"))
          if (f.routerId === id) throw busy(`floating IP "${f.meta?.name}"`);
        break;
      case "securityGroup":
        for (const r of this.list("securityGroupRule")) {
          if (r.remoteGroupId === id && r.securityGroupId !== id)
            throw busy(`rule "${r.meta?.name}" of another group`);
        }
        for (const p of this.list("portRecord"))
          if (p.securityGroupIds.includes(id)) throw busy(`port "${p.meta?.name}" at site "${p.site}"`);
        // A group's own rules go with it.
        for (const r of this.list("securityGroupRule"))
          if (r.securityGroupId === id) staged.deletes.push({ kind: "securityGroupRule", obj: r });
        break;
      default:
        break;
    }
    return staged;
  }

  /**
   * A site presenting a valid onboarding token. The token was signed with the coordinator's key,
   * which is the admin's authorization: a site not added beforehand is created here, active.
   */
  private stageJoin(index: number, j: federationpb.JoinSiteCommand): Staged {
    checkSiteName("site", j.site);
    if (!j.tokenId) throw invalid("token_id", "is required");
    if (this.tokens.has(j.tokenId)) {
      throw new IntentError("unauthenticated", "onboarding token was already used or revoked", "token");
    }
    if (j.tokenExpiresUnixMs <= this.clock)
      throw new IntentError("unauthenticated", "onboarding token has expired", "token");
    const s = this.byName("site", j.site);
    if (s?.state === intentpb.SiteState.SITE_STATE_REVOKED)
      throw new IntentError("permission_denied", `site "${j.site}" is revoked`, "site");
    if (s?.state === intentpb.SiteState.SITE_STATE_ACTIVE) {
      throw new IntentError(
        "failed_precondition",
        `site "${j.site}" has already joined; revoke and delete it to join again`,
        "site",
      );
    }
    checkJwk(j.publicKeyJwk);
    this.needTokenRoom();
    const updated: intentpb.Site = s
      ? { ...structuredClone(s), state: intentpb.SiteState.SITE_STATE_ACTIVE, publicKeyJwk: j.publicKeyJwk }
      : {
          meta: {
            id: deterministicUuid(`${index}`),
            name: j.site,
            revision: index,
            createdRevision: index,
            description: "",
            labels: {},
          },
          state: intentpb.SiteState.SITE_STATE_ACTIVE,
          publicKeyJwk: j.publicKeyJwk,
          appliedIndex: 0,
          lastHeardUnixMs: 0,
          region: "",
        };
    return {
      upserts: [{ kind: "site", obj: updated }],
      deletes: [],
      after: () =>
        this.tokens.set(j.tokenId, {
          tokenId: j.tokenId,
          expiresUnixMs: j.tokenExpiresUnixMs,
          revoked: false,
        }),
    };
  }

  private stageRevokeSite(name: string): Staged {
    const s = this.byName("site", name);
    if (!s) throw new IntentError("not_found", `no site named "${name}"`, "site");
    if (s.state === intentpb.SiteState.SITE_STATE_REVOKED) return { upserts: [], deletes: [] };
    return {
      upserts: [
        { kind: "site", obj: { ...structuredClone(s), state: intentpb.SiteState.SITE_STATE_REVOKED } },
      ],
      deletes: [],
    };
  }

  private stageRevokeToken(t: federationpb.RevokeTokenCommand): Staged {
    if (!t.tokenId) throw invalid("token_id", "is required");
    if (!this.tokens.has(t.tokenId)) this.needTokenRoom();
    return {
      upserts: [],
      deletes: [],
      after: () =>
        this.tokens.set(t.tokenId, { tokenId: t.tokenId, expiresUnixMs: t.expiresUnixMs, revoked: true }),
    };
  }

  private needTokenRoom(): void {
    if (this.tokens.size >= this.maxTokens) {
      throw new IntentError(
        "resource_exhausted",
        `too many remembered token ids (limit ${this.maxTokens}); retry after some expire`,
        "token",
      );
    }
  }

  private needActiveSite(name: string): intentpb.Site {
    const s = this.byName("site", name);
    if (!s) throw new IntentError("not_found", `no site named "${name}"`, "site");
    if (s.state !== intentpb.SiteState.SITE_STATE_ACTIVE) {
      throw new IntentError(
        "permission_denied",
        `site "${name}" is ${s.state === intentpb.SiteState.SITE_STATE_REVOKED ? "revoked" : "not joined yet"}`,
        "site",
      );
    }
    return s;
  }

  private stageReport(index: number, r: sitesyncReport): Staged {
    this.needActiveSite(r.site);
    const staged: Staged = { upserts: [], deletes: [] };
    const reported = new Set<string>();
    const names = new Map<string, string>();
    r.ports.forEach((p, i) => {
      const f = `ports[${i}]`;
      checkPortRecord(this, r.site, p, f);
      const id = metaOf(p).id;
      if (reported.has(id)) throw invalid(`${f}.meta.id`, `port ${id} reported twice`);
      reported.add(id);
      const existing = this.get("portRecord", id);
      if (existing && existing.site !== r.site) {
        throw new IntentError(
          "permission_denied",
          `port ${id} belongs to site "${existing.site}"`,
          `${f}.meta.id`,
        );
      }
      const name = p.meta?.name || id;
      const holder = this.names.portRecord.get(name) ?? names.get(name);
      if (holder !== undefined && holder !== id) {
        throw new IntentError("already_exists", `a port named "${name}" already exists`, `${f}.meta.name`);
      }
      names.set(name, id);
      const msg: intentpb.PortRecord = {
        ...structuredClone(p),
        site: r.site,
        meta: {
          id,
          name,
          description: p.meta?.description ?? "",
          labels: sortedLabels(p.meta?.labels ?? {}),
          revision: existing ? metaOf(existing).revision : index,
          createdRevision: existing ? metaOf(existing).createdRevision : index,
        },
      };
      if (existing && sameObject("portRecord", msg, existing)) return;
      msg.meta = { ...metaOf(msg), revision: index };
      staged.upserts.push({ kind: "portRecord", obj: msg });
    });
    const removed = new Set(r.removedPortIds);
    for (const p of this.list("portRecord")) {
      if (p.site !== r.site || reported.has(metaOf(p).id)) continue;
      if (r.full || removed.has(metaOf(p).id)) {
        const fip = this.list("floatingIp").find((x) => x.portId === metaOf(p).id);
        if (fip) {
          // The port is gone at its site; the floating IP stays, unassigned, so nothing dangles.
          staged.upserts.push({
            kind: "floatingIp",
            obj: {
              ...structuredClone(fip),
              portId: "",
              fixedIp: "",
              meta: { ...metaOf(fip), revision: index },
            },
          });
        }
        staged.deletes.push({ kind: "portRecord", obj: p });
      }
    }
    checkGatewayEndpoints(r.gatewayEndpoints);
    const gw = this.list("gateway").find((g) => g.site === r.site);
    if (r.gatewayEndpoints.length > 0) {
      const endpoints = r.gatewayEndpoints.map((e) => ({ ...e, port: e.port || 4789 }));
      const msg: intentpb.Gateway = {
        meta: gw
          ? { ...metaOf(gw) }
          : {
              id: deterministicUuid(`${index}/gateway`),
              name: r.site,
              revision: index,
              createdRevision: index,
              description: "",
              labels: {},
            },
        site: r.site,
        endpoints,
      };
      if (!gw || !sameObject("gateway", msg, gw)) {
        msg.meta = { ...metaOf(msg), revision: index };
        staged.upserts.push({ kind: "gateway", obj: msg });
      }
    } else if (r.full && gw) staged.deletes.push({ kind: "gateway", obj: gw });
    if (r.health) {
      const health = r.health;
      staged.after = () => {
        const st = this.statusOf(r.site);
        st.health = structuredClone(health);
        st.lastHeardUnixMs = this.clock;
      };
    }
    return staged;
  }

  private stageAck(a: { site: string; appliedIndex: number }): Staged {
    this.needActiveSite(a.site);
    if (a.appliedIndex > this.applied) {
      throw invalid("applied_index", `${a.appliedIndex} is beyond the coordinator's log (${this.applied})`);
    }
    return {
      upserts: [],
      deletes: [],
      after: () => {
        const st = this.statusOf(a.site);
        st.appliedIndex = Math.max(st.appliedIndex, a.appliedIndex);
        st.lastHeardUnixMs = this.clock;
      },
    };
  }

  private statusOf(site: string): federationpb.SiteStatusRecord {
    let st = this.siteStatus.get(site);
    if (!st) {
      st = { site, appliedIndex: 0, lastHeardUnixMs: 0, health: undefined };
      this.siteStatus.set(site, st);
    }
    return st;
  }

  // ---- Commit: mutation only --------------------------------------------------------------------

  /** Refuses a command that would grow a kind past its bound (checked before any mutation). */
  private checkRoom(s: Staged): void {
    const added = new Map<KindKey, number>();
    for (const { kind, obj } of s.upserts) {
      if (!this.objects[kind].has(metaOf(obj).id)) added.set(kind, (added.get(kind) ?? 0) + 1);
    }
    for (const { kind } of s.deletes) added.set(kind, (added.get(kind) ?? 0) - 1);
    for (const [kind, n] of added) {
      if (n > 0 && this.objects[kind].size + n > this.maxObjects) {
        throw new IntentError(
          "resource_exhausted",
          `the federation holds the maximum of ${this.maxObjects} ${KIND_NAMES[kind]} objects`,
          FIELD[kind],
        );
      }
    }
  }

  private commit(index: number, s: Staged): ApplyOk {
    for (const { kind, obj } of s.deletes) this.remove(kind, metaOf(obj).id);
    for (const { kind, obj } of s.upserts) {
      metaOf(obj).revision = index;
      const prev = this.get(kind, metaOf(obj).id);
      if (prev) this.remove(kind, metaOf(prev).id);
      this.put(kind, obj);
      // Encoded now, a few µs an entry, rather than 10 000 at once when the next raft snapshot
      // is due (a stall of the event loop the whole group feels: heartbeats wait meanwhile).
      this.encodedOf(kind, obj);
    }
    if (s.nextVni !== undefined) this.nextVni = s.nextVni;
    s.after?.();
    const objects = s.upserts.map(({ kind, obj }) => structuredClone(wrap(kind, obj as never)));
    const deleted = s.deletes.map(({ kind, obj }) => refOf(kind, obj));
    let change: intentpb.IntentChange | undefined;
    if (objects.length > 0 || deleted.length > 0) {
      change = { index, upserts: objects, deletes: deleted };
      this.journal.append(change);
    }
    this.emit({ index, change });
    return { ok: true, index, change, objects: structuredClone(objects), deleted };
  }

  private put(kind: KindKey, obj: AnyObject): void {
    const m = metaOf(obj);
    m.labels = sortedLabels(m.labels);
    this.objects[kind].set(m.id, obj);
    this.names[kind].set(m.name, m.id);
    if (kind === "network") this.usedVnis.set((obj as intentpb.Network).vni, `network "${m.name}"`);
    if (kind === "router") this.usedVnis.set((obj as intentpb.Router).transitVni, `router "${m.name}"`);
  }

  private remove(kind: KindKey, id: string): void {
    const obj = this.objects[kind].get(id);
    if (!obj) return;
    const m = metaOf(obj);
    this.objects[kind].delete(id);
    if (this.names[kind].get(m.name) === id) this.names[kind].delete(m.name);
    if (kind === "network") this.usedVnis.delete((obj as intentpb.Network).vni);
    if (kind === "router") this.usedVnis.delete((obj as intentpb.Router).transitVni);
  }

  /** Forgets token ids that expired (by the log's clock) more than a skew allowance ago. */
  private pruneTokens(): void {
    const horizon = this.clock - TOKEN_SKEW_MS;
    if (this.tokens.size === 0) return;
    for (const [id, t] of this.tokens) if (t.expiresUnixMs < horizon) this.tokens.delete(id);
  }

  private emit(ev: AppliedEvent): void {
    for (const l of this.listeners) l(ev);
  }
}

/** Remembered token ids outlive their expiry by this much, covering verifier clock skew. */
export const TOKEN_SKEW_MS = 5 * 60_000;

type sitesyncReport = NonNullable<federationpb.IntentCommand["reportRealized"]>;

function emptyTables<T>(): Record<KindKey, Map<string, T>> {
  return Object.fromEntries(KIND_KEYS.map((k) => [k, new Map<string, T>()])) as Record<
    KindKey,
    Map<string, T>
  >;
}

/** Tag of IntentState.objects (field 2, length-delimited). */
const INTENT_STATE_OBJECTS_TAG = (2 << 3) | 2;

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sortedLabels(labels: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(labels).sort()) out[k] = labels[k] ?? "";
  return out;
}

/** Equal apart from the revision: an update that changes nothing is not a change. */
function sameObject(kind: KindKey, a: AnyObject, b: AnyObject): boolean {
  const norm = (o: AnyObject) => {
    const c = structuredClone(o);
    c.meta = { ...metaOf(c), revision: 0, labels: sortedLabels(metaOf(c).labels) };
    return intentpb.IntentObject.encode(wrap(kind, c as never)).finish();
  };
  return Buffer.from(norm(a)).equals(Buffer.from(norm(b)));
}

function checkJwk(text: string): void {
  let jwk: unknown;
  try {
    jwk = JSON.parse(text);
  } catch {
    throw invalid("public_key_jwk", "is not JSON");
  }
  if (typeof jwk !== "object" || jwk === null || typeof (jwk as { kty?: unknown }).kty !== "string") {
    throw invalid("public_key_jwk", "is not a JWK (no kty)");
  }
  if ("d" in jwk) throw invalid("public_key_jwk", "holds a private key; send only the public part");
}
