// Applies the coordinator's intent stream to the site database: each IntentChange in exactly one
// transaction that also records its log index (so a crash anywhere replays nothing twice and
// skips nothing), snapshots by replacing the whole intent copy and diffing the topology.
import { type intentpb, topologypb } from "@isthmus/schema";
import type { Tx } from "./db/database.js";
import { type LeaseClaim, verifyLeaseRow } from "./fence.js";
import { loadLocalObjects } from "./local-store.js";
import {
  decodeIntent,
  decodeTopology,
  encodeIntent,
  encodeTopology,
  intentKeyOf,
  keyString,
  topologyRefOf,
} from "./objects.js";
import {
  fitsOneStatement,
  loggedChange,
  PRUNE_CHANGES,
  type PreparedTopologyWrite,
  prepareTopologyWrite,
  pruneDue,
  readAllTopology,
  SqlParams,
  type TopologyWrite,
  topologyWriteCtes,
  writeTopologyChange,
} from "./topology-store.js";
import { IntentIndex, type TunnelKeyMove, unwrapIntentObject, uplinkPortId } from "./translate/index.js";
import { writeTunnelKeyMoves } from "./tunnel-key-allocator.js";
import type { WriteContext } from "./write-context.js";

export type ApplyOutcome = "applied" | "skipped";

/** Where an applied change's time went (performance.now() ms; see applyChange). */
export interface ApplyTiming {
  startedAt?: number;
  translatedAt?: number;
  writtenAt?: number;
  committedAt?: number;
  revision?: number;
}

/** Intent rows per INSERT when a snapshot replaces the copy (4 parameters a row). */
const SNAPSHOT_ROWS_PER_STATEMENT = 500;

export class IntentApplier {
  private applied = 0;
  private appliedAtMs = 0;

  constructor(private readonly ctx: WriteContext) {}

  get appliedIndex(): number {
    return this.applied;
  }
  /** Wall-clock time of the last applied entry (0 = none since start). */
  get lastAppliedAtMs(): number {
    return this.appliedAtMs;
  }

  /**
   * Loads the applied index, intent copy, local objects and derived-port tunnel keys from the
   * database into memory, replacing what memory held (the other replica may have written).
   */
  async load(): Promise<void> {
    await this.ctx.queue.run(() => this.loadUnqueued());
  }

  private async loadUnqueued(): Promise<void> {
    const { index, db } = this.ctx;
    const state = await db.tx(
      "load-intent",
      async (tx) => {
        const s = await tx.query("SELECT applied_index FROM intent_state WHERE id = 1");
        const rows = await tx.query("SELECT body FROM intent_objects");
        const local = await loadLocalObjects(tx);
        return {
          applied: Number(s.rows[0]?.applied_index ?? 0),
          objects: rows.rows.map((r) => decodeIntent(r.body as Buffer)),
          local,
          keys: await loadDerivedTunnelKeys(tx),
        };
      },
      { readOnly: true },
    );
    index.loadIntentSnapshot({ index: state.applied, objects: state.objects });
    const hostIds = new Set(state.local.hosts.map((h) => h.id));
    const portIds = new Set(state.local.ports.map((p) => p.id));
    for (const h of [...index.list("host")]) if (!hostIds.has(h.id)) index.removeHost(h.id);
    for (const p of [...index.list("localPort")]) if (!portIds.has(p.id)) index.removeLocalPort(p.id);
    for (const h of state.local.hosts) index.putHost(h);
    for (const p of state.local.ports) index.putLocalPort(p);
    for (const portId of [...index.tunnelKeys().keys()]) index.setTunnelKey(portId, 0);
    for (const [portId, key] of state.keys) index.setTunnelKey(portId, key);
    this.applied = state.applied;
  }

  private async recordIndex(tx: Tx, idx: number): Promise<void> {
    await tx.query("UPDATE intent_state SET applied_index = $1, applied_at = now() WHERE id = 1", [idx]);
  }

