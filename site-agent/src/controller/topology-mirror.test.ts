import assert from "node:assert/strict";
import { type TestContext, test } from "node:test";
import { silentLogger, topologypb } from "@isthmus/schema";
import { ChangeFeed, type ChangeListener } from "./change-feed.js";
import { Database } from "./db/database.js";
import { postgresForTests } from "./db/postgres-for-tests.js";
import { controllerFixture, type Fixture } from "./test-support/controller-fixture.js";
import { network, networkRef, trivialTranslator } from "./test-support/trivial-translator.js";
import { type FramedSnapshot, TopologyMirror } from "./topology-mirror.js";
import { readSnapshot } from "./topology-store.js";

const pg = postgresForTests();

/** What a framed snapshot holds, decoded: revision and bridge id → name. */
function decodeFramed(f: FramedSnapshot): { revision: number; bridges: Map<string, string> } {
  const bridges = new Map<string, string>();
  let revision = -1;
  f.events.forEach((ev, i) => {
    const e = topologypb.WatchTopologyResponse.decode(ev.bytes);
    const part = i === f.events.length - 1 ? e.snapshot : e.snapshotPart;
    assert.ok(part, `event ${i} is a ${i === f.events.length - 1 ? "snapshot" : "snapshot part"}`);
    revision = part.revision;
    for (const o of part.objects) {
      assert.equal(bridges.has(o.bridge!.id), false, "no object twice");
      bridges.set(o.bridge!.id, o.bridge!.name);
    }
  });
  return { revision, bridges };
}

async function dbState(db: Database): Promise<{ revision: number; bridges: Map<string, string> }> {
  const s = await readSnapshot(db);
  return { revision: s.revision, bridges: new Map(s.objects.map((o) => [o.bridge!.id, o.bridge!.name])) };
}

async function until(what: string, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

let index = 0;
/** A fresh database with a writer (trivial translation) closed after the test; indexes restart. */
async function freshWriter(t: TestContext): Promise<Fixture> {
  index = 0;
  const writer = await controllerFixture(await pg.createDatabase(), { translator: trivialTranslator });
  t.after(() => writer.close());
  return writer;
}
async function put(f: Fixture, id: string, name: string): Promise<void> {
  index++;
  await f.applier.applyChange({ index, upserts: [network(id, name, 0x100000 + index)], deletes: [] });
}
async function remove(f: Fixture, id: string): Promise<void> {
  index++;
  await f.applier.applyChange({ index, upserts: [], deletes: [networkRef(id)] });
}

/** A feed the test drives by hand. */
class ManualFeed {
  readonly listeners = new Set<ChangeListener>();
  subscribe(fn: ChangeListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  emit(c: topologypb.TopologyChange): void {
    for (const l of this.listeners) l(c);
  }
}

/** A mirror of `db` fed by hand, every object in one 1 MiB part. */
function manualMirror(db: Database): { feed: ManualFeed; mirror: TopologyMirror } {
  const feed = new ManualFeed();
  const mirror = new TopologyMirror(db, feed, { maxBytes: 1 << 20, partBytes: 1 << 20 }, silentLogger());
  return { feed, mirror };
}

const bridge = (id: string, name: string): topologypb.TopologyObject => ({
  bridge: topologypb.Bridge.fromPartial({
    id,
    name,
    networkId: id,
    tunnelKey: 7,
    mtu: 1450,
    adminStateUp: true,
  }),
});

test("the mirror follows the other replica's writes (upserts, rewrites, deletes) and frames what the database holds", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  index = 0;
  const url = await pg.createDatabase();
  const writer = await controllerFixture(url, { translator: trivialTranslator });
  const readerDb = new Database({ url, log: silentLogger() });
  const feed = new ChangeFeed(readerDb, { pollMs: 20, ringSize: 8, batch: 50 }, silentLogger());
  t.after(async () => {
    await feed.stop();
    await readerDb.close();
    await writer.close();
  });
  for (let i = 0; i < 5; i++) await put(writer, `n${i}`, `net-${i}`);
  await feed.start();
  const mirror = new TopologyMirror(readerDb, feed, { maxBytes: 1 << 20, partBytes: 120 }, silentLogger());
  await mirror.start();
  t.after(() => mirror.stop());
  assert.ok(mirror.ready);
  assert.deepEqual(decodeFramed(mirror.snapshot()!), await dbState(readerDb), "loaded at start");
  for (let i = 5; i < 12; i++) await put(writer, `n${i}`, `net-${i}-${"x".repeat(i * 5)}`);
  await put(writer, "n2", "renamed"); // a rewrite of an object the mirror holds
  await remove(writer, "n0");
  await remove(writer, "n7");
  const want = await dbState(readerDb);
  await until(
    "the mirror to reach the database's revision",
    () => mirror.snapshot()?.revision === want.revision,
  );
  const got = decodeFramed(mirror.snapshot()!);
  assert.deepEqual(got, want);
  assert.equal(got.bridges.get("n2"), "renamed");
  assert.equal(got.bridges.has("n0"), false);
  assert.ok(mirror.snapshot()!.events.length > 3, "in several parts (120 bytes each)");
  assert.equal(mirror.loads, 1, "followed the feed without reloading");
});

test("framed events are shared at one revision and framed again after a change", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const writer = await freshWriter(t);
  await put(writer, "a", "A");
  const { feed, mirror } = manualMirror(writer.db);
  await mirror.start();
  const first = mirror.snapshot()!;
  assert.equal(mirror.snapshot(), first, "the same framing for every agent at this revision");
  feed.emit({ revision: first.revision + 1, upserts: [bridge("b", "B")], deletes: [] });
  const second = mirror.snapshot()!;
  assert.notEqual(second, first);
  assert.equal(second.revision, first.revision + 1);
  assert.deepEqual([...decodeFramed(second).bridges.keys()].sort(), ["a", "b"]);
  feed.emit({ revision: first.revision, upserts: [bridge("old", "replayed")], deletes: [] });
  assert.equal(mirror.snapshot(), second, "a change it already has is ignored");
  mirror.stop();
});

