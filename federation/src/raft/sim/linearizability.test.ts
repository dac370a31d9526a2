// The checker must be able to fail: known non-linearizable histories are rejected, linearizable
// ones (including concurrent and unknown-outcome operations) accepted.
import assert from "node:assert/strict";
import { test } from "node:test";
import { checkOperations, type KvInput, type KvOutput, kvModel, type Operation } from "./linearizability.js";

type Op = Operation<KvInput, KvOutput>;

function put(clientId: number, key: string, value: string, call: number, ret: number): Op {
  return { clientId, input: { op: "put", key, value }, call, ret, output: { value: "" } };
}

function get(clientId: number, key: string, value: string, call: number, ret: number): Op {
  return { clientId, input: { op: "get", key }, call, ret, output: { value } };
}

test("a stale read after a completed write is not linearizable", () => {
  const h = [put(1, "x", "1", 0, 10), get(2, "x", "", 20, 30)];
  assert.equal(checkOperations(kvModel, h).result, "illegal");
});

test("a read concurrent with a write may see either value", () => {
  for (const seen of ["", "1"]) {
    const h = [put(1, "x", "1", 0, 10), get(2, "x", seen, 5, 15)];
    assert.equal(checkOperations(kvModel, h).result, "ok", `read of "${seen}"`);
  }
});

test("reads must not go back in time (new-old inversion)", () => {
  // Two sequential reads during a long write: the first sees the new value, the later one the old.
  const h = [put(1, "x", "1", 0, 100), get(2, "x", "1", 10, 20), get(3, "x", "", 30, 40)];
  assert.equal(checkOperations(kvModel, h).result, "illegal");
  const ok = [put(1, "x", "1", 0, 100), get(2, "x", "", 10, 20), get(3, "x", "1", 30, 40)];
  assert.equal(checkOperations(kvModel, ok).result, "ok");
});

test("a write with unknown outcome may or may not have happened", () => {
  const h1 = [put(1, "x", "1", 0, Infinity), get(2, "x", "1", 50, 60), get(2, "x", "1", 70, 80)];
  assert.equal(checkOperations(kvModel, h1).result, "ok");
  const h2 = [put(1, "x", "1", 0, Infinity), get(2, "x", "", 50, 60)];
  assert.equal(checkOperations(kvModel, h2).result, "ok");
  // ...but once observed it cannot un-happen.
  const h3 = [put(1, "x", "1", 0, Infinity), get(2, "x", "1", 50, 60), get(2, "x", "", 70, 80)];
  assert.equal(checkOperations(kvModel, h3).result, "illegal");
});

test("keys are checked independently and every key must pass", () => {
  const h = [
    put(1, "a", "1", 0, 10),
    get(2, "a", "1", 20, 30),
    put(1, "b", "2", 0, 10),
    get(2, "b", "9", 20, 30),
  ];
  const r = checkOperations(kvModel, h);
  assert.equal(r.result, "illegal");
  assert.equal(r.failedPartition, 1);
});

test("a larger concurrent history that is linearizable by construction passes", () => {
  // Writes at distinct instants; reads return the latest write before their linearization point.
  const h: Op[] = [];
  let value = "";
  let t = 0;
  for (let k = 0; k < 200; k++) {
    t += 10;
    if (k % 3 === 0) {
      value = String(k);
      h.push(put(k % 5, "x", value, t - 8, t + 8));
    } else {
      h.push(get(k % 5, "x", value, t - 2, t + 3));
    }
  }
  const r = checkOperations(kvModel, h);
  assert.equal(r.result, "ok");
});

test("the search budget yields unknown, never a guess", () => {
  const h: Op[] = [];
  for (let k = 0; k < 30; k++) h.push(put(k, "x", String(k), 0, 1000));
  h.push(get(99, "x", "nope", 2000, 2001));
  assert.equal(checkOperations(kvModel, h, 50).result, "unknown");
});