  /**
   * `timing` (performance.now() ms) gets `startedAt` when the apply has its turn in the queue,
   * `translatedAt` when the translation is done, `writtenAt` when the transaction's statements
   * are (COMMIT follows), `committedAt` when it committed, and the topology `revision` it wrote.
   */
  async applyChange(change: intentpb.IntentChange, timing?: ApplyTiming): Promise<ApplyOutcome> {
    const { ctx } = this;
    return ctx.queue.run(async (): Promise<ApplyOutcome> => {
      if (timing) timing.startedAt = performance.now();
      if (change.index <= this.applied) return "skipped";
      const prior = ctx.index.applyIntentChange(change);
      let moves: TunnelKeyMove[] = [];
      let committed: topologypb.TopologyChange | undefined;
      try {
        // Uplink ports get their site-local keys before translating, so the translation (and
        // the stored uplink port) carries them; the keys commit with the entry.
        const keyProblems: string[] = [];
        moves = ctx.index.syncUplinkTunnelKeys(change, this.uplinkKeyAllocator(keyProblems));
        const delta = ctx.translator.translateChange(ctx.index, change, prior);
        if (timing) timing.translatedAt = performance.now();
        const problems = [...keyProblems, ...delta.problems];
        if (problems.length > 0) ctx.onProblems?.(problems);
        const prepared = await prepareTopologyWrite(delta);
        const rows = intentRows(change);
        const result =
          moves.length === 0 && !ctx.beforeCommit && fitsOneEntryStatement(rows, prepared)
            ? await this.applyInOneStatement(change.index, rows, prepared, timing)
            : await ctx.db.tx(`apply ${change.index}`, async (tx) => {
                if (!(await writeIntentRows(tx, await ctx.fence.claim(), change.index, rows)))
                  return { skipped: true, written: undefined };
                await writeTunnelKeyMoves(tx, moves);
                const written = await writeTopologyChange(tx, delta, "intent", ctx.changeLog);
                await ctx.beforeCommit?.(tx, `apply ${change.index}`);
                if (timing) timing.writtenAt = performance.now();
                return { skipped: false, written };
              });
        if (result.skipped) {
          // Another writer got there first (only possible across a lease hand-over); reload.
          ctx.index.restoreTunnelKeys(moves);
          ctx.index.revertIntentChange(change, prior);
          await this.loadUnqueued();
          return "skipped";
        }
        committed = result.written;
      } catch (err) {
        ctx.index.restoreTunnelKeys(moves);
        ctx.index.revertIntentChange(change, prior);
        throw err;
      }
      this.applied = change.index;
      this.appliedAtMs = Date.now();
      if (timing) {
        timing.committedAt = performance.now();
        timing.revision = committed?.revision ?? 0;
      }
      if (committed !== undefined) ctx.onCommitted(committed.revision, committed);
      return "applied";
    });
  }

  /**
   * An entry whose writes fit in one statement (entryStatement) — nearly every entry: an admin's
   * change touches a few objects — in one round trip to the database, an implicit transaction,
   * instead of four (BEGIN, the intent rows, the topology, COMMIT). On a busy machine each round
   * trip waits for the database's process and then ours to be scheduled, at every site. The
   * change log is pruned after, in its own statement, when due.
   */
  private async applyInOneStatement(
    index: number,
    rows: IntentRows,
    prepared: PreparedTopologyWrite | undefined,
    timing: ApplyTiming | undefined,
  ): Promise<{ skipped: boolean; written: topologypb.TopologyChange | undefined }> {
    const { ctx } = this;
    const claim = await ctx.fence.claim();
    const { text, params } = entryStatement(claim, index, rows, prepared);
    const r = await ctx.db.statement(`apply ${index}`, text, params);
    if (timing) timing.writtenAt = performance.now();
    const row = r.rows[0] as EntryRow | undefined;
    verifyLeaseRow(claim, row?.holder === null ? undefined : row);
    if (!row?.moved) return { skipped: true, written: undefined };
    if (prepared === undefined) return { skipped: false, written: undefined };
    if (row.revision === null) throw new Error("topology_revision row is missing; were migrations applied?");
    const revision = Number(row.revision);
    if (pruneDue(revision, ctx.changeLog))
      await ctx.db.statement("prune-changes", PRUNE_CHANGES, [revision - ctx.changeLog.retention]);
    return { skipped: false, written: loggedChange(prepared, revision) };
  }

