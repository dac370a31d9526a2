import assert from "node:assert/strict";
import { test } from "node:test";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { silentLogger } from "@isthmus/schema";
import pgDriver from "pg";
import { Database, serializableByDefault } from "./database.js";
import { loadMigrations, migrate } from "./migrations.js";
import { postgresForTests } from "./postgres-for-tests.js";
import { TransactionRetriesExhausted } from "./retry.js";

const pg = postgresForTests("database tests");

async function freshDb(opts: Partial<ConstructorParameters<typeof Database>[0]> = {}): Promise<Database> {
  const url = await pg.createDatabase();
  return new Database({ url, log: silentLogger(), ...opts });
}

test("migrations apply from empty, then re-running applies nothing", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const db = await freshDb();
  t.after(() => db.close());
  const all = loadMigrations().map((m) => m.version);
  assert.ok(all.length >= 1);
  assert.deepEqual(await migrate(db), all);
  assert.deepEqual(await migrate(db), []);
  const tables = await db.pool.query(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
  );
  const names = tables.rows.map((r) => r.table_name as string);
  for (const t of [
    "intent_objects",
    "topology_changes",
    "controller_lease",
    "ports",
    "tunnel_keys",
    "hosts",
  ]) {
    assert.ok(names.includes(t), `table ${t} exists`);
  }
  const rec = await db.pool.query("SELECT count(*)::INT8 AS n FROM schema_migrations");
  assert.equal(Number(rec.rows[0].n), all.length);
});

test("two controllers migrating at once both succeed and record each migration once", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const url = await pg.createDatabase();
  const a = new Database({ url, log: silentLogger() });
  const b = new Database({ url, log: silentLogger() });
  t.after(async () => {
    await a.close();
    await b.close();
  });
  const [ra, rb] = await Promise.all([migrate(a), migrate(b)]);
  const all = loadMigrations().map((m) => m.version);
  assert.deepEqual([...ra, ...rb].sort(), all, "each migration applied by exactly one of them");
  const rec = await a.pool.query("SELECT version FROM schema_migrations ORDER BY version");
  assert.deepEqual(
    rec.rows.map((r) => Number(r.version)),
    all,
  );
});

test("serialization conflicts are retried until every increment lands", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  let retries = 0;
  const db = await freshDb({ onRetry: () => retries++, retry: { maxAttempts: 50 } });
  t.after(() => db.close());
  await db.tx("setup", async (tx) => {
    await tx.query("CREATE TABLE counter (id INT8 PRIMARY KEY, n INT8 NOT NULL)");
    await tx.query("INSERT INTO counter VALUES (1, 0)");
  });
  const workers = 8;
  const each = 5;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      for (let i = 0; i < each; i++) {
        await db.tx("increment", async (tx) => {
          const r = await tx.query("SELECT n FROM counter WHERE id = 1");
          // Widen the read-write window so concurrent transactions really conflict.
          await new Promise((res) => setTimeout(res, 2));
          await tx.query("UPDATE counter SET n = $1 WHERE id = 1", [Number(r.rows[0].n) + 1]);
        });
      }
    }),
  );
  const r = await db.pool.query("SELECT n FROM counter WHERE id = 1");
  assert.equal(Number(r.rows[0].n), workers * each, "no lost update");
  assert.ok(retries > 0, "the conflicts really happened and were retried");
  assert.equal(db.retryCount, retries);
});

test("a finished transaction's body is not kept alive by its connection", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  v8.setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const db = await freshDb({ maxConnections: 1 });
  t.after(() => db.close());
  // The first transaction on a connection once added the connection's error listener from inside
  // tx(), so the listener's scope kept that transaction's body — and a snapshot's 100k objects
  // the body held — alive as long as the connection.
  const refs: WeakRef<object>[] = [];
  for (let i = 0; i < 2; i++) {
    const held = { rows: Array.from({ length: 1000 }, (_, k) => ({ k })) };
    refs.push(new WeakRef(held));
    await db.tx("holds", async (tx) => {
      await tx.query("SELECT $1::INT8 AS n", [held.rows.length]);
    });
  }
  await new Promise((r) => setImmediate(r));
  gc();
  assert.deepEqual(
    refs.map((r) => r.deref() === undefined),
    [true, true],
    "nothing a finished transaction's body held is reachable",
  );
  // The connection still has its listener: dying while checked out rejects the transaction (it
  // does not crash the process), and the next one gets a new connection.
  await assert.rejects(
    db.tx("dies", async (tx) => {
      await tx.query("SELECT pg_terminate_backend(pg_backend_pid())");
    }),
    /terminat/,
  );
  const r = await db.tx("after", (tx) => tx.query("SELECT 1 AS one"));
  assert.equal(r.rows[0].one, 1);
});

