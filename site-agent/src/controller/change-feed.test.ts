import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger, topologypb } from "@isthmus/schema";
import { ChangeFeed } from "./change-feed.js";
import type { Database } from "./db/database.js";
import { encodedChangeBytes } from "./topology-store.js";

/** The revisions recentAfter answers with (or what it answers instead of changes). */
function revisionsAfter(feed: ChangeFeed, revision: number): number[] | "snapshot" | undefined {
  const r = feed.recentAfter(revision);
  return Array.isArray(r) ? r.map((c) => c.revision) : r;
}

/** A change at `revision` with `rules` rule upserts of ~100 encoded bytes each. */
function change(revision: number, rules: number): topologypb.TopologyChange {
  return {
    revision,
    upserts: Array.from({ length: rules }, (_, i) => ({
      rule: topologypb.Rule.fromPartial({ id: `r-${revision}-${i}`.padEnd(90, "x"), chainId: "c" }),
    })),
    deletes: [],
  };
}

test("the feed's ring of recent changes is bounded by bytes as well as by count", () => {
  const small = encodedChangeBytes(change(0, 1));
  const large = encodedChangeBytes(change(8, 30));
  // Never started (no database reads): commits are handed over from revision 0 on. The byte
  // bound holds one large change and one small one.
  const feed = new ChangeFeed(
    {} as Database,
    { pollMs: 1000, ringSize: 5, ringBytes: large + small, batch: 10 },
    createLogger({ name: "t", level: "silent" }),
  );
  const seen: number[] = [];
  feed.subscribe((c) => seen.push(c.revision));
  for (let r = 0; r < 8; r++) feed.committed(change(r, 1));
  assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6, 7]);
  // By count: the last 5.
  assert.equal(revisionsAfter(feed, 1), undefined);
  assert.deepEqual(revisionsAfter(feed, 2), [3, 4, 5, 6, 7]);
  // A change of ~3 KB: the older ones go until the ring fits 4 000 bytes again.
  feed.committed(change(8, 30));
  assert.deepEqual(revisionsAfter(feed, 7), [8]);
  assert.equal(revisionsAfter(feed, 6), undefined);
  // A change over the bound on its own is delivered but not kept; resuming before it reads the log.
  feed.committed(change(9, 60));
  assert.deepEqual(seen.slice(-2), [8, 9]);
  assert.deepEqual(revisionsAfter(feed, 9), []);
  assert.equal(revisionsAfter(feed, 8), undefined);
  feed.committed(change(10, 1));
  assert.deepEqual(revisionsAfter(feed, 9), [10]);
});

test("a change too large to send as one is delivered but not kept, and a resume before it is owed a snapshot", () => {
  const small = encodedChangeBytes(change(0, 1));
  const large = encodedChangeBytes(change(5, 30));
  const feed = new ChangeFeed(
    {} as Database,
    { pollMs: 1000, ringSize: 100, ringBytes: 100 * large, batch: 10, maxChangeBytes: large - 1 },
    createLogger({ name: "t", level: "silent" }),
  );
  const seen: number[] = [];
  feed.subscribe((c) => seen.push(c.revision));
  for (let r = 0; r < 5; r++) feed.committed(change(r, 1));
  assert.deepEqual(revisionsAfter(feed, 2), [3, 4]);
  feed.committed(change(5, 30));
  for (let r = 6; r < 8; r++) feed.committed(change(r, 1));
  assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6, 7], "every change is delivered, the large one too");
  // Anything before the large change needs a snapshot: the ring need not (and does not) reach back.
  for (const r of [0, 2, 4]) assert.equal(revisionsAfter(feed, r), "snapshot", `resume from ${r}`);
  assert.deepEqual(revisionsAfter(feed, 5), [6, 7]);
  assert.deepEqual(revisionsAfter(feed, 7), []);
  assert.ok(small < large - 1);
});

/**
 * A change log in memory answering readChangesAfter's three queries; each query waits for
 * `gate()` so a test can commit while a poll is in flight. Counts the rows it returned.
 */
function logDatabase(log: Map<number, Buffer>, gate: () => Promise<void>) {
  const stats = { rowsRead: 0 };
  const db = {
    // readChangesAfter's one statement: the head (current, oldest) joined with the changes after $1.
    async statement(_label: string, _sql: string, params: unknown[] = []) {
      await gate();
      const revisions = [...log.keys()].sort((a, b) => a - b);
      const head = { current: revisions.at(-1) ?? 0, oldest: revisions[0] ?? null };
      const [after, limit] = params as [number, number];
      const rows = revisions
        .filter((r) => r > after)
        .slice(0, limit)
        .map((r) => ({ ...head, revision: r, body: log.get(r)! }));
      stats.rowsRead += rows.length;
      return { rows: rows.length > 0 ? rows : [{ ...head, revision: null, body: null }] };
    },
  } as unknown as Database;
  return { db, stats };
}

test("own commits that arrive while a poll is in flight are delivered in order, as committed, without decoding their rows", async () => {
  const log = new Map<number, Buffer>();
  const commit = (c: topologypb.TopologyChange) =>
    log.set(c.revision, Buffer.from(topologypb.TopologyChange.encode(c).finish()));
  commit(change(1, 1));
  let release: (() => void) | undefined;
  let held = false;
  const { db } = logDatabase(log, () => (held ? new Promise<void>((r) => (release = r)) : Promise.resolve()));
  const feed = new ChangeFeed(
    db,
    { pollMs: 60_000, ringSize: 100, batch: 100 },
    createLogger({ name: "t", level: "silent" }),
  );
  await feed.start(); // head = 1, from the log
  try {
    const seen: topologypb.TopologyChange[] = [];
    feed.subscribe((c) => seen.push(c));

    // A change of the other replica (2) is in the log; a poll starts reading and is held.
    commit(change(2, 1));
    held = true;
    const polled = feed.poll();
    // Meanwhile this replica commits 3, 4, 5 (in the log too, as a commit puts them there).
    const own = [change(3, 2), change(4, 1), change(5, 3)];
    for (const c of own) {
      commit(c);
      feed.committed(c);
    }
    assert.equal(seen.length, 0, "nothing is delivered before the poll returns");
    held = false;
    while (release) {
      const r = release;
      release = undefined;
      r();
      await new Promise((x) => setImmediate(x));
    }
    await polled;
    assert.deepEqual(
      seen.map((c) => c.revision),
      [2, 3, 4, 5],
    );
    // 3, 4 and 5 are the very objects committed (with their encodings), not decoded copies.
    for (const [i, c] of own.entries()) assert.equal(seen[i + 1], c, `revision ${c.revision}`);
    assert.deepEqual(revisionsAfter(feed, 1), [2, 3, 4, 5]);
    // Nothing is delivered twice by later polls.
    await feed.poll();
    assert.equal(seen.length, 4);
  } finally {
    await feed.stop();
  }
});