  /**
   * The allocate callback for syncUplinkTunnelKeys: a free site-local key, or 0 (the port then
   * has no key, which the simulation reports) with a problem line when the range is full.
   */
  private uplinkKeyAllocator(problems: string[]): (portId: string) => number {
    const next = this.ctx.keys.begin();
    return (portId) => {
      const key = next();
      if (key === 0) {
        problems.push(
          `uplink port ${portId}: all ${this.ctx.keys.size} site-local tunnel keys are in use; it has no tunnel key`,
        );
      }
      return key;
    };
  }

  /**
   * When the stored topology was derived by another version of the translation than ours (an
   * upgrade), moves it to what ours derives from the same intent — one revision holding the
   * difference, like a snapshot's — and records our version in the same transaction. Returns
   * the objects changed (0: nothing to do). A translator without a version is left alone.
   */
  async reconcileTranslation(): Promise<number> {
    const { ctx } = this;
    const version = ctx.translator.version;
    if (version === undefined) return 0;
    return ctx.queue.run(async () => {
      const stored = await ctx.db.tx(
        "translation-version",
        async (tx) => {
          const r = await tx.query("SELECT version FROM translation_state WHERE id = 1");
          return r.rows[0] === undefined ? undefined : Number(r.rows[0].version);
        },
        { readOnly: true },
      );
      if (stored === version) return 0;
      const full = ctx.translator.translateAllSteps
        ? await runSteps(ctx.translator.translateAllSteps(ctx.index, SNAPSHOT_STEP))
        : ctx.translator.translateAll(ctx.index);
      if (full.problems.length > 0) ctx.onProblems?.(full.problems);
      let changed = 0;
      const committed = await ctx.db.tx("reconcile-translation", async (tx) => {
        await ctx.fence.check(tx);
        const delta = await diffTopology(await readAllTopology(tx), full.objects, yieldToEventLoop);
        changed = delta.upserts.length + delta.deletes.length;
        const written = await writeTopologyChange(tx, delta, "intent", ctx.changeLog);
        await tx.query(
          "INSERT INTO translation_state (id, version) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = excluded.version",
          [version],
        );
        return written;
      });
      if (committed !== undefined) ctx.onCommitted(committed.revision, committed);
      return changed;
    });
  }

  /**
   * Gives a key to every uplink port here that has none: stored before uplink keys were
   * allocated, or when the key range was full. Patches the stored port in one revision.
   * Returns how many ports got a key.
   */
  async assignMissingUplinkKeys(): Promise<number> {
    const { ctx } = this;
    return ctx.queue.run(async () => {
      const problems: string[] = [];
      const allocate = this.uplinkKeyAllocator(problems);
      const moves: TunnelKeyMove[] = [];
      for (const r of ctx.index.routersWithUplinkHere()) {
        const portId = uplinkPortId(r.meta?.id ?? "", ctx.site);
        if (ctx.index.tunnelKeyOf(portId) !== 0) continue;
        const key = allocate(portId);
        if (key === 0) break;
        ctx.index.setTunnelKey(portId, key);
        moves.push({ portId, before: 0, after: key });
      }
      if (problems.length > 0) ctx.onProblems?.(problems);
      if (moves.length === 0) return 0;
      let written: topologypb.TopologyChange | undefined;
      try {
        written = await ctx.db.tx("assign-uplink-keys", async (tx) => {
          await ctx.fence.check(tx);
          const upserts: topologypb.TopologyObject[] = [];
          for (const m of moves) {
            const row = await tx.query("SELECT body FROM topology_objects WHERE kind = $1 AND id = $2", [
              topologypb.TopologyKind.TOPOLOGY_KIND_PORT,
              m.portId,
            ]);
            const stored = row.rows[0] ? decodeTopology(row.rows[0].body as Buffer).port : undefined;
            if (stored) upserts.push({ port: { ...stored, tunnelKey: m.after } });
          }
          await writeTunnelKeyMoves(tx, moves);
          const r = await writeTopologyChange(tx, { upserts, deletes: [] }, "intent", ctx.changeLog);
          await ctx.beforeCommit?.(tx, "assign-uplink-keys");
          return r;
        });
      } catch (err) {
        ctx.index.restoreTunnelKeys(moves);
        throw err;
      }
      if (written !== undefined) ctx.onCommitted(written.revision, written);
      return moves.length;
    });
  }

