// Applies the ordered SQL migrations in schema/sql (NNNN_name.sql) at start-up. Each runs in its
// own SERIALIZABLE transaction together with the row recording it, so two controllers starting at
// once both end up with every migration applied exactly once (the loser of a race re-runs, sees
// the row and skips). Migration SQL itself is idempotent (IF NOT EXISTS) as a second guard.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Database } from "./database.js";

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

const MIGRATION_FILE = /^(\d{4})_([a-z0-9_]+)\.sql$/;

/** schema/sql of the installed @isthmus/schema package. */
export function defaultMigrationsDir(): string {
  const schemaIndex = fileURLToPath(import.meta.resolve("@isthmus/schema"));
  return join(dirname(schemaIndex), "..", "sql");
}

export function loadMigrations(dir = defaultMigrationsDir()): Migration[] {
  const out: Migration[] = [];
  for (const file of readdirSync(dir).sort()) {
    if (!file.endsWith(".sql")) continue;
    const m = MIGRATION_FILE.exec(file);
    if (!m) throw new Error(`migration file ${join(dir, file)} does not match NNNN_name.sql`);
    const version = Number(m[1]);
    if (out.some((x) => x.version === version)) {
      throw new Error(`two migrations share version ${version} in ${dir}`);
    }
    out.push({ version, name: m[2]!, sql: readFileSync(join(dir, file), "utf8") });
  }
  return out;
}

// Concurrent CREATE TABLE IF NOT EXISTS can still collide in PostgreSQL's catalog (23505 on
// pg_type, 42P07 duplicate table) — re-running sees the table and does nothing.
const MIGRATION_RETRY_CODES = new Set(["23505", "42P07", "42710"]);

/** Applies every migration not yet recorded; returns the versions this call applied. */
export async function migrate(db: Database, migrations = loadMigrations()): Promise<number[]> {
  await db.tx(
    "migrations-table",
    (tx) =>
      tx.query(
        `CREATE TABLE IF NOT EXISTS schema_migrations (
           version INT8 PRIMARY KEY,
           name TEXT NOT NULL,
           applied_at TIMESTAMPTZ NOT NULL
         )`,
      ),
    { retryCodes: MIGRATION_RETRY_CODES },
  );
  const applied: number[] = [];
  for (const m of migrations) {
    const did = await db.tx(
      `migration ${m.version}_${m.name}`,
      async (tx) => {
        const seen = await tx.query("SELECT 1 FROM schema_migrations WHERE version = $1", [m.version]);
        if (seen.rowCount !== 0) return false;
        await tx.query(m.sql);
        await tx.query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, now())", [
          m.version,
          m.name,
        ]);
        return true;
      },
      { retryCodes: MIGRATION_RETRY_CODES },
    );
    if (did) applied.push(m.version);
  }
  return applied;
}
