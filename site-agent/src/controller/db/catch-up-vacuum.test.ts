import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger } from "@isthmus/schema";
import { CATCH_UP_TABLES, vacuumAfterCatchUp } from "./catch-up-vacuum.js";
import { Database } from "./database.js";
import { migrate } from "./migrations.js";
import { postgresForTests } from "./postgres-for-tests.js";

const pg = postgresForTests("catch-up vacuum tests");

function recordingLog() {
  const lines: { level: string; msg: string }[] = [];
  const log = createLogger({
    name: "t",
    level: "debug",
    destination: { write: (l: string) => lines.push(JSON.parse(l) as { level: string; msg: string }) },
  });
  return { log, lines };
}

test("after a catch-up the tables it rewrote are vacuumed and analysed", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const db = new Database({ url: await pg.createDatabase(), log: recordingLog().log });
  t.after(() => db.close());
  await migrate(db);
  const { log, lines } = recordingLog();
  const r = await vacuumAfterCatchUp(db, log, 123);
  assert.equal(r.vacuumed, true);
  assert.ok(lines.some((l) => /vacuumed and analysed/.test(l.msg)));
  // The statistics views lag a little behind the session that ran it.
  let seen: Record<string, [number, number]> = {};
  for (const end = Date.now() + 10_000; Date.now() < end; ) {
    const s = await db.pool.query(
      "SELECT relname, vacuum_count, analyze_count FROM pg_stat_user_tables WHERE relname = ANY($1)",
      [CATCH_UP_TABLES],
    );
    seen = Object.fromEntries(
      s.rows.map((row) => [row.relname as string, [Number(row.vacuum_count), Number(row.analyze_count)]]),
    );
    if (CATCH_UP_TABLES.every((tb) => (seen[tb]?.[0] ?? 0) >= 1 && (seen[tb]?.[1] ?? 0) >= 1)) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  for (const tb of CATCH_UP_TABLES)
    assert.ok((seen[tb]?.[0] ?? 0) >= 1 && (seen[tb]?.[1] ?? 0) >= 1, `${tb}: ${JSON.stringify(seen[tb])}`);
});

test("on CockroachDB nothing is run; a failure is logged, not thrown", async () => {
  const asked: string[] = [];
  const cockroach = {
    pool: {
      query: async (text: string) => {
        asked.push(text);
        return { rows: [{ v: "CockroachDB CCL v24.1.0 (x86_64-pc-linux-gnu)" }] };
      },
    },
  };
  const r = await vacuumAfterCatchUp(cockroach as never, recordingLog().log, 10);
  assert.equal(r.vacuumed, false);
  assert.deepEqual(asked, ["SELECT version() AS v"], "no VACUUM sent");
  const failing = {
    pool: {
      query: async () => {
        throw new Error("connection refused");
      },
    },
  };
  const { log, lines } = recordingLog();
  assert.equal((await vacuumAfterCatchUp(failing as never, log, 10)).vacuumed, false);
  assert.ok(lines.some((l) => l.level === "warn" && /vacuum after a catch-up failed/.test(l.msg)));
});
