import assert from "node:assert/strict";
import { test } from "node:test";
import { type intentpb, topologypb } from "@isthmus/schema";
import pgDriver from "pg";
import { postgresForTests } from "./db/postgres-for-tests.js";
import { FencedOut } from "./fence.js";
import { controllerFixture, dumpState, vmPortInput } from "./test-support/controller-fixture.js";
import { network, networkRef } from "./test-support/trivial-translator.js";
import { writeTopologyChange } from "./topology-store.js";
import { derivedId, portInboundChainId, portProfileChainId, securityGroupSetKey } from "./translate/index.js";
import * as b from "./translate/intent-builders.js";
import { TRANSLATION_VERSION } from "./translator.js";

const pg = postgresForTests();

/** A stream of entries with gaps in the index (entries for other sites produce no change here). */
const STREAM: intentpb.IntentChange[] = [
  { index: 3, upserts: [network("n1", "blue", 0x100001)], deletes: [] },
  { index: 4, upserts: [network("n2", "red", 0x100002)], deletes: [] },
  { index: 7, upserts: [network("n1", "blue", 0x100009)], deletes: [] },
  { index: 8, upserts: [network("n3", "green", 0x100003)], deletes: [networkRef("n2")] },
  { index: 11, upserts: [], deletes: [networkRef("n3")] },
];

async function cleanApply(): Promise<unknown> {
  const f = await controllerFixture(await pg.createDatabase());
  try {
    for (const c of STREAM) assert.equal(await f.applier.applyChange(c), "applied");
    return await dumpState(f.db);
  } finally {
    await f.close();
  }
}

test("each change is applied in one transaction with its index; duplicates are skipped", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const f = await controllerFixture(await pg.createDatabase());
  t.after(() => f.close());
  for (const c of STREAM.slice(0, 2)) assert.equal(await f.applier.applyChange(c), "applied");
  assert.equal(await f.applier.applyChange(STREAM[0]!), "skipped");
  assert.equal(f.applier.appliedIndex, 4);
  const rows = await f.db.pool.query("SELECT applied_index FROM intent_state");
  assert.equal(Number(rows.rows[0].applied_index), 4);
  const bridges = await f.db.pool.query("SELECT id FROM topology_objects ORDER BY id");
  assert.deepEqual(
    bridges.rows.map((r) => r.id),
    ["n1", "n2"],
  );
  assert.deepEqual(f.committed, [1, 2], "one topology revision per applied change");
  assert.equal(f.ctx.index.get("network", "n2")?.vni, 0x100002);
});

test("the stored copy of a change upserting one object twice and deleting it too holds its last version; large changes take several statements", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const f = await controllerFixture(await pg.createDatabase());
  t.after(() => f.close());
  const many = Array.from({ length: 1_203 }, (_, i) => network(`m${i}`, `net-${i}`, 0x200000 + i));
  assert.equal(
    await f.applier.applyChange({
      index: 5,
      upserts: [network("n1", "blue", 0x100001), ...many, network("n1", "blue", 0x100007)],
      deletes: [networkRef("n1"), networkRef("absent")],
    }),
    "applied",
  );
  const body = await f.db.pool.query("SELECT count(*) AS n, max(revision) AS r FROM intent_objects");
  assert.equal(Number(body.rows[0].n), 1_204);
  assert.equal(Number(body.rows[0].r), 5);
  // The controller's own copy agrees with the stored one (deletes first, then upserts), and so
  // does the topology derived from it.
  assert.equal(f.ctx.index.get("network", "n1")?.vni, 0x100007);
  const bridge = await f.db.pool.query("SELECT count(*) AS n FROM topology_objects WHERE id = 'n1'");
  assert.equal(Number(bridge.rows[0].n), 1);
  assert.equal(
    await f.applier.applyChange({ index: 6, upserts: [], deletes: many.map((_, i) => networkRef(`m${i}`)) }),
    "applied",
  );
  const left = await f.db.pool.query("SELECT id FROM intent_objects");
  assert.deepEqual(
    left.rows.map((r) => r.id),
    ["n1"],
  );
  // Reloaded from the database, the copy is the same.
  await f.applier.load();
  assert.equal(f.ctx.index.get("network", "n1")?.vni, 0x100007);
  assert.equal(f.applier.appliedIndex, 6);
});

