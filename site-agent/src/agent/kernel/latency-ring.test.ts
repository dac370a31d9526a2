import assert from "node:assert/strict";
import { test } from "node:test";
import { LatencyRing } from "./latency-ring.js";

test("a latency ring keeps the latest samples in order and hands out those after a mark", () => {
  const r = new LatencyRing(4);
  for (const x of [1, 2, 3]) r.record(x);
  assert.deepEqual(r.since(), [1, 2, 3]);
  const mark = r.total;
  for (const x of [4, 5, 6]) r.record(x);
  assert.deepEqual(r.since(), [3, 4, 5, 6], "oldest overwritten beyond capacity");
  assert.deepEqual(r.since(mark), [4, 5, 6]);
  assert.deepEqual(r.since(r.total), []);
  assert.throws(() => new LatencyRing(0), /capacity 0/);
});
