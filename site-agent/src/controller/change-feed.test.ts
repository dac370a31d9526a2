import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger, topologypb } from "@isthmus/schema";
import { ChangeFeed } from "./change-feed.js";
import type { Database } from "./db/database.js";
import { encodedChangeBytes } from "./topology-store.js";

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
  assert.equal(feed.recentAfter(1), undefined);
  assert.deepEqual(
    feed.recentAfter(2)?.map((c) => c.revision),
    [3, 4, 5, 6, 7],
  );
  // A change of ~3 KB: the older ones go until the ring fits 4 000 bytes again.
  feed.committed(change(8, 30));
  assert.deepEqual(
    feed.recentAfter(7)?.map((c) => c.revision),
    [8],
  );
  assert.equal(feed.recentAfter(6), undefined);
  // A change over the bound on its own is delivered but not kept; resuming before it reads the log.
  feed.committed(change(9, 60));
  assert.deepEqual(seen.slice(-2), [8, 9]);
  assert.deepEqual(feed.recentAfter(9), []);
  assert.equal(feed.recentAfter(8), undefined);
  feed.committed(change(10, 1));
  assert.deepEqual(
    feed.recentAfter(9)?.map((c) => c.revision),
    [10],
  );
});
