// After a large catch-up — a site restoring a snapshot of a large federation, which rewrites its
// intent and topology tables in one transaction — PostgreSQL's autovacuum comes a minute or two
// later and spends seconds of CPU vacuuming and analysing the same tables, at whatever moment it
// picks: in the propagation benchmark, in all four site databases at once, in the middle of the
// measured changes (docs/site-controller.md). The controller does it itself right after the
// catch-up instead, when agents are being resynchronised anyway, and the planner has fresh
// statistics from the start. PostgreSQL only: CockroachDB has no VACUUM and keeps its statistics
// itself.
import type { Logger } from "@isthmus/schema";
import type { Database } from "./database.js";

/** The tables a snapshot rewrites (the rest are a site's own small state). */
export const CATCH_UP_TABLES = ["intent_objects", "topology_objects", "topology_changes"] as const;

export interface CatchUpVacuumResult {
  /** False on CockroachDB (nothing to do). */
  vacuumed: boolean;
  ms: number;
}

/** VACUUM (ANALYZE) of each table a snapshot rewrote; errors are logged, not thrown. */
export async function vacuumAfterCatchUp(
  db: Pick<Database, "pool">,
  log: Logger,
  objects: number,
): Promise<CatchUpVacuumResult> {
  const started = performance.now();
  try {
    const v = await db.pool.query("SELECT version() AS v");
    if (/cockroach/i.test(String(v.rows[0]?.v))) {
      log.debug({ objects }, "no vacuum after a catch-up on CockroachDB");
      return { vacuumed: false, ms: 0 };
    }
    // One statement per table: VACUUM runs outside a transaction, and a table at a time holds
    // only that table's (non-blocking) lock.
    for (const table of CATCH_UP_TABLES) await db.pool.query(`VACUUM (ANALYZE) ${table}`);
    const ms = Math.round(performance.now() - started);
    log.info({ objects, tables: CATCH_UP_TABLES, ms }, "vacuumed and analysed the tables a catch-up rewrote");
    return { vacuumed: true, ms };
  } catch (err) {
    log.warn(
      { err: (err as Error).message, objects },
      "vacuum after a catch-up failed; autovacuum will do it later",
    );
    return { vacuumed: false, ms: Math.round(performance.now() - started) };
  }
}
