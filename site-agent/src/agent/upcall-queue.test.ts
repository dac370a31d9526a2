import assert from "node:assert/strict";
import { test } from "node:test";
import { UpcallQueue } from "./upcall-queue.js";

test("a noisy source fills only its own queue and the consumer alternates between sources", () => {
  const q = new UpcallQueue<number>({ perSource: 3, total: 100 });
  let accepted = 0;
  for (let i = 0; i < 50; i++) if (q.push("noisy", i)) accepted++;
  assert.equal(accepted, 3);
  assert.equal(q.dropped.get("noisy"), 47);
  assert.ok(q.push("quiet", 100));
  const order = [];
  for (let x = q.shift(); x; x = q.shift()) order.push(x.source);
  assert.deepEqual(order, ["noisy", "quiet", "noisy", "noisy"]);
  assert.equal(q.size, 0);
});

test("the total bound holds across sources, and dropping a source frees its share", () => {
  const q = new UpcallQueue<number>({ perSource: 10, total: 4 });
  for (const s of ["a", "b", "c", "d", "e"]) q.push(s, 1);
  assert.equal(q.size, 4);
  assert.equal(q.dropped.get("e"), 1);
  q.drop("a");
  assert.equal(q.size, 3);
  assert.ok(q.push("e", 2));
  const seen = new Set<string>();
  for (let x = q.shift(); x; x = q.shift()) seen.add(x.source);
  assert.deepEqual([...seen].sort(), ["b", "c", "d", "e"]);
});

test("take() hands out items in the same fair order as shift(), and an emptied source queues again", () => {
  const q = new UpcallQueue<number>({ perSource: 4, total: 16 });
  q.push("a", 1);
  q.push("a", 2);
  q.push("b", 3);
  const order: number[] = [];
  for (let x = q.take(); x !== undefined; x = q.take()) order.push(x);
  assert.deepEqual(order, [1, 3, 2]);
  assert.equal(q.size, 0);
  assert.ok(q.push("a", 4));
  assert.deepEqual(q.shift(), { source: "a", item: 4 });
  assert.equal(q.take(), undefined);
});
