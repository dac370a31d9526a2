import assert from "node:assert/strict";
import { type TestContext, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { intentpb, type sitesyncpb } from "@isthmus/schema";
import {
  LEADER_HINT_CHECK_MS,
  LEADER_HINTS_HEADER,
  SNAPSHOT_AFTER_LAG_HEADER,
  SNAPSHOT_PARTS_HEADER,
  snapshotEvents,
} from "./intent-stream.js";
import { LocalReplicator } from "./local-replicator.js";
import { call, md, startTestCoordinator } from "./test-support.js";

const group = (i: number): intentpb.IntentObject => ({
  securityGroup: {
    meta: {
      id: `g-${i}`,
      name: `group-${i}`,
      revision: i,
      description: "x".repeat(100),
      labels: {},
      createdRevision: i,
    },
    stateless: false,
  },
});
const size = (o: intentpb.IntentObject) => intentpb.IntentObject.encode(o).finish().length;

test("a snapshot goes in parts of at most the byte bound, every part at its index, the last as snapshot", () => {
  const objects = Array.from({ length: 1000 }, (_, i) => group(i));
  const bound = 10 * size(objects[0]!) + 5;
  const events = snapshotEvents({ index: 77, objects }, bound);
  assert.ok(events.length >= 100, `${events.length} parts`);
  const last = events.pop()!;
  assert.ok(last.snapshot && !last.snapshotPart, "the last event is the snapshot");
  assert.ok(
    events.every((e) => e.snapshotPart && !e.snapshot),
    "the others are parts",
  );
  const parts = [...events.map((e) => e.snapshotPart!), last.snapshot];
  for (const p of parts) {
    assert.equal(p.index, 77);
    assert.ok(p.objects.length > 0);
    assert.ok(p.objects.reduce((n, o) => n + size(o), 0) <= bound, "each part within the bound");
  }
  assert.deepEqual(
    parts.flatMap((p) => p.objects),
    objects,
    "the union of the parts is the snapshot, in order",
  );
});

test("an object larger than the bound travels alone; without a bound the snapshot is one event", () => {
  const objects = [group(1), group(2), group(3)];
  const events = snapshotEvents({ index: 5, objects }, 10);
  assert.equal(events.length, 3);
  assert.deepEqual(events[2]!.snapshot?.objects, [objects[2]]);
  assert.deepEqual(snapshotEvents({ index: 5, objects }, undefined), [{ snapshot: { index: 5, objects } }]);
  assert.deepEqual(snapshotEvents({ index: 5, objects: [] }, 1000), [
    { snapshot: { index: 5, objects: [] } },
  ]);
});

/** A site onboarded on a test coordinator, with `groups` security groups created after it. */
async function siteWithGroups(
  t: TestContext,
  groups: number,
  o: Parameters<typeof startTestCoordinator>[0] = {},
) {
  const c = await startTestCoordinator(o);
  t.after(() => c.close());
  const admin = md("admin");
  await call(
    c.fed,
    c.fed.addSite,
    { name: "fra", region: "", description: "", labels: {}, tokenTtlSeconds: 0 },
    admin,
  );
  const jwk = JSON.stringify({ kty: "OKP", crv: "Ed25519", x: "fra-key" });
  await call(c.sync, c.sync.join, { site: "fra", publicKeyJwk: jwk }, md("onboard:fra:j1"));
  for (let i = 0; i < groups; i++) {
    const g = group(1000 + i).securityGroup!;
    await call(
      c.fed,
      c.fed.create,
      { object: { securityGroup: { ...g, meta: { ...g.meta!, id: "", revision: 0, createdRevision: 0 } } } },
      admin,
    );
  }
  return c;
}

/** The first events of a WatchIntent call with `headers`, up to the first change or snapshot. */
function firstEvents(
  c: Awaited<ReturnType<typeof startTestCoordinator>>,
  fromIndex: number,
  headers: Record<string, string>,
): Promise<sitesyncpb.WatchIntentResponse[]> {
  const m = md("site:fra");
  for (const [k, v] of Object.entries(headers)) m.set(k, v);
  const stream = c.sync.watchIntent({ site: "fra", fromIndex }, m);
  const got: sitesyncpb.WatchIntentResponse[] = [];
  return new Promise((resolve, reject) => {
    stream.on("data", (e: sitesyncpb.WatchIntentResponse) => {
      got.push(e);
      if (e.snapshot || e.change) {
        stream.cancel();
        resolve(got);
      }
    });
    stream.on("error", (err: Error & { code?: number }) => {
      if (err.code !== status.CANCELLED) reject(err);
    });
  });
}

test("a site far enough behind (isthmus-snapshot-after-lag) starts from a snapshot, in parts when it asks", async (t) => {
  const c = await siteWithGroups(t, 5);
  const head = c.sm.index;
  // Within the journal and no lag header: the entries, not a snapshot.
  const plain = await firstEvents(c, 1, {});
  assert.ok(plain[0]?.change, "replayed from the journal");
  // Behind by more than the lag: a snapshot at the head.
  const lagged = await firstEvents(c, 1, { [SNAPSHOT_AFTER_LAG_HEADER]: "3" });
  assert.equal(lagged.length, 1);
  assert.equal(lagged[0]!.snapshot?.index, head);
  // Closer than the lag: entries again.
  const close = await firstEvents(c, head - 2, { [SNAPSHOT_AFTER_LAG_HEADER]: "3" });
  assert.ok(close[0]?.change && close[0].change.index === head - 1);
  // In parts: every part but the last as snapshot_part, same index, union = the state.
  const parts = await firstEvents(c, 1, { [SNAPSHOT_AFTER_LAG_HEADER]: "3", [SNAPSHOT_PARTS_HEADER]: "1" });
  const wire = (os: intentpb.IntentObject[] | undefined) =>
    (os ?? []).map((o) => Buffer.from(intentpb.IntentObject.encode(o).finish()).toString("hex"));
  assert.deepEqual(
    wire(parts.at(-1)!.snapshot?.objects),
    wire(c.sm.intentSnapshot().objects),
    "the snapshot carries the whole state",
  );
});

test("a site that asks (isthmus-leader-hints) is told where the leader is when another node leads, and on every move", async (t) => {
  let leader = "10.0.0.2:7000";
  class Follower extends LocalReplicator {
    override otherLeader(): string {
      return leader;
    }
  }
  const c = await siteWithGroups(t, 0, { replicator: (sm) => new Follower(sm) });

  const watch = (hints: boolean) => {
    const m = md("site:fra");
    if (hints) m.set(LEADER_HINTS_HEADER, "1");
    const stream = c.sync.watchIntent({ site: "fra", fromIndex: 0 }, m);
    const hintsGot: string[] = [];
    stream.on("data", (e: sitesyncpb.WatchIntentResponse) => {
      if (e.leaderAddress !== undefined) hintsGot.push(e.leaderAddress);
    });
    stream.on("error", () => {});
    t.after(() => stream.cancel());
    return hintsGot;
  };
  const asked = watch(true);
  const notAsked = watch(false);
  const settle = () => new Promise((r) => setTimeout(r, LEADER_HINT_CHECK_MS * 3));
  await settle();
  assert.deepEqual(asked, ["10.0.0.2:7000"], "told at the start");
  leader = ""; // this node now leads
  await settle();
  leader = "10.0.0.3:7000";
  await settle();
  await settle();
  assert.deepEqual(asked, ["10.0.0.2:7000", "", "10.0.0.3:7000"], "told of each move, once");
  assert.deepEqual(notAsked, [], "a watcher that did not ask is told nothing");

  leader = "";
  const leading = watch(true);
  await settle();
  assert.deepEqual(leading, [], "nothing at the start while this node leads");
});
