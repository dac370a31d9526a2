// Applies the coordinator's intent stream to the site database: each IntentChange in exactly one
// transaction that also records its log index (so a crash anywhere replays nothing twice and
// skips nothing), snapshots by replacing the whole intent copy and diffing the topology.
import type { intentpb, topologypb } from "@isthmus/schema";
import type { Tx } from "./db/database.js";
import { loadLocalObjects } from "./local-store.js";
import {
  decodeIntent,
  encodeIntent,
  encodeTopology,
  intentKeyOf,
  keyString,
  topologyRefOf,
} from "./objects.js";
import { readAllTopology, type TopologyWrite, writeTopology } from "./topology-store.js";
import { IntentIndex } from "./translate/index.js";
import type { WriteContext } from "./write-context.js";

export type ApplyOutcome = "applied" | "skipped";

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

  /** Loads the applied index, intent copy and local objects from the database into memory. */
  async load(): Promise<void> {
    const { index, db } = this.ctx;
    await this.ctx.queue.run(async () => {
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
          };
        },
        { readOnly: true },
      );
      index.loadIntentSnapshot({ index: state.applied, objects: state.objects });
      for (const h of state.local.hosts) index.putHost(h);
      for (const p of state.local.ports) index.putLocalPort(p);
      this.applied = state.applied;
    });
  }

  private async recordIndex(tx: Tx, idx: number): Promise<void> {
    await tx.query("UPDATE intent_state SET applied_index = $1, applied_at = now() WHERE id = 1", [idx]);
  }

  /** The index in the database; the in-memory one is only a cache of it. */
  private async dbIndex(tx: Tx): Promise<number> {
    const r = await tx.query("SELECT applied_index FROM intent_state WHERE id = 1");
    return Number(r.rows[0]?.applied_index ?? 0);
  }

  async applyChange(change: intentpb.IntentChange): Promise<ApplyOutcome> {
    const { ctx } = this;
    return ctx.queue.run(async (): Promise<ApplyOutcome> => {
      if (change.index <= this.applied) return "skipped";
      const prior = ctx.index.applyIntentChange(change);
      let committed: number | undefined;
      try {
        const delta = ctx.translator.translateChange(ctx.index, change, prior);
        if (delta.problems.length > 0) ctx.onProblems?.(delta.problems);
        const result = await ctx.db.tx(`apply ${change.index}`, async (tx) => {
          await ctx.fence.check(tx);
          if ((await this.dbIndex(tx)) >= change.index) return { skipped: true, revision: undefined };
          for (const ref of change.deletes) {
            await tx.query("DELETE FROM intent_objects WHERE kind = $1 AND id = $2", [ref.kind, ref.id]);
          }
          for (const obj of change.upserts) {
            const key = intentKeyOf(obj);
            await tx.query(
              `INSERT INTO intent_objects (kind, id, body, revision) VALUES ($1, $2, $3, $4)
               ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, revision = excluded.revision`,
              [key.kind, key.id, encodeIntent(obj), change.index],
            );
          }
          const revision = await writeTopology(tx, delta, "intent", ctx.changeLog);
          await this.recordIndex(tx, change.index);
          await ctx.beforeCommit?.(tx, `apply ${change.index}`);
          return { skipped: false, revision };
        });
        if (result.skipped) {
          // Another writer got there first (only possible across a lease hand-over); reload.
          ctx.index.revertIntentChange(change, prior);
          await this.reloadUnqueued();
          return "skipped";
        }
        committed = result.revision;
      } catch (err) {
        ctx.index.revertIntentChange(change, prior);
        throw err;
      }
      this.applied = change.index;
      this.appliedAtMs = Date.now();
      if (committed !== undefined) ctx.onCommitted(committed);
      return "applied";
    });
  }

  /** Nothing changed for this site up to `idx`: only the applied index moves. */
  async applyProgress(idx: number): Promise<ApplyOutcome> {
    const { ctx } = this;
    return ctx.queue.run(async (): Promise<ApplyOutcome> => {
      if (idx <= this.applied) return "skipped";
      await ctx.db.tx(`progress ${idx}`, async (tx) => {
        await ctx.fence.check(tx);
        if ((await this.dbIndex(tx)) < idx) await this.recordIndex(tx, idx);
      });
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
      const next = new IntentIndex(ctx.site, { maxObjects: ctx.index.maxObjects });
      next.loadIntentSnapshot(snapshot);
      for (const h of ctx.index.list("host")) next.putHost(h);
      for (const p of ctx.index.list("localPort")) next.putLocalPort(p);
      const full = ctx.translator.translateAll(next);
      if (full.problems.length > 0) ctx.onProblems?.(full.problems);
      const desired = full.objects;
      let committed: number | undefined;
      await ctx.db.tx(`snapshot ${snapshot.index}`, async (tx) => {
        await ctx.fence.check(tx);
        await tx.query("DELETE FROM intent_objects");
        for (const obj of snapshot.objects) {
          const key = intentKeyOf(obj);
          await tx.query("INSERT INTO intent_objects (kind, id, body, revision) VALUES ($1, $2, $3, $4)", [
            key.kind,
            key.id,
            encodeIntent(obj),
            revisionOf(obj) || snapshot.index,
          ]);
        }
        const existing = await readAllTopology(tx);
        committed = await writeTopology(tx, diffTopology(existing, desired), "intent", ctx.changeLog);
        await this.recordIndex(tx, snapshot.index);
        await ctx.beforeCommit?.(tx, `snapshot ${snapshot.index}`);
      });
      ctx.index.loadIntentSnapshot(snapshot);
      this.applied = snapshot.index;
      this.appliedAtMs = Date.now();
      if (committed !== undefined) ctx.onCommitted(committed);
      return "applied";
    });
  }

  private async reloadUnqueued(): Promise<void> {
    const state = await this.ctx.db.tx(
      "reload-intent",
      async (tx) => ({
        applied: await this.dbIndex(tx),
        objects: (await tx.query("SELECT body FROM intent_objects")).rows.map((r) =>
          decodeIntent(r.body as Buffer),
        ),
      }),
      { readOnly: true },
    );
    this.ctx.index.loadIntentSnapshot({ index: state.applied, objects: state.objects });
    this.applied = state.applied;
  }
}

function revisionOf(obj: intentpb.IntentObject): number {
  for (const v of Object.values(obj)) {
    const meta = (v as { meta?: intentpb.ObjectMeta } | undefined)?.meta;
    if (meta) return meta.revision;
  }
  return 0;
}

/** The delta that turns `existing` (kind/id → encoded object) into exactly `desired`. */
export function diffTopology(
  existing: Map<string, Buffer>,
  desired: topologypb.TopologyObject[],
): TopologyWrite {
  const out: TopologyWrite = { upserts: [], deletes: [] };
  const keep = new Set<string>();
  for (const obj of desired) {
    const ref = topologyRefOf(obj);
    const k = keyString(ref.kind, ref.id);
    keep.add(k);
    const old = existing.get(k);
    if (!old?.equals(encodeTopology(obj))) out.upserts.push(obj);
  }
  for (const k of existing.keys()) {
    if (keep.has(k)) continue;
    const slash = k.indexOf("/");
    out.deletes.push({ kind: Number(k.slice(0, slash)), id: k.slice(slash + 1) });
  }
  return out;
}
