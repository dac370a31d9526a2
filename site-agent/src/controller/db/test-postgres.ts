// Throwaway PostgreSQL servers for tests: Debian's server binaries (or ISTHMUS_TEST_PG_BIN), a
// temp directory, SERIALIZABLE by default so the retry path runs for real, one database per test.
// Outside CI a test may skip when no server binary exists; in CI that is a failure.
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger } from "@isthmus/schema";
import pg from "pg";
import { type RunningPostgres, startPostgresServer } from "./postgres-server.js";

export function findPostgresBinDir(): string | undefined {
  const fromEnv = process.env.ISTHMUS_TEST_PG_BIN;
  if (fromEnv) return existsSync(join(fromEnv, "postgres")) ? fromEnv : undefined;
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, "bin", "postgres")))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length > 0 ? join(root, versions[0]!, "bin") : undefined;
}

export interface TestPostgres {
  server: RunningPostgres;
  /** A fresh, empty database on the server. */
  createDatabase(): Promise<string>;
  stop(): Promise<void>;
}

let counter = 0;

/**
 * Starts a server, or returns a reason to skip (never in CI: there it throws instead).
 */
export async function startTestPostgres(): Promise<TestPostgres | { skip: string }> {
  const binDir = findPostgresBinDir();
  if (!binDir) {
    const why = "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin or ISTHMUS_TEST_PG_BIN)";
    if (process.env.CI) throw new Error(`${why}; CI must install Debian's postgresql`);
    return { skip: why };
  }
  const dir = mkdtempSync(join(tmpdir(), "isthmus-pg-"));
  const server = await startPostgresServer({
    binDir,
    dir,
    unsafeNoSync: true,
    settings: { default_transaction_isolation: "serializable", max_connections: "60" },
    log: silentLogger(),
  });
  return {
    server,
    async createDatabase() {
      const name = `t${process.pid}_${++counter}`;
      const c = new pg.Client({ connectionString: server.url });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${name}`);
      } finally {
        await c.end();
      }
      return server.url.replace(/\/postgres$/, `/${name}`);
    },
    async stop() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
