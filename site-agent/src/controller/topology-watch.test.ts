import assert from "node:assert/strict";
import { test } from "node:test";
import { credentials, Server, ServerCredentials, status } from "@grpc/grpc-js";
import { createLogger, silentLogger, startGrpcServer, topologypb } from "@isthmus/schema";
import { ChangeFeed } from "./change-feed.js";
import { Database } from "./db/database.js";
import { postgresForTests } from "./db/postgres-for-tests.js";
import { topologyServiceDefinition } from "./snapshot-encoding.js";
import { controllerFixture, type Fixture } from "./test-support/controller-fixture.js";
import { network, trivialTranslator } from "./test-support/trivial-translator.js";
import { TopologyMirror } from "./topology-mirror.js";
import { readSnapshot } from "./topology-store.js";
import { DEFAULT_SNAPSHOT_PART_BYTES, TopologyWatchService, type WatchOptions } from "./topology-watch.js";

const pg = postgresForTests();

interface Served {
  writer: Fixture;
  client: topologypb.TopologyServiceClient;
  nextIndex: () => number;
  mirror?: TopologyMirror;
  /** What the watch service logged. */
  logs: Record<string, unknown>[];
  /** The revision each read of the change log started after, in order (the feed's polls too). */
  logReadsAfter: number[];
  close(): Promise<void>;
}

/**
 * A writer (the active replica) and a watch server on a separate database handle and change
 * feed (the standby replica): agents of either replica see every change.
 */
async function serve(
  opts: Partial<WatchOptions> = {},
  onService: (svc: TopologyWatchService) => void = () => {},
  mirrored = false,
  feedMaxChangeBytes?: number,
): Promise<Served> {
  const url = await pg.createDatabase();
  const writer = await controllerFixture(url, { translator: trivialTranslator });
  const readerDb = new Database({ url, log: silentLogger() });
  // The `after` of every read of the change log through the reader's handle (feed and watch).
  const logReadsAfter: number[] = [];
  const statement = readerDb.statement.bind(readerDb);
  readerDb.statement = (label, text, params = []) => {
    if (label === "topology-changes") logReadsAfter.push(Number(params[0]));
    return statement(label, text, params);
  };
  const feed = new ChangeFeed(
    readerDb,
    { pollMs: 20, ringSize: 8, batch: 50, maxChangeBytes: feedMaxChangeBytes },
    silentLogger(),
  );
  await feed.start();
  const mirror = mirrored
    ? new TopologyMirror(
        readerDb,
        feed,
        { maxBytes: 1 << 20, partBytes: opts.snapshotPartBytes ?? DEFAULT_SNAPSHOT_PART_BYTES },
        silentLogger(),
      )
    : undefined;
  await mirror?.start();
  const logs: Record<string, unknown>[] = [];
  const svc = new TopologyWatchService(
    readerDb,
    feed,
    { maxQueuedChanges: 1000, heartbeatMs: 10_000, catchUpBatch: 7, maxStreams: 10, ...opts },
    createLogger({
      name: "watch",
      destination: { write: (line: string) => logs.push(JSON.parse(line) as Record<string, unknown>) },
    }),
    async () => {},
    mirror,
  );
  onService(svc);
  const server = new Server();
  server.addService(topologyServiceDefinition, svc.handlers());
  const started = await startGrpcServer(
    server,
    "127.0.0.1:0",
    ServerCredentials.createInsecure(),
    silentLogger(),
  );
  const client = new topologypb.TopologyServiceClient(started.address, credentials.createInsecure());
  let idx = 0;
  return {
    writer,
    client,
    nextIndex: () => ++idx,
    mirror,
    logs,
    logReadsAfter,
    async close() {
      client.close();
      await started.stop(100);
      mirror?.stop();
      await feed.stop();
      await readerDb.close();
      await writer.close();
    },
  };
}

async function applyNetworks(s: Served, n: number, nameSize = 8): Promise<void> {
  for (let i = 0; i < n; i++) {
    const idx = s.nextIndex();
    await s.writer.applier.applyChange({
      index: idx,
      upserts: [network(`net-${idx}`, `n${idx}-${"x".repeat(nameSize)}`, 0x100000 + idx)],
      deletes: [],
    });
  }
}