test("a transaction that keeps conflicting fails with a clear bounded error", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const db = await freshDb({ retry: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 2 } });
  t.after(() => db.close());
  let runs = 0;
  await assert.rejects(
    db.tx("always-conflicts", async () => {
      runs++;
      throw Object.assign(new Error("could not serialize access"), { code: "40001" });
    }),
    (err: unknown) =>
      err instanceof TransactionRetriesExhausted &&
      /always-conflicts" failed after 3 attempts/.test(err.message) &&
      /40001/.test(err.message),
  );
  assert.equal(runs, 3);
});

test("a non-retryable error is not retried", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const db = await freshDb();
  t.after(() => db.close());
  let runs = 0;
  await assert.rejects(
    db.tx("bad-sql", async (tx) => {
      runs++;
      await tx.query("SELECT * FROM no_such_table");
    }),
    /no_such_table/,
  );
  assert.equal(runs, 1);
});

test("one-statement transactions run SERIALIZABLE even where the database defaults to another level", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const url = await pg.createDatabase();
  const name = new URL(url).pathname.slice(1);
  const admin = new Database({ url, log: silentLogger() });
  t.after(() => admin.close());
  await admin.pool.query(`ALTER DATABASE "${name}" SET default_transaction_isolation = 'read committed'`);
  // A plain client sees the database's setting: the check below can fail.
  const plain = new pgDriver.Client({ connectionString: url });
  await plain.connect();
  const seen = await plain.query("SELECT current_setting('transaction_isolation') AS level");
  await plain.end();
  assert.equal(seen.rows[0].level, "read committed");
  for (const u of [
    url,
    `${url}${url.includes("?") ? "&" : "?"}options=${encodeURIComponent("-c statement_timeout=4321")}`,
  ]) {
    const db = new Database({ url: u, log: silentLogger() });
    try {
      const r = await db.statement(
        "isolation",
        "SELECT current_setting('transaction_isolation') AS level, current_setting('statement_timeout') AS timeout",
      );
      assert.equal(r.rows[0].level, "serializable", u);
      if (u !== url) assert.equal(r.rows[0].timeout, "4321ms", "the URL's own options are kept");
    } finally {
      await db.close();
    }
  }
});

test("serializableByDefault adds the option, or appends it to the URL's own", () => {
  assert.deepEqual(serializableByDefault("postgres://u@h/db"), {
    connectionString: "postgres://u@h/db",
    options: "-c default_transaction_isolation=serializable",
  });
  const withOwn = serializableByDefault("postgres://u@h/db?options=-c%20search_path%3Dx&sslmode=disable");
  assert.equal(withOwn.options, undefined);
  assert.equal(
    decodeURIComponent(new URL(withOwn.connectionString).searchParams.get("options") ?? ""),
    "-c search_path=x -c default_transaction_isolation=serializable",
  );
  assert.equal(new URL(withOwn.connectionString).searchParams.get("sslmode"), "disable");
});

test("a one-statement write that conflicts is re-run until every increment lands", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  let retries = 0;
  const db = await freshDb({ onRetry: () => retries++, retry: { maxAttempts: 50 } });
  t.after(() => db.close());
  await db.statement("setup", "CREATE TABLE counter (id INT8 PRIMARY KEY, n INT8 NOT NULL)");
  await db.statement("setup", "INSERT INTO counter VALUES (1, 0), (2, 0)");
  // Each statement reads one row and writes the other: under SERIALIZABLE, concurrent ones form
  // read/write cycles and some are aborted with 40001 (re-run), never applied twice or lost.
  const workers = 6;
  const each = 8;
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let i = 0; i < each; i++) {
        const [from, to] = (w + i) % 2 === 0 ? [1, 2] : [2, 1];
        await db.statement(
          "cross",
          "UPDATE counter SET n = n + 1 + 0 * (SELECT n FROM counter WHERE id = $1) WHERE id = $2",
          [from, to],
        );
      }
    }),
  );
  const r = await db.pool.query("SELECT sum(n)::INT8 AS n FROM counter");
  assert.equal(Number(r.rows[0].n), workers * each, "every statement applied exactly once");
  assert.equal(db.retryCount, retries);
});