  /** Nothing changed for this site up to `idx`: only the applied index moves. */
  async applyProgress(idx: number): Promise<ApplyOutcome> {
    const { ctx } = this;
    return ctx.queue.run(async (): Promise<ApplyOutcome> => {
      if (idx <= this.applied) return "skipped";
      // One statement: the fence and the index (entryStatement with nothing else to write).
      const claim = await ctx.fence.claim();
      const { text, params } = entryStatement(claim, idx, { upserts: [], deletes: [] }, undefined);
      const r = await ctx.db.statement(`progress ${idx}`, text, params);
      const row = r.rows[0] as EntryRow | undefined;
      verifyLeaseRow(claim, row?.holder === null ? undefined : row);
      this.applied = idx;
      this.appliedAtMs = Date.now();
      return "applied";
    });
  }

  /** Replaces the intent copy with a snapshot and moves the topology to what it translates to. */
  async applySnapshot(snapshot: intentpb.IntentSnapshot): Promise<ApplyOutcome> {
    const { ctx } = this;
    return ctx.queue.run(async (): Promise<ApplyOutcome> => {
      // Translate against a fresh index holding the snapshot plus our local objects.
      // A snapshot of a large federation is 100k+ objects: every pass over it below lets the
      // event loop run now and then (lease renewals, agents' watches, the API), so the catch-up
      // does not stall the controller for seconds.
      const next = new IntentIndex(ctx.site, { maxObjects: ctx.index.maxObjects });
      for (let i = 0; i < snapshot.objects.length; i++) {
        const { kind, id, value } = unwrapIntentObject(snapshot.objects[i]!);
        next.put(kind, id, value);
        if (i % SNAPSHOT_STEP === SNAPSHOT_STEP - 1) await yieldToEventLoop();
      }
      for (const h of ctx.index.list("host")) next.putHost(h);
      for (const p of ctx.index.list("localPort")) next.putLocalPort(p);
      // Uplinks that stay keep their keys; new ones get one; the rest are released.
      const keyProblems: string[] = [];
      const allocate = this.uplinkKeyAllocator(keyProblems);
      for (const r of next.routersWithUplinkHere()) {
        const portId = uplinkPortId(r.meta?.id ?? "", ctx.site);
        next.setTunnelKey(portId, ctx.index.tunnelKeyOf(portId) || allocate(portId));
      }
      const moves = keyMoves(ctx.index.tunnelKeys(), next.tunnelKeys());
      const full = ctx.translator.translateAllSteps
        ? await runSteps(ctx.translator.translateAllSteps(next, SNAPSHOT_STEP))
        : ctx.translator.translateAll(next);
      const problems = [...keyProblems, ...full.problems];
      if (problems.length > 0) ctx.onProblems?.(problems);
      const desired = full.objects;
      let committed: topologypb.TopologyChange | undefined;
      await ctx.db.tx(`snapshot ${snapshot.index}`, async (tx) => {
        await ctx.fence.check(tx);
        await tx.query("DELETE FROM intent_objects");
        // Many rows a statement: a snapshot of a large federation is 100k+ objects.
        for (let i = 0; i < snapshot.objects.length; i += SNAPSHOT_ROWS_PER_STATEMENT) {
          const batch = snapshot.objects.slice(i, i + SNAPSHOT_ROWS_PER_STATEMENT);
          await tx.query(
            `INSERT INTO intent_objects (kind, id, body, revision) VALUES ${batch
              .map((_, k) => `($${4 * k + 1}, $${4 * k + 2}, $${4 * k + 3}, $${4 * k + 4})`)
              .join(", ")}`,
            batch.flatMap((obj) => {
              const key = intentKeyOf(obj);
              return [key.kind, key.id, encodeIntent(obj), revisionOf(obj) || snapshot.index];
            }),
          );
        }
        await writeTunnelKeyMoves(tx, moves);
        const existing = await readAllTopology(tx);
        const delta = await diffTopology(existing, desired, yieldToEventLoop);
        committed = await writeTopologyChange(tx, delta, "intent", ctx.changeLog);
        await this.recordIndex(tx, snapshot.index);
        await ctx.beforeCommit?.(tx, `snapshot ${snapshot.index}`);
      });
      // `next` holds the snapshot, this site's hosts and ports and the keys after `moves`.
      ctx.index.replaceWith(next);
      this.applied = snapshot.index;
      this.appliedAtMs = Date.now();
      if (committed !== undefined) ctx.onCommitted(committed.revision, committed);
      return "applied";
    });
  }
}