/** Collects events until `until` says stop; the state is rebuilt from snapshot + changes. */
function collect(
  client: topologypb.TopologyServiceClient,
  from: number,
  until: (events: topologypb.WatchTopologyResponse[]) => boolean,
  onFirstEvent: () => void = () => {},
): Promise<{ events: topologypb.WatchTopologyResponse[]; error?: { code: number; details: string } }> {
  return new Promise((resolve) => {
    const events: topologypb.WatchTopologyResponse[] = [];
    const stream = client.watch({ hostId: "h1", fromRevision: from });
    const timer = setTimeout(() => {
      stream.cancel();
      resolve({ events, error: { code: -1, details: "test timed out waiting for events" } });
    }, 15_000);
    stream.on("data", (e: topologypb.WatchTopologyResponse) => {
      events.push(e);
      if (events.length === 1) onFirstEvent();
      if (until(events)) {
        clearTimeout(timer);
        stream.cancel();
        resolve({ events });
      }
    });
    stream.on("error", (err: { code: number; details: string }) => {
      clearTimeout(timer);
      resolve({ events, error: err.code === status.CANCELLED ? undefined : err });
    });
  });
}

function lastRevision(events: topologypb.WatchTopologyResponse[]): number {
  const e = events[events.length - 1];
  return e?.change?.revision ?? e?.snapshot?.revision ?? -1;
}