test("a crash mid-transaction or between entries, then replay from the start, equals a clean apply", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const clean = await cleanApply();
  for (const [i, victim] of STREAM.entries()) {
    const url = await pg.createDatabase();
    // First life: dies inside the transaction of entry `victim` (its connection is killed before
    // COMMIT, as when the process or machine dies).
    const first = await controllerFixture(url, {
      beforeCommit: async (tx, label) => {
        if (label === `apply ${victim.index}`)
          await tx.query("SELECT pg_terminate_backend(pg_backend_pid())");
      },
    });
    for (const c of STREAM) {
      try {
        await first.applier.applyChange(c);
      } catch {
        break; // the process is dead from here on
      }
    }
    assert.equal(first.applier.appliedIndex, i === 0 ? 0 : STREAM[i - 1]!.index);
    await first.close();
    // Second life: loads its state from the database; the coordinator replays the whole stream.
    const second = await controllerFixture(url);
    assert.equal(second.applier.appliedIndex, i === 0 ? 0 : STREAM[i - 1]!.index, "applied index survived");
    const outcomes = [];
    for (const c of STREAM) outcomes.push(await second.applier.applyChange(c));
    assert.deepEqual(
      outcomes,
      STREAM.map((_, j) => (j < i ? "skipped" : "applied")),
      "nothing replayed twice, nothing skipped",
    );
    assert.deepEqual(await dumpState(second.db), clean, `state after a crash in entry ${victim.index}`);
    await second.close();
  }
});

test("an entry's one statement killed while it runs writes nothing; replayed, the state equals a clean apply", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const clean = await cleanApply();
  const url = await pg.createDatabase();
  const first = await controllerFixture(url);
  assert.equal(await first.applier.applyChange(STREAM[0]!), "applied");
  // Another session holds the revision row, so the entry's statement — which moves the index and
  // writes its intent rows before it bumps the revision — waits inside itself, and dies there.
  const other = new pgDriver.Client({ connectionString: url });
  await other.connect();
  t.after(() => other.end().catch(() => undefined));
  await other.query("BEGIN");
  await other.query("SELECT revision FROM topology_revision WHERE id = 1 FOR UPDATE");
  const applying = first.applier.applyChange(STREAM[1]!);
  const outcome = applying.then(
    () => "applied",
    (err: Error) => err.message,
  );
  let pid: number | undefined;
  for (let i = 0; i < 200 && pid === undefined; i++) {
    const r = await other.query(
      "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'WITH l AS%'",
    );
    pid = r.rows[0]?.pid as number | undefined;
    if (pid === undefined) await new Promise((r) => setTimeout(r, 25));
  }
  assert.ok(pid !== undefined, "the entry's statement waits on the revision row");
  await other.query("SELECT pg_terminate_backend($1)", [pid]);
  assert.match(await outcome, /terminat/);
  await other.query("ROLLBACK");
  assert.equal(first.applier.appliedIndex, 3);
  assert.equal(first.ctx.index.get("network", "n2"), undefined, "memory reverted");
  const stored = await first.db.pool.query(
    "SELECT (SELECT applied_index FROM intent_state) AS applied, (SELECT count(*) FROM intent_objects) AS intents, (SELECT revision FROM topology_revision) AS revision",
  );
  assert.deepEqual(
    {
      applied: Number(stored.rows[0].applied),
      intents: Number(stored.rows[0].intents),
      revision: Number(stored.rows[0].revision),
    },
    { applied: 3, intents: 1, revision: 1 },
    "nothing of the killed statement is stored",
  );
  await first.close();
  const second = await controllerFixture(url);
  t.after(() => second.close());
  const outcomes = [];
  for (const c of STREAM) outcomes.push(await second.applier.applyChange(c));
  assert.deepEqual(outcomes, ["skipped", "applied", "applied", "applied", "applied"]);
  assert.deepEqual(await dumpState(second.db), clean);
});

