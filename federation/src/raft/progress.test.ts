// Inflights (the per-follower pipeline window) against a plain array model: it is full exactly when
// the count or byte bound is reached, and acknowledgements free everything up to an index.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { Inflights } from "./progress.js";

type Op = { kind: "add"; bytes: number } | { kind: "free"; upTo: number } | { kind: "freeFirst" };

test("Inflights matches a reference model", () => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant("add" as const), bytes: fc.nat(40) }),
    fc.record({ kind: fc.constant("free" as const), upTo: fc.nat(200) }),
    fc.record({ kind: fc.constant("freeFirst" as const) }),
  );
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 8 }),
      fc.nat(100),
      fc.array(op, { maxLength: 300 }),
      (maxCount, maxBytes, ops: Op[]) => {
        const inf = new Inflights(maxCount, maxBytes);
        let model: { index: number; bytes: number }[] = [];
        let next = 1;
        const full = () =>
          model.length >= maxCount || (maxBytes > 0 && model.reduce((a, e) => a + e.bytes, 0) >= maxBytes);
        for (const o of ops) {
          if (o.kind === "add") {
            if (full()) {
              assert.throws(() => inf.add(next, o.bytes));
              continue;
            }
            inf.add(next, o.bytes);
            model.push({ index: next, bytes: o.bytes });
            next += 1 + (o.bytes % 3);
          } else if (o.kind === "free") {
            inf.freeLE(o.upTo);
            model = model.filter((e) => e.index > o.upTo);
          } else {
            inf.freeFirstOne();
            model = model.slice(1);
          }
          assert.equal(inf.count, model.length);
          assert.equal(
            inf.totalBytes,
            model.reduce((a, e) => a + e.bytes, 0),
          );
          assert.equal(inf.full(), full());
        }
      },
    ),
  );
});