/** Intent rows written by the statement that also fences and moves the applied index. */
const INTENT_ROWS_FIRST_STATEMENT = 500;

/** What an entry's statement selects: the lease row it saw, whether it moved the index, the revision. */
interface EntryRow {
  holder: string | null;
  token: string | null;
  moved: boolean;
  revision?: string | null;
}

/** An entry's intent rows: the last version of each object, and the deletes it does not rewrite. */
interface IntentRows {
  upserts: [number, string, Buffer][];
  deletes: intentpb.ObjectRef[];
}

function intentRows(change: intentpb.IntentChange): IntentRows {
  // One row per key, the last version winning, as one statement per object would have it (a
  // statement may not touch a row twice): an object deleted and upserted by one change ends up
  // written, as deleting first and then upserting did.
  const rows = new Map<string, [number, string, Buffer]>();
  for (const obj of change.upserts) {
    const key = intentKeyOf(obj);
    rows.set(keyString(key.kind, key.id), [key.kind, key.id, encodeIntent(obj)]);
  }
  const deletes = change.deletes.filter((ref) => !rows.has(keyString(ref.kind, ref.id)));
  return { upserts: [...rows.values()], deletes };
}

/**
 * Whether an entry's first statement deletes its intent rows too. CockroachDB refuses a statement
 * that modifies one table in two places (sql.multiple_modifications_of_table.enabled, off by
 * default), so a change that both deletes and upserts objects deletes them in statements of
 * their own.
 */
function deletesInFirstStatement(rows: IntentRows): boolean {
  return rows.upserts.length === 0;
}

/**
 * The expressions that check the lease fence (`l`), move the applied index to the change's —
 * only when the database is behind it — (`m`) and, only then, upsert (`u`) the first
 * INTENT_ROWS_FIRST_STATEMENT of the entry's intent rows, or delete (`d`) the first of its deletes
 * when it upserts nothing (deletesInFirstStatement). Later expressions gate on `m`.
 */
function intentCtes(claim: LeaseClaim, index: number, rows: IntentRows, sql: SqlParams): string[] {
  const idx = sql.ref(index);
  const parts = [
    "l AS (SELECT holder, token FROM controller_lease WHERE id = 1)",
    `m AS (UPDATE intent_state SET applied_index = ${idx}::INT8, applied_at = now()
       WHERE id = 1 AND applied_index < ${idx}::INT8
         AND EXISTS (SELECT 1 FROM l WHERE l.holder = ${sql.ref(claim.holder)}::TEXT AND l.token = ${sql.ref(claim.token)}::INT8)
       RETURNING 1 AS ok)`,
  ];
  const firstDeletes = deletesInFirstStatement(rows)
    ? rows.deletes.slice(0, INTENT_ROWS_FIRST_STATEMENT)
    : [];
  if (firstDeletes.length > 0) {
    parts.push(
      `d AS (DELETE FROM intent_objects WHERE EXISTS (SELECT 1 FROM m) AND (kind, id) IN (${firstDeletes
        .map((r) => `(${sql.ref(r.kind)}::INT8, ${sql.ref(r.id)}::TEXT)`)
        .join(", ")}))`,
    );
  }
  const first = rows.upserts.slice(0, INTENT_ROWS_FIRST_STATEMENT);
  if (first.length > 0) {
    parts.push(
      `u AS (INSERT INTO intent_objects (kind, id, body, revision)
         SELECT v.kind, v.id, v.body, ${idx}::INT8 FROM (VALUES ${first
           .map(
             ([kind, id, body]) => `(${sql.ref(kind)}::INT8, ${sql.ref(id)}::TEXT, ${sql.ref(body)}::BYTEA)`,
           )
           .join(", ")}) AS v (kind, id, body)
         WHERE EXISTS (SELECT 1 FROM m)
         ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, revision = excluded.revision)`,
    );
  }
  return parts;
}