/** Counts the statements and transactions `db` runs. */
function countRoundTrips(db: { statement: (...a: never[]) => unknown; tx: (...a: never[]) => unknown }) {
  const n = { statements: 0, txs: 0 };
  const statement = db.statement.bind(db);
  const tx = db.tx.bind(db);
  db.statement = ((...a: never[]) => {
    n.statements++;
    return statement(...a);
  }) as typeof db.statement;
  db.tx = ((...a: never[]) => {
    n.txs++;
    return tx(...a);
  }) as typeof db.tx;
  return n;
}

test("a small change is one statement: an object upserted twice holds its last version, deletes go", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const f = await controllerFixture(await pg.createDatabase());
  t.after(() => f.close());
  assert.equal(await f.applier.applyChange(STREAM[0]!), "applied");
  const trips = countRoundTrips(f.db);
  assert.equal(
    await f.applier.applyChange({
      index: 5,
      upserts: [
        network("n1", "blue", 0x100005),
        network("n2", "red", 0x100002),
        network("n1", "blue", 0x100006),
      ],
      deletes: [],
    }),
    "applied",
  );
  assert.deepEqual(trips, { statements: 1, txs: 0 });
  const intent = await f.db.pool.query("SELECT id, revision FROM intent_objects ORDER BY id");
  assert.deepEqual(
    intent.rows.map((r) => [r.id, Number(r.revision)]),
    [
      ["n1", 5],
      ["n2", 5],
    ],
  );
  const topo = await f.db.pool.query("SELECT id, revision FROM topology_objects ORDER BY id");
  assert.deepEqual(
    topo.rows.map((r) => [r.id, Number(r.revision)]),
    [
      ["n1", 2],
      ["n2", 2],
    ],
  );
  assert.deepEqual(f.committed, [1, 2]);
  assert.equal(f.ctx.index.get("network", "n1")?.vni, 0x100006);
  // Deletes and upserts of one table cannot share a statement on CockroachDB: a change with
  // both takes a transaction; one that only deletes is one statement again.
  assert.equal(
    await f.applier.applyChange({
      index: 6,
      upserts: [network("n3", "green", 0x100003)],
      deletes: [networkRef("n2"), networkRef("absent")],
    }),
    "applied",
  );
  assert.deepEqual(trips, { statements: 1, txs: 1 });
  const after = await f.db.pool.query("SELECT id FROM topology_objects ORDER BY id");
  assert.deepEqual(
    after.rows.map((r) => r.id),
    ["n1", "n3"],
  );
  assert.equal(
    await f.applier.applyChange({ index: 7, upserts: [], deletes: [networkRef("n3")] }),
    "applied",
  );
  assert.deepEqual(trips, { statements: 2, txs: 1 });
  const last = await f.db.pool.query("SELECT id FROM topology_objects ORDER BY id");
  assert.deepEqual(
    last.rows.map((r) => r.id),
    ["n1"],
  );
  const intentLeft = await f.db.pool.query("SELECT id FROM intent_objects ORDER BY id");
  assert.deepEqual(
    intentLeft.rows.map((r) => r.id),
    ["n1"],
  );
  // The logged change decodes to what the statement wrote.
  const logged = await f.db.pool.query("SELECT body FROM topology_changes WHERE revision = 2");
  const change = topologypb.TopologyChange.decode(logged.rows[0].body as Buffer);
  assert.deepEqual(
    change.upserts
      .filter((o) => o.bridge)
      .map((o) => [o.bridge!.id, o.bridge!.tunnelKey])
      .sort(),
    [
      ["n1", 0x100006],
      ["n2", 0x100002],
    ],
  );
});