// Each served from the database and from the in-memory mirror.
for (const mirrored of [false, true]) {
  const from = mirrored ? " (from the mirror)" : "";
  test(`snapshot at R then every later change in order, including changes written by the other replica${from}`, async (t) => {
    if (pg.skip) return t.skip(pg.skip);
    const s = await serve({}, undefined, mirrored);
    t.after(() => s.close());
    await applyNetworks(s, 3);
    const watching = collect(s.client, 0, (ev) => lastRevision(ev) >= 23);
    await new Promise((r) => setTimeout(r, 100));
    await applyNetworks(s, 20);
    const { events, error } = await watching;
    assert.equal(error, undefined);
    assert.ok(events[0]?.snapshot, "first event is a snapshot");
    const r = events[0]!.snapshot!.revision;
    const changes = events.filter((e) => e.change).map((e) => e.change!.revision);
    assert.deepEqual(
      changes,
      Array.from({ length: 23 - r }, (_, i) => r + 1 + i),
      "gap-free, ordered",
    );
    // Rebuilding from the stream gives exactly the database's state.
    const state = new Map<string, string>();
    for (const o of events[0]!.snapshot!.objects) state.set(o.bridge!.id, o.bridge!.name);
    for (const e of events) for (const o of e.change?.upserts ?? []) state.set(o.bridge!.id, o.bridge!.name);
    const db = await readSnapshot(s.writer.db);
    assert.deepEqual(new Map(db.objects.map((o) => [o.bridge!.id, o.bridge!.name])), state);
  });

  test(`a snapshot larger than a part arrives as snapshot_part events then the snapshot, all at one revision${from}`, async (t) => {
    if (pg.skip) return t.skip(pg.skip);
    const s = await serve({ snapshotPartBytes: 200 }, undefined, mirrored);
    t.after(() => s.close());
    await applyNetworks(s, 12, 40); // each bridge encodes to ~70 bytes: a few per part
    // The mirror is at the revision this replica's feed has read (it polls the other's commits).
    for (let i = 0; i < 500 && s.mirror && s.mirror.snapshot()?.revision !== 12; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const { events, error } = await collect(s.client, 0, (ev) => ev.some((e) => e.snapshot));
    assert.equal(error, undefined);
    const parts = events.filter((e) => e.snapshotPart).map((e) => e.snapshotPart!);
    assert.ok(parts.length >= 2, `several parts (got ${parts.length})`);
    assert.ok(events.at(-1)?.snapshot, "the snapshot event comes last");
    const all = [...parts, events.at(-1)!.snapshot!];
    assert.deepEqual(new Set(all.map((p) => p.revision)), new Set([12]));
    for (const p of all) {
      const bytes = p.objects.reduce((n, o) => n + topologypb.TopologyObject.encode(o).finish().length, 0);
      assert.ok(p.objects.length === 1 || bytes <= 200, `part of ${bytes} bytes within the bound`);
    }
    const db = await readSnapshot(s.writer.db);
    // The database's are in (kind, id) order; the mirror's in the order objects arrived.
    const ids = all.flatMap((p) => p.objects.map((o) => o.bridge!.id));
    assert.deepEqual(
      mirrored ? [...ids].sort() : ids,
      db.objects.map((o) => o.bridge!.id),
      "the parts together are the snapshot, without repeats",
    );
    // Where its time went, logged once the last part was written.
    const sent = s.logs.filter((l) => l.msg === "snapshot sent");
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.from, mirrored ? "memory" : "database");
    assert.equal(sent[0]!.messages, all.length);
    assert.equal(sent[0]!.revision, 12);
    assert.equal(sent[0]!.host, "h1");
    assert.ok((sent[0]!.bytes as number) > 12 * 40, `bytes ${sent[0]!.bytes}`);
    for (const f of ["waitMs", "readMs", "writeMs"]) assert.equal(typeof sent[0]![f], "number", f);
  });

  test(`resume after a disconnect continues from the agent's revision without a snapshot${from}`, async (t) => {
    if (pg.skip) return t.skip(pg.skip);
    const s = await serve({}, undefined, mirrored);
    t.after(() => s.close());
    await applyNetworks(s, 5);
    const first = await collect(s.client, 0, (ev) => lastRevision(ev) >= 5);
    assert.equal(lastRevision(first.events), 5);
    // Disconnected while 30 more changes happen (more than the feed's ring holds: read from the DB).
    await applyNetworks(s, 30);
    const second = await collect(s.client, 5, (ev) => lastRevision(ev) >= 35);
    assert.equal(second.error, undefined);
    assert.equal(
      second.events.some((e) => e.snapshot),
      false,
    );
    assert.deepEqual(
      second.events.filter((e) => e.change).map((e) => e.change!.revision),
      Array.from({ length: 30 }, (_, i) => 6 + i),
    );
    // Resuming near the head is served from the feed's ring.
    await applyNetworks(s, 2);
    const third = await collect(s.client, 35, (ev) => lastRevision(ev) >= 37);
    assert.deepEqual(
      third.events.filter((e) => e.change).map((e) => e.change!.revision),
      [36, 37],
    );
  });
}

test("an agent that stops reading is cut off with RESOURCE_EXHAUSTED, not buffered without bound", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  let service: TopologyWatchService | undefined;
  const s = await serve({ maxQueuedChanges: 5 }, (svc) => {
    service = svc;
  });
  t.after(() => s.close());
  const stream = s.client.watch({ hostId: "slow", fromRevision: 0 });
  const ended = new Promise<{ code: number; details: string }>((resolve) => {
    stream.on("error", resolve);
    stream.on("end", () => resolve({ code: 0, details: "ended" }));
  });
  t.after(() => stream.cancel());
  let got = 0;
  let firstRead = () => {};
  const first = new Promise<void>((r) => {
    firstRead = r;
  });
  stream.on("data", () => {
    got++;
    if (got === 1) {
      stream.pause(); // read one event (the snapshot), then stop reading
      firstRead();
    }
  });
  // Only then the changes: on a loaded machine the snapshot can take longer than any fixed wait,
  // and a stream cut off before its first event is read shows the agent nothing but the error.
  await Promise.race([
    first,
    new Promise((_, reject) =>
      setTimeout(() => reject(new Error("no snapshot within 30 s")), 30_000).unref(),
    ),
  ]);
  // Large changes fill the transport's flow-control window, then the per-stream queue.
  await applyNetworks(s, 120, 16_000);
  assert.equal(service?.slowCutoffs, 1, "the server cut the stream off");
  assert.ok(got < 60, `the agent had read only ${got} events`);
  // The agent sees why once it reads what was already sent.
  stream.resume();
  const err = await Promise.race([
    ended,
    new Promise<undefined>((r) => setTimeout(() => r(undefined), 10_000)),
  ]);
  assert.ok(err, "the stream was ended");
  assert.equal(err.code, status.RESOURCE_EXHAUSTED);
  assert.match(err.details, /fell more than 5 changes behind/);
  assert.ok(got >= 1);
});