const ENTRY_SELECT =
  "SELECT (SELECT holder FROM l) AS holder, (SELECT token FROM l) AS token, EXISTS (SELECT 1 FROM m) AS moved";

/**
 * Whether an entry's intent rows and topology delta fit in entryStatement: few enough rows, and
 * each table modified in one place only (deletesInFirstStatement; fitsOneStatement).
 */
function fitsOneEntryStatement(rows: IntentRows, prepared: PreparedTopologyWrite | undefined): boolean {
  return (
    rows.upserts.length <= INTENT_ROWS_FIRST_STATEMENT &&
    rows.deletes.length <= INTENT_ROWS_FIRST_STATEMENT &&
    (rows.deletes.length === 0 || deletesInFirstStatement(rows)) &&
    (prepared === undefined || fitsOneStatement(prepared))
  );
}

/**
 * A whole entry as one statement: writeIntentRows's fence, index and intent rows, then — gated on
 * the index having moved — the topology delta as the next revision. Selects the lease row seen,
 * whether the index moved and the revision written (null when there was no delta or no move).
 */
function entryStatement(
  claim: LeaseClaim,
  index: number,
  rows: IntentRows,
  prepared: PreparedTopologyWrite | undefined,
): { text: string; params: unknown[] } {
  const sql = new SqlParams();
  const parts = intentCtes(claim, index, rows, sql);
  if (prepared)
    parts.push(
      ...topologyWriteCtes(prepared, "intent", sql, {
        deletes: true,
        gate: "EXISTS (SELECT 1 FROM m)",
      }),
    );
  const revision = prepared ? ", (SELECT revision FROM r) AS revision" : "";
  return { text: `WITH ${parts.join(",\n")}\n${ENTRY_SELECT}${revision}`, params: sql.values };
}

/**
 * In one statement: checks the lease fence, moves the applied index to `index` — only when the
 * database is behind it — and, only then, writes the first of the entry's intent rows (intentCtes);
 * the rest follow a statement per 500. Returns false when the database already had the index (a
 * replay; nothing written); throws FencedOut when the lease row is not `claim`'s.
 */
async function writeIntentRows(tx: Tx, claim: LeaseClaim, index: number, rows: IntentRows): Promise<boolean> {
  const sql = new SqlParams();
  const parts = intentCtes(claim, index, rows, sql);
  const r = await tx.query(`WITH ${parts.join(",\n")}\n${ENTRY_SELECT}`, sql.values);
  const row = r.rows[0] as EntryRow | undefined;
  verifyLeaseRow(claim, row?.holder === null ? undefined : row);
  if (!row?.moved) return false;
  const { deletes, upserts } = rows;
  const deletesFrom = deletesInFirstStatement(rows) ? INTENT_ROWS_FIRST_STATEMENT : 0;
  for (let i = deletesFrom; i < deletes.length; i += INTENT_ROWS_FIRST_STATEMENT) {
    const batch = deletes.slice(i, i + INTENT_ROWS_FIRST_STATEMENT);
    await tx.query(
      `DELETE FROM intent_objects WHERE (kind, id) IN (${batch.map((_, k) => `($${2 * k + 1}::INT8, $${2 * k + 2}::TEXT)`).join(", ")})`,
      batch.flatMap((d) => [d.kind, d.id]),
    );
  }
  for (let i = INTENT_ROWS_FIRST_STATEMENT; i < upserts.length; i += INTENT_ROWS_FIRST_STATEMENT) {
    const batch = upserts.slice(i, i + INTENT_ROWS_FIRST_STATEMENT);
    await tx.query(
      `INSERT INTO intent_objects (kind, id, body, revision) VALUES ${batch
        .map((_, k) => `($${3 * k + 2}, $${3 * k + 3}, $${3 * k + 4}, $1)`)
        .join(", ")}
       ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, revision = excluded.revision`,
      [index, ...batch.flat()],
    );
  }
  return true;
}