test("changes delivered while loading apply after the load's revision; a gap reloads from the database", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const writer = await freshWriter(t);
  await put(writer, "a", "A");
  await put(writer, "b", "B");
  const at = (await dbState(writer.db)).revision;
  const { feed, mirror } = manualMirror(writer.db);
  const starting = mirror.start();
  // Delivered before the load's read returns: one the load already has, one after it.
  feed.emit({ revision: at, upserts: [bridge("b", "B")], deletes: [] });
  feed.emit({ revision: at + 1, upserts: [bridge("c", "C")], deletes: [{ kind: 2, id: "a" }] });
  assert.equal(mirror.snapshot(), undefined, "nothing from memory while loading");
  await starting;
  let s = decodeFramed(mirror.snapshot()!);
  assert.equal(s.revision, at + 1);
  assert.deepEqual([...s.bridges.keys()].sort(), ["b", "c"]);

  // The database moves on by three revisions, the feed delivers only the last: the mirror
  // cannot trust itself, serves nothing until it has reloaded, then holds the database's state.
  await put(writer, "d", "D");
  await put(writer, "e", "E");
  await put(writer, "f", "F");
  const want = await dbState(writer.db);
  feed.emit({ revision: want.revision, upserts: [bridge("f", "F")], deletes: [] });
  assert.equal(mirror.snapshot(), undefined, "a gap: not served from memory");
  await until("the reload", () => mirror.ready);
  s = decodeFramed(mirror.snapshot()!);
  assert.deepEqual(s, want);
  assert.equal(mirror.loads, 2);
  mirror.stop();
});

