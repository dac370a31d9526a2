// IntentSync without a database: a stub applier records what it is asked to apply.
import assert from "node:assert/strict";
import { type TestContext, test } from "node:test";
import { credentials } from "@grpc/grpc-js";
import { intentpb, silentLogger } from "@isthmus/schema";
import type { IntentApplier } from "./intent-applier.js";
import { IntentSync, type IntentSyncOptions } from "./intent-sync.js";
import { FakeCoordinator } from "./test-support/fake-coordinator.js";
import * as b from "./translate/intent-builders.js";

function stubApplier() {
  const snapshots: intentpb.IntentSnapshot[] = [];
  const changes: number[] = [];
  const applier = {
    appliedIndex: 0,
    async applySnapshot(s: intentpb.IntentSnapshot) {
      snapshots.push(s);
      applier.appliedIndex = s.index;
      return "applied" as const;
    },
    async applyChange(c: intentpb.IntentChange) {
      changes.push(c.index);
      applier.appliedIndex = c.index;
      return "applied" as const;
    },
    async applyProgress(i: number) {
      applier.appliedIndex = i;
      return "applied" as const;
    },
  };
  return { applier, snapshots, changes };
}

async function until<T>(what: string, f: () => T | undefined | false): Promise<T> {
  const end = Date.now() + 10_000;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** An IntentSync of site "east" following `coord`, started, and stopped after the test. */
function startSync(
  t: TestContext,
  coord: FakeCoordinator,
  applier: ReturnType<typeof stubApplier>["applier"],
  o: Partial<IntentSyncOptions>,
): IntentSync {
  const sync = new IntentSync(applier as unknown as IntentApplier, {
    site: "east",
    addresses: [coord.address],
    credentials: credentials.createInsecure(),
    backoffInitialMs: 50,
    backoffMaxMs: 200,
    ackEveryMs: 50,
    log: silentLogger(),
    maxSnapshotObjects: 100,
    ...o,
  });
  sync.start();
  t.after(() => sync.stop());
  return sync;
}

test("a snapshot sent in parts is applied once, whole, then the changes after it", async (t) => {
  const coord = new FakeCoordinator();
  await coord.start();
  t.after(() => coord.stop());
  const objects = Array.from({ length: 7 }, (_, i) => b.securityGroup(`g${i}`));
  coord.snapshot = { index: 40, objects };
  coord.snapshotPartObjects = 3;
  coord.log.push(b.upsert(41, b.securityGroup("after")));
  const { applier, snapshots, changes } = stubApplier();
  const applied: number[] = [];
  startSync(t, coord, applier, { snapshotAfterLag: 2500, onSnapshotApplied: (n) => applied.push(n) });
  await until("the change after the snapshot", () => changes.length > 0);
  assert.deepEqual(applied, [objects.length], "told once, with the whole snapshot's object count");
  assert.deepEqual(coord.askedForParts, [true], "the site asks for snapshot parts");
  assert.deepEqual(coord.askedLag, ["2500"], "and for a snapshot when 2500 or more behind");
  assert.equal(snapshots.length, 1, "one snapshot applied for its three parts");
  assert.equal(snapshots[0]!.index, 40);
  const wire = (o: intentpb.IntentObject) =>
    intentpb.IntentObject.decode(intentpb.IntentObject.encode(o).finish());
  assert.deepEqual(snapshots[0]!.objects, objects.map(wire), "the union of the parts, in order");
  assert.deepEqual(changes, [41]);
});

test("a snapshot in parts holding more objects than the bound ends the stream instead of buffering", async (t) => {
  const coord = new FakeCoordinator();
  await coord.start();
  t.after(() => coord.stop());
  coord.snapshot = { index: 9, objects: Array.from({ length: 10 }, (_, i) => b.securityGroup(`g${i}`)) };
  coord.snapshotPartObjects = 2;
  const { applier, snapshots } = stubApplier();
  const sync = startSync(t, coord, applier, { backoffMaxMs: 100, maxSnapshotObjects: 5 });
  await until("a reconnect after the refused snapshot", () => sync.status.reconnects >= 2);
  assert.equal(snapshots.length, 0, "nothing applied from an over-large snapshot");
  assert.equal(applier.appliedIndex, 0);
});

test("an index moved by progress alone is acked at the refresh pace, an applied change at the ack pace", async (t) => {
  const coord = new FakeCoordinator();
  await coord.start();
  t.after(() => coord.stop());
  coord.log.push(b.upsert(1, b.securityGroup("g1")));
  const { applier } = stubApplier();
  startSync(t, coord, applier, { ackEveryMs: 20, progressAckRefreshMs: 1_500 });
  await until("the ack of change 1", () => coord.acks.includes(1));
  const sentAt = Date.now();
  // Entries with nothing for this site (other sites' acks): progress to 2, 3, 4 in quick steps.
  for (const i of [2, 3, 4]) {
    coord.progress(i);
    await new Promise((r) => setTimeout(r, 100));
  }
  await until("progress applied", () => applier.appliedIndex === 4);
  assert.deepEqual(coord.acks, [1], "progress alone is not acked at the ack pace");
  await until("the refresh ack of 4", () => coord.acks.includes(4));
  assert.ok(Date.now() - sentAt >= 1_400, `acked ${Date.now() - sentAt} ms after the last ack`);
  assert.deepEqual(coord.acks, [1, 4]);
  // An applied change is acked at the ack pace again.
  coord.append(b.upsert(5, b.securityGroup("g5")));
  const t5 = Date.now();
  await until("the ack of change 5", () => coord.acks.includes(5));
  assert.ok(Date.now() - t5 < 1_000, "a change is acked without waiting for the refresh");
});

/** Two coordinators, A (followed first) and B, each stopped after the test. */
async function twoCoordinators(t: TestContext): Promise<[FakeCoordinator, FakeCoordinator]> {
  const a = new FakeCoordinator();
  const c = new FakeCoordinator();
  await a.start();
  await c.start();
  t.after(() => a.stop());
  t.after(() => c.stop());
  return [a, c];
}

test("told that another of its coordinators leads, the site moves its stream there and resumes from its applied index", async (t) => {
  const [a, leader] = await twoCoordinators(t);
  a.log.push(b.upsert(1, b.securityGroup("g1")), b.upsert(2, b.securityGroup("g2")));
  leader.log.push(...a.log);
  const { applier, changes } = stubApplier();
  const sync = startSync(t, a, applier, { addresses: [a.address, leader.address], leaderMoveDelayMs: 100 });
  await until("the first entries from A", () => changes.length === 2);
  assert.deepEqual(a.askedLeaderHints, [true], "the site asks for leader hints");
  a.leader(leader.address);
  await until("a stream at the leader", () => leader.watching === 1);
  assert.deepEqual(leader.watchedFrom, [2], "resumed from the index applied");
  const entry = b.upsert(3, b.securityGroup("g3"));
  a.log.push(entry);
  leader.append(entry);
  await until("the next entry, from the leader", () => changes.length === 3);
  assert.deepEqual(changes, [1, 2, 3], "nothing twice, nothing skipped");
  assert.equal(sync.status.address, leader.address);
  assert.equal(sync.status.leaderMoves, 1);
  assert.equal(sync.status.reconnects, 0, "a move is not a reconnect");
  await until("A's stream gone", () => a.watching === 0);
});

test("the site stays on its coordinator when the leader is not among its addresses, the word is withdrawn in time, or followLeader is off", async (t) => {
  const [a, other] = await twoCoordinators(t);
  a.log.push(b.upsert(1, b.securityGroup("g1")));
  const { applier, changes } = stubApplier();
  const sync = startSync(t, a, applier, { addresses: [a.address, other.address], leaderMoveDelayMs: 150 });
  await until("the first entry", () => changes.length === 1);
  a.leader("10.9.9.9:7000"); // not one of the site's addresses
  a.leader(other.address);
  a.leader(""); // within the delay: A leads after all
  await new Promise((r) => setTimeout(r, 450));
  assert.equal(sync.status.leaderMoves, 0);
  assert.equal(other.watching, 0);
  assert.equal(a.watching, 1);

  const [c, d] = await twoCoordinators(t);
  c.log.push(b.upsert(1, b.securityGroup("g1")));
  const off = stubApplier();
  const fixed = startSync(t, c, off.applier, {
    addresses: [c.address, d.address],
    followLeader: false,
    leaderMoveDelayMs: 50,
  });
  await until("the first entry", () => off.changes.length === 1);
  assert.deepEqual(c.askedLeaderHints, [false], "no hints asked for");
  c.leader(d.address);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(fixed.status.leaderMoves, 0);
  assert.equal(d.watching, 0);
});
