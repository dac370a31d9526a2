// SQL for the site's topology: objects, the revision counter and the change log agents tail.
// Every write bumps the one-row revision counter inside the caller's transaction, so revisions
// are gap-free and commit in order, and inserts the whole change into the log in the same
// transaction — a watcher on either controller replica sees exactly the committed sequence.
import { fieldSize, topologypb, writeField } from "@isthmus/schema";
import type { Database, Tx } from "./db/database.js";
import { decodeTopology, encodeTopology, keyString, topologyRefOf } from "./objects.js";

/** What one revision writes (a translate TopologyDelta without its problems). */
export interface TopologyWrite {
  upserts: topologypb.TopologyObject[];
  deletes: topologypb.TopologyRef[];
  /** Each upsert's encoding when its maker already has it (a snapshot's diff), same order. */
  encoded?: Buffer[];
}

/** Rows per INSERT/DELETE statement (3 parameters a row, far below PostgreSQL's 65 535). */
const ROWS_PER_STATEMENT = 500;

/**
 * Encoded size of a change, known to its writer and its reader without encoding it again (a
 * site catching up on a large federation commits one change of 100k+ objects; watchers must
 * know that it is too large for one message without re-encoding it per stream).
 */
const changeSizes = new WeakMap<topologypb.TopologyChange, number>();
/** Bytes a revision field adds to a logged body (tag + varint ≤ 10). */
const REVISION_FIELD_BYTES = 11;

/**
 * Each upsert's encoding, for a change this process wrote (so this replica's topology mirror
 * need not encode a 100k-object catch-up again); undefined for changes read from the log.
 */
const changeBodies = new WeakMap<topologypb.TopologyChange, readonly Buffer[]>();

export function encodedUpserts(c: topologypb.TopologyChange): readonly Buffer[] | undefined {
  return changeBodies.get(c);
}

/** Objects encoded between two turns of the event loop when a write is large. */
const ENCODE_STEP = 2_000;

export function encodedChangeBytes(c: topologypb.TopologyChange): number {
  let n = changeSizes.get(c);
  if (n === undefined) {
    n = topologypb.TopologyChange.encode(c).finish().length;
    changeSizes.set(c, n);
  }
  return n;
}

export interface ChangeLogOptions {
  /** Changes kept in the log for resuming watchers; older resumes get a snapshot. */
  retention: number;
}

/**
 * Writes a delta as one new revision (nothing when the delta is empty) and returns the revision.
 */
export async function writeTopology(
  tx: Tx,
  delta: TopologyWrite,
  origin: "intent" | "local",
  log: ChangeLogOptions,
): Promise<number | undefined> {
  return (await writeTopologyChange(tx, delta, origin, log))?.revision;
}

/**
 * writeTopology returning the change as logged, so the writer can hand it to this replica's
 * watchers once committed without reading it back.
 */
export async function writeTopologyChange(
  tx: Tx,
  delta: TopologyWrite,
  origin: "intent" | "local",
  log: ChangeLogOptions,
): Promise<topologypb.TopologyChange | undefined> {
  const prepared = await prepareTopologyWrite(delta);
  if (prepared === undefined) return undefined;
  // Deletes first (an object deleted and written again by one delta ends up written).
  for (let i = 0; i < delta.deletes.length; i += ROWS_PER_STATEMENT) {
    const refs = delta.deletes.slice(i, i + ROWS_PER_STATEMENT);
    await tx.query(
      `DELETE FROM topology_objects WHERE (kind, id) IN (${refs.map((_, k) => `($${2 * k + 1}::INT8, $${2 * k + 2}::TEXT)`).join(", ")})`,
      refs.flatMap((ref) => [ref.kind, ref.id]),
    );
  }
  // One statement bumps the revision, logs the change and writes the first rows: every round
  // trip of a write is paid again by every intent entry, and on a busy machine each one waits
  // for the database process to be scheduled.
  const sql = new SqlParams();
  const ctes = topologyWriteCtes(prepared, origin, sql, { firstRows: ROWS_PER_STATEMENT });
  const r = await tx.query(`WITH ${ctes.join(",\n")}\nSELECT revision FROM r`, sql.values);
  if (r.rowCount !== 1) throw new Error("topology_revision row is missing; were migrations applied?");
  const revision = Number(r.rows[0].revision);
  const { rows } = prepared;
  for (let i = ROWS_PER_STATEMENT; i < rows.length; i += ROWS_PER_STATEMENT) {
    const batch = rows.slice(i, i + ROWS_PER_STATEMENT);
    await tx.query(
      `INSERT INTO topology_objects (kind, id, body, revision, origin) VALUES ${batch
        .map((_, k) => `($${3 * k + 3}, $${3 * k + 4}, $${3 * k + 5}, $1, $2)`)
        .join(", ")}
       ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, revision = excluded.revision, origin = excluded.origin`,
      [revision, origin, ...batch.flat()],
    );
  }
  if (pruneDue(revision, log)) await tx.query(PRUNE_CHANGES, [revision - log.retention]);
  return loggedChange(prepared, revision);
}