test("a snapshot replaces the intent copy and moves the topology to match", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const f = await controllerFixture(await pg.createDatabase());
  t.after(() => f.close());
  for (const c of STREAM.slice(0, 2)) await f.applier.applyChange(c);
  await f.applier.applySnapshot({
    index: 20,
    objects: [network("n2", "red", 0x100022), network("n4", "grey", 4 + 0x100000)],
  });
  assert.equal(f.applier.appliedIndex, 20);
  const topo = await f.db.pool.query("SELECT id FROM topology_objects ORDER BY id");
  assert.deepEqual(
    topo.rows.map((r) => r.id),
    ["n2", "n4"],
  );
  const intent = await f.db.pool.query("SELECT id FROM intent_objects ORDER BY id");
  assert.deepEqual(
    intent.rows.map((r) => r.id),
    ["n2", "n4"],
  );
  assert.equal(f.ctx.index.get("network", "n1"), undefined);
  assert.equal(
    await f.applier.applyChange({ index: 19, upserts: [network("n9", "x", 1)], deletes: [] }),
    "skipped",
  );
});

test("a deposed controller cannot write and its in-memory view is unchanged", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const f = await controllerFixture(await pg.createDatabase());
  t.after(() => f.close());
  await f.applier.applyChange(STREAM[0]!);
  // The other replica takes the lease over.
  await f.db.pool.query("UPDATE controller_lease SET holder = 'ctl-2', token = token + 1");
  await assert.rejects(f.applier.applyChange(STREAM[1]!), FencedOut);
  await assert.rejects(f.applier.applyProgress(50), FencedOut);
  assert.equal(f.applier.appliedIndex, 3);
  assert.equal(f.ctx.index.get("network", "n2"), undefined);
  const n = await f.db.pool.query("SELECT count(*)::INT8 AS n FROM intent_objects");
  assert.equal(Number(n.rows[0].n), 1);
});

test("a controller with a newer translation moves the stored topology to it once, in one revision", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const url = await pg.createDatabase();
  const f = await controllerFixture(url);
  t.after(() => f.close());
  await f.applier.applyChange({
    index: 1,
    upserts: [b.network("n", { sites: ["a"] }), b.securityGroup("g")],
    deletes: [],
  });
  for (const n of [1, 2]) await f.local.createPort(vmPortInput(n, b.id("n"), [`10.0.0.${n}`], [b.id("g")]));
  // A fresh database is recorded as derived by this version (nothing to move).
  assert.equal(await f.applier.reconcileTranslation(), 0);
  assert.deepEqual((await f.db.pool.query("SELECT version FROM translation_state")).rows, [
    { version: String(TRANSLATION_VERSION) },
  ]);
  const clean = await dumpState(f.db);
  // The database as an older translation left it: an object ours no longer derives (a port's own
  // outbound chain, as version 1 had), one it derives differently, and one it does not have yet.
  const profileOut = portProfileChainId(securityGroupSetKey([b.id("g")]), "outbound");
  await f.db.tx("old", async (tx) => {
    await writeTopologyChange(
      tx,
      {
        upserts: [
          { chain: { id: derivedId(b.id("vm1"), "chain/outbound"), name: "port-vm1-outbound" } },
          { chain: { id: portInboundChainId(b.id("vm2")), name: "renamed" } },
        ],
        deletes: [{ kind: topologypb.TopologyKind.TOPOLOGY_KIND_CHAIN, id: profileOut }],
      },
      "intent",
      f.ctx.changeLog,
    );
    await tx.query("UPDATE translation_state SET version = $1", [TRANSLATION_VERSION - 1]);
  });
  const revisions = f.committed.length;
  assert.equal(await f.applier.reconcileTranslation(), 3);
  assert.equal(f.committed.length, revisions + 1, "one revision for the whole move");
  assert.deepEqual(await dumpState(f.db), clean);
  assert.deepEqual((await f.db.pool.query("SELECT version FROM translation_state")).rows, [
    { version: String(TRANSLATION_VERSION) },
  ]);
  // Once recorded, a restart does not re-derive anything.
  assert.equal(await f.applier.reconcileTranslation(), 0);
  assert.equal(f.committed.length, revisions + 1);
});