function revisionOf(obj: intentpb.IntentObject): number {
  for (const v of Object.values(obj)) {
    const meta = (v as { meta?: intentpb.ObjectMeta } | undefined)?.meta;
    if (meta) return meta.revision;
  }
  return 0;
}

/** Objects handled between two turns of the event loop while applying a snapshot. */
const SNAPSHOT_STEP = 2_000;

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Runs a generator of steps to its result, letting the event loop run between steps. */
async function runSteps<T>(steps: Generator<void, T>): Promise<T> {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    await yieldToEventLoop();
  }
}

/**
 * The delta that turns `existing` (kind/id → encoded object) into exactly `desired`; `pause`
 * is awaited every SNAPSHOT_STEP objects.
 */
export async function diffTopology(
  existing: Map<string, Buffer>,
  desired: topologypb.TopologyObject[],
  pause: () => Promise<void> = async () => {},
): Promise<TopologyWrite> {
  // The upserts' encodings go along, so writing them does not encode 100k+ objects again.
  const encoded: Buffer[] = [];
  const out: TopologyWrite = { upserts: [], deletes: [], encoded };
  const keep = new Set<string>();
  for (const [i, obj] of desired.entries()) {
    if (i % SNAPSHOT_STEP === SNAPSHOT_STEP - 1) await pause();
    const ref = topologyRefOf(obj);
    const k = keyString(ref.kind, ref.id);
    keep.add(k);
    const old = existing.get(k);
    const body = encodeTopology(obj);
    if (!old?.equals(body)) {
      out.upserts.push(obj);
      encoded.push(body);
    }
  }
  for (const k of existing.keys()) {
    if (keep.has(k)) continue;
    const slash = k.indexOf("/");
    out.deletes.push({ kind: Number(k.slice(0, slash)), id: k.slice(slash + 1) });
  }
  return out;
}

/** The moves that turn one set of derived-port keys into another. */
function keyMoves(before: ReadonlyMap<string, number>, after: ReadonlyMap<string, number>): TunnelKeyMove[] {
  const moves: TunnelKeyMove[] = [];
  for (const [portId, key] of before) {
    const a = after.get(portId) ?? 0;
    if (a !== key) moves.push({ portId, before: key, after: a });
  }
  for (const [portId, key] of after) if (!before.has(portId)) moves.push({ portId, before: 0, after: key });
  return moves;
}

/**
 * The site-local keys of derived ports: those the stored uplink ports carry, and those in
 * `tunnel_keys` naming no VM port (an uplink whose port the translation skipped as invalid).
 */
async function loadDerivedTunnelKeys(tx: Tx): Promise<Map<string, number>> {
  const keys = new Map<string, number>();
  const ports = await tx.query("SELECT body FROM topology_objects WHERE kind = $1 AND origin = 'intent'", [
    topologypb.TopologyKind.TOPOLOGY_KIND_PORT,
  ]);
  for (const row of ports.rows) {
    const port = decodeTopology(row.body as Buffer).port;
    if (port?.type === topologypb.PortType.PORT_TYPE_ROUTER_UPLINK && port.tunnelKey !== 0) {
      keys.set(port.id, port.tunnelKey);
    }
  }
  const rows = await tx.query(
    "SELECT tunnel_key, port_id FROM tunnel_keys WHERE port_id NOT IN (SELECT id FROM ports)",
  );
  for (const r of rows.rows) {
    if (!keys.has(r.port_id as string)) keys.set(r.port_id as string, Number(r.tunnel_key));
  }
  return keys;
}