/**
 * A delta made ready to write: each upsert encoded once (or taken from the caller), the rows to
 * write with the last version of an object winning (a statement may not upsert one row twice),
 * and the change-log body framed from the same encodings. A site catching up on a 100k-object
 * federation writes one change of that size, and encoding it twice in one go stalled the
 * controller for seconds; the event loop gets a turn every ENCODE_STEP objects.
 */
export interface PreparedTopologyWrite {
  delta: TopologyWrite;
  bodies: Buffer[];
  rows: [number, string, Buffer][];
  /** The logged body, at revision 0 (readers take the revision from the row). */
  body: Buffer;
}

/** Prepares `delta` for writing; undefined when it changes nothing. */
export async function prepareTopologyWrite(delta: TopologyWrite): Promise<PreparedTopologyWrite | undefined> {
  if (delta.upserts.length === 0 && delta.deletes.length === 0) return undefined;
  if (delta.encoded && delta.encoded.length !== delta.upserts.length)
    throw new Error(
      `topology write has ${delta.encoded.length} encodings for ${delta.upserts.length} upserts`,
    );
  const bodies: Buffer[] = [];
  const rows = new Map<string, [number, string, Buffer]>();
  for (const [i, obj] of delta.upserts.entries()) {
    const ref = topologyRefOf(obj);
    const body = delta.encoded?.[i] ?? encodeTopology(obj);
    bodies.push(body);
    rows.set(keyString(ref.kind, ref.id), [ref.kind, ref.id, body]);
    if (i % ENCODE_STEP === ENCODE_STEP - 1) await new Promise((r) => setImmediate(r));
  }
  return { delta, bodies, rows: [...rows.values()], body: frameChange(bodies, delta.deletes) };
}

/**
 * Whether a prepared write fits in the one statement of an entry (topologyWriteCtes with all rows
 * and its deletes): few enough rows, and not both deletes and upserts — CockroachDB refuses a
 * statement that modifies one table in two places (sql.multiple_modifications_of_table.enabled).
 */
export function fitsOneStatement(p: PreparedTopologyWrite): boolean {
  return (
    p.rows.length <= ROWS_PER_STATEMENT &&
    p.delta.deletes.length <= ROWS_PER_STATEMENT &&
    (p.rows.length === 0 || deletesNotWritten(p).length === 0)
  );
}

/** The delta's deletes of objects it does not also upsert (those end up written). */
function deletesNotWritten(p: PreparedTopologyWrite): topologypb.TopologyRef[] {
  if (p.delta.deletes.length === 0) return [];
  const written = new Set(p.rows.map(([kind, id]) => keyString(kind, id)));
  return p.delta.deletes.filter((d) => !written.has(keyString(d.kind, d.id)));
}

/** Bind parameters of a statement built in pieces: `ref(v)` adds one and returns its `$n`. */
export class SqlParams {
  readonly values: unknown[] = [];
  ref(v: unknown): string {
    this.values.push(v);
    return `$${this.values.length}`;
  }
}

/**
 * The common table expressions that write a prepared delta as the next revision: `r` bumps the
 * revision (and yields it), `c` logs the change, `o` upserts the first `firstRows` rows (all when
 * not given) and, when `deletes` is set, `td` deletes the delta's deletes (all of them; the caller
 * checks with fitsOneStatement that they fit, and that the delta upserts nothing else) — except
 * those the delta also upserts, which end up written, as deleting first and then upserting would
 * have it (a statement may not touch a row twice). With `gate`, a condition on
 * earlier expressions, nothing is written unless it holds. The statement selects from `r`.
 */