test("over its byte bound the mirror turns itself off (snapshots then come from the database)", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const writer = await freshWriter(t);
  await put(writer, "a", "A");
  const feed = new ManualFeed();
  const small = new TopologyMirror(writer.db, feed, { maxBytes: 200, partBytes: 1 << 20 }, silentLogger());
  await small.start();
  assert.ok(small.ready, "one bridge fits");
  const r = (await dbState(writer.db)).revision;
  feed.emit({ revision: r + 1, upserts: [bridge("b", "x".repeat(300))], deletes: [] });
  assert.equal(small.ready, false);
  assert.equal(small.snapshot(), undefined);
  feed.emit({ revision: r + 2, upserts: [], deletes: [{ kind: 2, id: "b" }] });
  assert.equal(small.snapshot(), undefined, "stays off");
  const off = new TopologyMirror(writer.db, feed, { maxBytes: 0, partBytes: 1 << 20 }, silentLogger());
  await off.start();
  assert.equal(off.snapshot(), undefined, "maxBytes 0 = off");
  assert.equal(off.loads, 0);
  small.stop();
  off.stop();
});

test("after many changes only the parts they touched are framed again; parts stay within the bound and are compacted after deletes", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const writer = await freshWriter(t);
  const feed = new ManualFeed();
  const partBytes = 400;
  const mirror = new TopologyMirror(writer.db, feed, { maxBytes: 1 << 20, partBytes }, silentLogger());
  await mirror.start();
  let revision = mirror.snapshot()!.revision;
  const model = new Map<string, string>();
  const objectBytes = (id: string, name: string) =>
    topologypb.TopologyObject.encode(bridge(id, name)).finish().length;
  const check = (what: string) => {
    const framed = mirror.snapshot()!;
    const got = decodeFramed(framed);
    assert.equal(got.revision, revision, what);
    assert.deepEqual(got.bridges, model, what);
    for (const [i, ev] of framed.events.entries()) {
      const e = topologypb.WatchTopologyResponse.decode(ev.bytes);
      const part = (e.snapshot ?? e.snapshotPart)!;
      const bytes = part.objects.reduce((a, o) => a + objectBytes(o.bridge!.id, o.bridge!.name), 0);
      assert.ok(part.objects.length === 1 || bytes <= partBytes, `${what}: part ${i} holds ${bytes} bytes`);
    }
    return framed;
  };
  // A seeded generator: the same changes every run.
  let seed = 7;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let step = 0; step < 200; step++) {
    const upserts: topologypb.TopologyObject[] = [];
    const deletes: topologypb.TopologyRef[] = [];
    for (let k = rand(4); k >= 0; k--) {
      const id = `b${rand(60)}`;
      if (model.has(id) && rand(3) === 0) {
        model.delete(id);
        if (!deletes.some((d) => d.id === id)) deletes.push({ kind: 2, id });
        const u = upserts.findIndex((o) => o.bridge!.id === id);
        if (u >= 0) upserts.splice(u, 1);
      } else {
        const name = `n${step}-${"y".repeat(rand(40))}`;
        model.set(id, name);
        const u = upserts.findIndex((o) => o.bridge!.id === id);
        if (u >= 0) upserts.splice(u, 1);
        const d = deletes.findIndex((x) => x.id === id);
        if (d >= 0) deletes.splice(d, 1);
        upserts.push(bridge(id, name));
      }
    }
    feed.emit({ revision: ++revision, upserts, deletes });
    if (step % 10 === 0) check(`step ${step}`);
  }
  // One rename: every other part keeps its objects' bytes, in an event at the new revision.
  const before = check("before the rename");
  assert.ok(before.events.length >= 4, `several parts (${before.events.length})`);
  const some = [...model.keys()][0]!;
  model.set(some, "renamed");
  feed.emit({ revision: ++revision, upserts: [bridge(some, "renamed")], deletes: [] });
  const after = check("after the rename");
  const bodyOf = (ev: { bytes: Buffer }) => {
    const e = topologypb.WatchTopologyResponse.decode(ev.bytes);
    return (e.snapshot ?? e.snapshotPart)!.objects.map((o) => o.bridge!.id).join(",");
  };
  const unchanged = after.events.filter((ev) => before.events.some((b) => bodyOf(b) === bodyOf(ev)));
  assert.ok(
    unchanged.length >= after.events.length - 2,
    `objects stay in their parts: ${unchanged.length} of ${after.events.length} parts hold what they held`,
  );
  // Deleting most objects leaves fewer, fuller parts (compacted), not one event per survivor.
  const keep = [...model.keys()].slice(0, 5);
  const gone = [...model.keys()].filter((id) => !keep.includes(id));
  for (const id of gone) model.delete(id);
  feed.emit({ revision: ++revision, upserts: [], deletes: gone.map((id) => ({ kind: 2, id })) });
  const small = check("after deleting all but five");
  const bytes = keep.reduce((a, id) => a + objectBytes(id, model.get(id)!), 0);
  assert.ok(
    small.events.length <= 2 * Math.ceil(bytes / partBytes) + 1,
    `${small.events.length} events for ${bytes} bytes`,
  );
  for (const id of keep) model.delete(id);
  feed.emit({ revision: ++revision, upserts: [], deletes: keep.map((id) => ({ kind: 2, id })) });
  const none = check("empty");
  assert.equal(none.events.length, 1, "an empty topology is one (empty) snapshot event");
  assert.equal(mirror.loads, 1);
  mirror.stop();
});

