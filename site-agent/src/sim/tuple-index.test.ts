import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { ConntrackTable, ctKey, ip4CtKey, ip4CtTag } from "./conntrack.js";
import { tag } from "./topology-view.js";
import { TupleIndex } from "./tuple-index.js";

test("tuple index: random sets and deletes agree with a Map (growth, probing, backward shift, numbers)", () => {
  // Few distinct words so probe runs collide and deletions shift entries back.
  const word = fc.constantFrom(0, 1, 2, 0xffffffff, 0x80000000);
  const op = fc.record({
    del: fc.boolean(),
    a: word,
    b: word,
    c: word,
    d: word,
    v: fc.integer({ min: 1, max: 1e6 }),
  });
  fc.assert(
    fc.property(fc.array(op, { maxLength: 600 }), (ops) => {
      const idx = new TupleIndex();
      const model = new Map<string, number>();
      for (const o of ops) {
        const k = `${o.a},${o.b},${o.c},${o.d}`;
        if (o.del) assert.equal(idx.delete(o.a, o.b, o.c, o.d), model.delete(k));
        else {
          idx.set(o.a, o.b, o.c, o.d, o.v, o.v / 2);
          model.set(k, o.v);
        }
        assert.equal(idx.size, model.size);
      }
      for (const [k, v] of model) {
        const [a, b, c, d] = k.split(",").map(Number) as [number, number, number, number];
        assert.equal(idx.get(a, b, c, d), v);
        assert.equal(idx.numAt(idx.slot(a, b, c, d)), v / 2, "the number moves with its id");
      }
      let seen = 0;
      idx.forEach((a, b, c, d, v, n) => {
        assert.equal(model.get(`${a},${b},${c},${d}`), v);
        assert.equal(n, v / 2);
        seen++;
      });
      assert.equal(seen, model.size);
    }),
    { numRuns: 200, seed: 6 },
  );
});

test("conntrack: an IPv4 entry is the same entry by key and by tuple; other keys and the bound still hold", () => {
  const ct = new ConntrackTable(3, 1000);
  const t = {
    ipVersion: 4,
    proto: 6,
    src: 0xc0a80001,
    dst: 167772673,
    src6: [],
    dst6: [],
    sport: 40000,
    dport: 22,
  };
  const key = ctKey("", t);
  assert.equal(ct.commitTuple(6, t.src, 40000, t.dst, 22, "bridge-1", 0), 1000);
  assert.equal(ct.committedZone, "bridge-1");
  assert.deepEqual(ct.get(key), { key, zoneId: "bridge-1", expiresAt: 1000 }, "found by its key string");
  assert.ok(ct.has(key, 10));
  assert.ok(ct.hasTuple(6, t.src, 40000, t.dst, 22, 10));
  assert.ok(!ct.hasTuple(6, t.src, 40001, t.dst, 22, 10));
  assert.deepEqual(
    ct.commit(key, "bridge-2", 5),
    { key, zoneId: "bridge-1", expiresAt: 1005 },
    "committing by key refreshes the same entry (its zone stays)",
  );
  assert.equal(ct.size, 1);
  ct.touch(key, 500);
  assert.equal(ct.get(key)?.expiresAt, 1500);
  // IPv6 and foreign-zone keys live beside it; the bound counts both.
  const v6 = ctKey("", { ...t, ipVersion: 6, src6: [0xfd000000, 0, 0, 1], dst6: [0xfd000000, 0, 0, 2] });
  assert.ok(ct.commit(v6, "bridge-1", 0));
  assert.ok(ct.put({ key: "zone|6|1|2|3|4", zoneId: "x", expiresAt: 100 }));
  assert.equal(ct.size, 3);
  assert.equal(ct.commit(ctKey("", { ...t, sport: 1 }), "bridge-1", 0), null, "full");
  assert.equal(ct.refused, 1);
  const stale = ct.expire(1200);
  assert.ok(stale.includes(`ct:${v6}`) && stale.includes("ct:zone|6|1|2|3|4"));
  assert.ok(!stale.includes(`ct:${key}`), "refreshed by touch");
  assert.deepEqual(ct.expire(2000), [`ct:${key}`]);
  assert.equal(ct.size, 0);
  assert.ok(!ct.hasTuple(6, t.src, 40000, t.dst, 22, 0));
});

test("conntrack: zone names stay right when the table forgets zones no entry uses", () => {
  const ct = new ConntrackTable(20000, 1000);
  // More distinct zones than the name table keeps: the early ones expire, later commits renumber.
  for (let i = 0; i < 6000; i++) ct.commitTuple(6, i, 1, 2, 3, `zone-${i}`, i < 5000 ? 0 : 500);
  assert.equal(ct.expire(1200).length, 5000);
  for (let i = 6000; i < 11000; i++) ct.commitTuple(6, i, 1, 2, 3, `zone-${i}`, 500);
  assert.equal(ct.size, 6000);
  for (const i of [5000, 5999, 6000, 10999]) {
    assert.equal(
      ct.get(ctKey("", { ipVersion: 4, proto: 6, src: i, dst: 2, src6: [], dst6: [], sport: 1, dport: 3 }))
        ?.zoneId,
      `zone-${i}`,
    );
  }
});

test("conntrack: IPv4 keys and tags built from cached parts equal the one-piece key of the tuple", () => {
  // Few distinct values: parts are reused, and slots are taken over by other tuples.
  const n = fc.constantFrom(0, 1, 22, 65535, 0x7fffffff, 0x80000000, 0xffffffff);
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.constantFrom(1, 6, 17), n, n, n, n), { maxLength: 400 }), (ts) => {
      for (const [proto, src, sport, dst, dport] of ts) {
        const t = { ipVersion: 4, proto, src, dst, src6: [], dst6: [], sport, dport };
        assert.equal(ip4CtKey(proto, src, sport, dst, dport), ctKey("", t));
        assert.equal(ip4CtTag(proto, src, sport, dst, dport), tag.ct(ctKey("", t)));
      }
    }),
    { numRuns: 50, seed: 7 },
  );
});