export function topologyWriteCtes(
  p: PreparedTopologyWrite,
  origin: "intent" | "local",
  sql: SqlParams,
  opts: { firstRows?: number; deletes?: boolean; gate?: string },
): string[] {
  const gate = opts.gate ? ` AND ${opts.gate}` : "";
  const parts: string[] = [];
  if (opts.deletes) {
    const deletes = deletesNotWritten(p);
    if (deletes.length > 0 && p.rows.length > 0)
      throw new Error("topology write: deletes and upserts in one statement (see fitsOneStatement)");
    if (deletes.length > 0)
      parts.push(
        `td AS (DELETE FROM topology_objects WHERE (kind, id) IN (${deletes
          .map((d) => `(${sql.ref(d.kind)}::INT8, ${sql.ref(d.id)}::TEXT)`)
          .join(", ")})${gate})`,
      );
  }
  parts.push(
    `r AS (UPDATE topology_revision SET revision = revision + 1 WHERE id = 1${gate} RETURNING revision)`,
    `c AS (INSERT INTO topology_changes (revision, body, committed_at) SELECT revision, ${sql.ref(p.body)}::BYTEA, now() FROM r)`,
  );
  const first = opts.firstRows === undefined ? p.rows : p.rows.slice(0, opts.firstRows);
  if (first.length > 0) {
    const originRef = sql.ref(origin);
    parts.push(
      `o AS (INSERT INTO topology_objects (kind, id, body, revision, origin)
           SELECT v.kind, v.id, v.body, r.revision, ${originRef}::TEXT FROM r, (VALUES ${first
             .map(
               ([kind, id, body]) =>
                 `(${sql.ref(kind)}::INT8, ${sql.ref(id)}::TEXT, ${sql.ref(body)}::BYTEA)`,
             )
             .join(", ")}) AS v (kind, id, body)
           ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, revision = excluded.revision, origin = excluded.origin)`,
    );
  }
  return parts;
}

/** Whether the change log is pruned after `revision` (in steps: once per thousand revisions). */
export function pruneDue(revision: number, log: ChangeLogOptions): boolean {
  return revision % 1000 === 0 && revision > log.retention;
}

/** Drops logged changes at or below $1. */
export const PRUNE_CHANGES = "DELETE FROM topology_changes WHERE revision <= $1";

/** The change as logged at `revision`, its size and encodings remembered for its readers here. */
export function loggedChange(p: PreparedTopologyWrite, revision: number): topologypb.TopologyChange {
  const change: topologypb.TopologyChange = { revision, upserts: p.delta.upserts, deletes: p.delta.deletes };
  changeSizes.set(change, p.body.length + REVISION_FIELD_BYTES);
  changeBodies.set(change, p.bodies);
  return change;
}

/**
 * A TopologyChange at revision 0 (the field left out) from its upserts' encodings — byte for
 * byte what TopologyChange.encode writes: field 2 per upsert, then field 3 per delete.
 */
export function frameChange(upserts: readonly Buffer[], deletes: readonly topologypb.TopologyRef[]): Buffer {
  const refs = deletes.map((d) => topologypb.TopologyRef.encode(d).finish());
  let size = 0;
  for (const b of upserts) size += fieldSize(b);
  for (const r of refs) size += fieldSize(r);
  // One buffer written in place (100k+ small pieces concatenated cost seconds under load).
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const b of upserts) at = writeField(out, at, 0x12, b); // TopologyChange.upserts, field 2
  for (const r of refs) at = writeField(out, at, 0x1a, r); // TopologyChange.deletes, field 3
  if (at !== size) throw new Error(`framed change is ${at} bytes, expected ${size}`);
  return out;
}

export async function currentRevision(tx: Tx): Promise<number> {
  const r = await tx.query("SELECT revision FROM topology_revision WHERE id = 1");
  return Number(r.rows[0]?.revision ?? 0);
}

