import assert from "node:assert/strict";
import { test } from "node:test";
import { numberShard, ShardedMap, stringShard } from "./flow-sharded-map.js";

test("a sharded map behaves as a Map: get, set, replace, delete, size, every entry once", () => {
  const m = new ShardedMap<string, number>(stringShard);
  const ref = new Map<string, number>();
  // A fixed pseudo-random walk of sets and deletes over 3000 keys, checked against a Map.
  let x = 12345;
  for (let i = 0; i < 20000; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const k = `key-${x % 3000}`;
    if (x % 5 === 0) assert.equal(m.delete(k), ref.delete(k));
    else {
      m.set(k, i);
      ref.set(k, i);
    }
    assert.equal(m.size, ref.size);
  }
  for (const [k, v] of ref) assert.equal(m.get(k), v);
  assert.equal(m.get("absent"), undefined);
  assert.equal(m.has("absent"), false);
  const seen = new Map<string, number>();
  m.forEach((v, k) => {
    assert.ok(!seen.has(k), `${k} visited twice`);
    seen.set(k, v);
  });
  assert.deepEqual(new Map([...seen].sort()), new Map([...ref].sort()));
  assert.equal(m.valuesArray().length, ref.size);
  m.clear();
  assert.equal(m.size, 0);
  assert.equal(m.get([...ref.keys()][0]!), undefined);
});

test("entries spread over the shards, and deleting while walking is safe", () => {
  const seen = new Set<number>();
  for (let i = 0; i < 4096; i++) seen.add(stringShard(`ct:|17|${i}|20000|167903234|9`));
  assert.equal(seen.size, 64, "every shard used by sequential-looking keys");
  for (const n of [0, 63, 64, 0xffffffff]) {
    const s = numberShard(n);
    assert.ok(Number.isInteger(s) && s >= 0 && s < 64, `${n} → ${s}`);
  }
  const m = new ShardedMap<number, number>(numberShard);
  for (let i = 0; i < 1000; i++) m.set(i, i);
  m.forEach((v, k) => {
    if (v % 2 === 0) m.delete(k);
  });
  assert.equal(m.size, 500);
  for (let i = 0; i < 1000; i++) assert.equal(m.has(i), i % 2 === 1);
});