test("once changes are quiet the snapshot is framed in the background; a change meanwhile is not lost", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const writer = await freshWriter(t);
  const feed = new ManualFeed();
  const mirror = new TopologyMirror(
    writer.db,
    feed,
    { maxBytes: 1 << 20, partBytes: 200, prepareAfterMs: 30 },
    silentLogger(),
  );
  await mirror.start();
  t.after(() => mirror.stop());
  let revision = mirror.snapshot()!.revision;
  const names = new Map<string, string>();
  for (let i = 0; i < 40; i++) names.set(`b${i}`, `bridge-${i}`);
  feed.emit({
    revision: ++revision,
    upserts: [...names].map(([id, name]) => bridge(id, name)),
    deletes: [],
  });
  assert.ok(mirror.partCount >= 5, `several parts (${mirror.partCount})`);
  await until("the background framing", () => mirror.eventsBuilt >= mirror.partCount);
  const built = mirror.eventsBuilt;
  const framed = mirror.snapshot()!;
  assert.equal(mirror.eventsBuilt, built, "the Watch found every event built");
  assert.deepEqual(decodeFramed(framed), { revision, bridges: names });

  // A change while the background framing runs (it builds a part per turn): it starts over at
  // the new revision, and what is served holds the change.
  names.set("b3", "renamed");
  feed.emit({ revision: ++revision, upserts: [bridge("b3", "renamed")], deletes: [] });
  await until("the background framing to start", () => mirror.eventsBuilt > built);
  names.set("b4", "renamed too");
  feed.emit({ revision: ++revision, upserts: [bridge("b4", "renamed too")], deletes: [] });
  await until("the background framing at the last revision", () => {
    const before = mirror.eventsBuilt;
    const f = mirror.snapshot()!;
    return mirror.eventsBuilt === before && f.revision === revision;
  });
  assert.deepEqual(decodeFramed(mirror.snapshot()!), { revision, bridges: names });
});

test("the mirror frames rules without their intent_id, which agents never read", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const writer = await freshWriter(t);
  await put(writer, "a", "A");
  const at = (await dbState(writer.db)).revision;
  const { feed, mirror } = manualMirror(writer.db);
  await mirror.start();
  t.after(() => mirror.stop());
  const rule = topologypb.Rule.fromPartial({
    id: "r",
    chainId: "c",
    position: 3,
    action: topologypb.RuleAction.RULE_ACTION_DROP,
    intentId: "sg-rule-1",
  });
  feed.emit({ revision: at + 1, upserts: [{ rule }], deletes: [] });
  const framed = mirror.snapshot()!;
  assert.equal(framed.revision, at + 1);
  const objects = framed.events.flatMap((ev) => {
    const e = topologypb.WatchTopologyResponse.decode(ev.bytes);
    return (e.snapshot ?? e.snapshotPart)!.objects;
  });
  assert.deepEqual(
    objects.map((o) => o.rule ?? o.bridge?.id),
    ["a", { ...rule, intentId: "" }],
  );
});