/** Every topology object at one revision, read in one transaction. */
export async function readSnapshot(db: Database): Promise<topologypb.TopologySnapshot> {
  return db.tx(
    "topology-snapshot",
    async (tx) => {
      const revision = await currentRevision(tx);
      const rows = await tx.query("SELECT body FROM topology_objects ORDER BY kind, id");
      return { revision, objects: rows.rows.map((row) => decodeTopology(row.body as Buffer)) };
    },
    { readOnly: true },
  );
}

/**
 * Every topology object at one revision, still encoded as stored, in parts of at most
 * `maxPartBytes` (at least one object per part), so no single message nears gRPC's limits. The
 * watch service frames each part as an event without decoding (snapshot-encoding.ts).
 */
export async function readSnapshotBodies(
  db: Database,
  maxPartBytes: number,
): Promise<{ revision: number; parts: Buffer[][] }> {
  return db.tx(
    "topology-snapshot",
    async (tx) => {
      const revision = await currentRevision(tx);
      const rows = await tx.query("SELECT body FROM topology_objects ORDER BY kind, id");
      return {
        revision,
        parts: splitSnapshotParts(
          rows.rows.map((row) => row.body as Buffer),
          maxPartBytes,
        ),
      };
    },
    { readOnly: true },
  );
}

/** Encoded objects in parts of at most `maxPartBytes` (at least one object each, one part at least). */
export function splitSnapshotParts(bodies: Iterable<Buffer>, maxPartBytes: number): Buffer[][] {
  const parts: Buffer[][] = [];
  let part: Buffer[] = [];
  let bytes = 0;
  for (const body of bodies) {
    if (part.length > 0 && bytes + body.length > maxPartBytes) {
      parts.push(part);
      part = [];
      bytes = 0;
    }
    part.push(body);
    bytes += body.length;
  }
  parts.push(part);
  return parts;
}

export interface ChangesAfter {
  changes: topologypb.TopologyChange[];
  /** Oldest revision still in the log (0 when empty); a resume from before it needs a snapshot. */
  oldest: number;
  current: number;
}

/**
 * Changes after `after`, up to `limit`. `known` holds changes the caller already has (this replica's
 * own commits, with their encodings): their rows are not decoded, the caller's objects are returned.
 */
export async function readChangesAfter(
  db: Database,
  after: number,
  limit: number,
  known?: ReadonlyMap<number, topologypb.TopologyChange>,
): Promise<ChangesAfter> {
  // One statement (one snapshot, one round trip): the feed polls this several times a second on
  // every controller, and BEGIN, three reads and COMMIT were five round trips each time.
  const r = await db.statement(
    "topology-changes",
    `SELECT h.current, h.oldest, c.revision, c.body
     FROM (SELECT (SELECT revision FROM topology_revision WHERE id = 1) AS current,
                  (SELECT min(revision) FROM topology_changes) AS oldest) AS h
     LEFT JOIN (SELECT revision, body FROM topology_changes WHERE revision > $1 ORDER BY revision LIMIT $2) AS c
       ON true
     ORDER BY c.revision`,
    [after, limit],
  );
  const head = r.rows[0] as { current: string | null; oldest: string | null } | undefined;
  const changes: topologypb.TopologyChange[] = [];
  for (const row of r.rows) {
    if (row.revision === null) continue; // no change after `after`: the one row of h alone
    // The row's revision: a body is logged before its revision is known (writeTopology).
    const revision = Number(row.revision);
    const own = known?.get(revision);
    if (own) {
      changes.push(own);
      continue;
    }
    const change = { ...topologypb.TopologyChange.decode(row.body as Buffer), revision };
    changeSizes.set(change, (row.body as Buffer).length + REVISION_FIELD_BYTES);
    changes.push(change);
  }
  return { changes, oldest: Number(head?.oldest ?? 0), current: Number(head?.current ?? 0) };
}

/** Every topology object keyed "kind/id" (snapshot diffs). */
export async function readAllTopology(tx: Tx): Promise<Map<string, Buffer>> {
  const rows = await tx.query("SELECT kind, id, body FROM topology_objects");
  const out = new Map<string, Buffer>();
  for (const row of rows.rows) out.set(keyString(Number(row.kind), row.id as string), row.body as Buffer);
  return out;
}