/** The state an agent rebuilds from the events: a snapshot (with its parts) replaces it. */
function rebuild(events: topologypb.WatchTopologyResponse[]): Map<string, string> {
  let state = new Map<string, string>();
  let parts: topologypb.TopologyObject[] = [];
  for (const e of events) {
    if (e.snapshotPart) parts.push(...e.snapshotPart.objects);
    if (e.snapshot) {
      state = new Map([...parts, ...e.snapshot.objects].map((o) => [o.bridge!.id, o.bridge!.name]));
      parts = [];
    }
    for (const o of e.change?.upserts ?? []) state.set(o.bridge!.id, o.bridge!.name);
  }
  return state;
}

for (const [feedBound, how] of [
  [undefined, "the feed keeps it, so a resume before it reads the log"],
  [1000, "the feed does not keep it, so a resume before it reads nothing"],
] as const)
  test(`a change too large for one message reaches agents as a fresh snapshot, live and on resume (${how})`, async (t) => {
    if (pg.skip) return t.skip(pg.skip);
    const s = await serve({ maxChangeBytes: 1000 }, undefined, false, feedBound);
    t.after(() => s.close());
    await applyNetworks(s, 2);
    let snapshotIn = () => {};
    const first = new Promise<void>((r) => {
      snapshotIn = r;
    });
    const live = collect(
      s.client,
      0,
      (ev) => lastRevision(ev) >= 14,
      () => snapshotIn(),
    );
    await first; // the agent has its first snapshot (at revision 2) before the large change
    await applyNetworks(s, 1, 3000); // revision 3: one bridge of about 3 KB
    await applyNetworks(s, 11);
    const db = await readSnapshot(s.writer.db);
    const want = new Map(db.objects.map((o) => [o.bridge!.id, o.bridge!.name]));
    const big = [...want.values()].find((name) => name.length > 3000);
    assert.ok(big, "the large bridge is in the database");
    const check = (events: topologypb.WatchTopologyResponse[], what: string) => {
      for (const e of events) {
        if (!e.change) continue;
        const bytes = topologypb.TopologyChange.encode(e.change).finish().length;
        assert.ok(bytes <= 1000, `${what}: change ${e.change.revision} of ${bytes} bytes sent as a change`);
        assert.notEqual(e.change.revision, 3, `${what}: the large change itself is not sent`);
      }
      const snaps = events.filter((e) => e.snapshot).map((e) => e.snapshot!);
      assert.ok(
        snaps.some((x) => x.revision >= 3 && x.objects.some((o) => o.bridge!.name === big)),
        `${what}: a snapshot at revision 3 or later carries the large bridge`,
      );
      assert.deepEqual(rebuild(events), want, `${what}: the agent ends with the database's state`);
    };
    const { events, error } = await live;
    assert.equal(error, undefined);
    assert.equal(events.filter((e) => e.snapshot).length, 2, "the first snapshot, then one for revision 3");
    check(events, "live");
    // Resuming from before it (further back than the feed's ring of 8): read from the log, which
    // meets the large change and answers with a snapshot instead — or, when the feed saw it too
    // large to keep, a snapshot at once.
    const mark = s.logReadsAfter.length;
    const resumed = await collect(s.client, 2, (ev) => lastRevision(ev) >= 14);
    // The feed's polls read after its head (14); only the resume reads from further back.
    assert.deepEqual(
      s.logReadsAfter.slice(mark).filter((after) => after < 14),
      feedBound === undefined ? [2] : [],
      how,
    );
    assert.equal(resumed.error, undefined);
    check(resumed.events, "resumed");
  });
