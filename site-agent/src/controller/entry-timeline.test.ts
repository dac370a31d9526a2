import assert from "node:assert/strict";
import { test } from "node:test";
import { EntryTimeline, type EntryTiming } from "./entry-timeline.js";

const at = (index: number): EntryTiming => ({
  index,
  revision: index,
  receivedAt: index,
  startedAt: index,
  translatedAt: index,
  writtenAt: index,
  committedAt: index,
});

test("the timeline keeps the newest entries, oldest first, and filters by index", () => {
  const t = new EntryTimeline(3);
  for (let i = 1; i <= 2; i++) t.record(at(i));
  assert.deepEqual(
    t.since().map((e) => e.index),
    [1, 2],
  );
  for (let i = 3; i <= 7; i++) t.record(at(i));
  assert.deepEqual(
    t.since().map((e) => e.index),
    [5, 6, 7],
  );
  assert.deepEqual(
    t.since(5).map((e) => e.index),
    [6, 7],
  );
  const none = new EntryTimeline(0);
  none.record(at(1));
  assert.deepEqual(none.since(), []);
  assert.throws(() => new EntryTimeline(-1), /non-negative integer/);
});
