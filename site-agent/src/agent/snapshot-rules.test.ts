// A snapshot's packed rules (snapshot-rules.ts): indexed by id and chain as a map of objects would
// be, across the parts a snapshot comes in; and a view built from them (sim/packed-rules.ts)
// compiles, tags and changes as a view built from the same rules as objects.
import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import fc from "fast-check";
import { TopologyView } from "../sim/topology-view.js";
import { type DecodedSnapshot, joinSnapshot, type SnapshotRules } from "./snapshot-rules.js";
import { WatchEventDecoder } from "./watch-event-decoder.js";

type Obj = topologypb.TopologyObject;
const RA = topologypb.RuleAction;
const K = topologypb.TopologyKind;

function rule(id: string, chainId: string, position: number, action = RA.RULE_ACTION_DROP): Obj {
  return {
    rule: topologypb.Rule.fromPartial({
      id,
      chainId,
      position,
      action,
      condition: topologypb.Condition.fromPartial({ nwProto: position % 7 }),
    }),
  };
}

/** The objects as the controller sends them, in `parts` messages, decoded and joined as the watch client does. */
function decodeInParts(
  objects: Obj[],
  parts: number,
  d = new WatchEventDecoder(),
): ReturnType<typeof joinSnapshot> {
  const per = Math.max(1, Math.ceil(objects.length / parts));
  const decoded: DecodedSnapshot[] = [];
  for (let at = 0; at < objects.length || decoded.length === 0; at += per) {
    const slice = objects.slice(at, at + per);
    const last = at + per >= objects.length;
    const ev = last
      ? { snapshot: { revision: 9, objects: slice } }
      : { snapshotPart: { revision: 9, objects: slice } };
    const got = d.decode(topologypb.WatchTopologyResponse.encode(ev).finish());
    decoded.push((got.snapshot ?? got.snapshotPart)!);
  }
  return joinSnapshot(decoded);
}

test("packed rules are found by id and listed by chain as a map of the same rules, across parts", () => {
  // Ids from a small alphabet (so some repeat: the later one is current), some not ASCII.
  const id = fc.constantFrom("r1", "r2", "r3", "règle-4", "r5", "r6", "правило-7", "r8");
  const chain = fc.constantFrom("c1", "c2", "chaîne-3");
  fc.assert(
    fc.property(
      fc.array(fc.tuple(id, chain), { maxLength: 40 }),
      fc.integer({ min: 1, max: 5 }),
      fc.array(id, { maxLength: 6 }),
      (rules, parts, retired) => {
        const objects = rules.map(([i, c], n) => rule(i, c, n));
        const packed = decodeInParts(objects, parts).packedRules as SnapshotRules | undefined;
        if (rules.length === 0) {
          assert.equal(packed, undefined);
          return;
        }
        assert.ok(packed);
        assert.equal(packed.count, rules.length);
        // The model: the last rule with each id is current, unless retired.
        const current = new Map<string, number>();
        for (const [n, [i]] of rules.entries()) current.set(i, n);
        for (const r of retired) {
          const n = packed.find(r);
          assert.equal(n, current.get(r) ?? -1, `find ${r} before retiring`);
          if (n >= 0) packed.retire(n);
          current.delete(r);
        }
        for (const [i] of rules) assert.equal(packed.find(i), current.get(i) ?? -1, `find ${i}`);
        assert.equal(packed.find("absent"), -1);
        for (const c of ["c1", "c2", "chaîne-3", "absent"]) {
          const want = rules.flatMap(([i, rc], n) => (rc === c && current.get(i) === n ? [n] : []));
          assert.deepEqual(packed.rulesOf(c), want, `rules of ${c}`);
        }
        rules.forEach(([i, c], n) => {
          assert.equal(packed.chainOf(n), c);
          assert.equal(packed.idOf(n), i);
          const r = packed.rule(n);
          assert.deepEqual([r.id, r.chainId, r.position], [i, c, n]);
        });
      },
    ),
    { numRuns: 300 },
  );
});

test("one message with many chains (the chain table grows) files each rule under its own chain", () => {
  const objects: Obj[] = [];
  for (let c = 0; c < 300; c++) for (const k of [0, 1]) objects.push(rule(`r${c}-${k}`, `chaîne-${c}`, k));
  // Interleaved: every chain's second rule after all the first ones.
  objects.sort((a, b) => a.rule!.position - b.rule!.position);
  const event = new WatchEventDecoder().decode(
    topologypb.WatchTopologyResponse.encode({ snapshot: { revision: 1, objects } }).finish(),
  );
  // Each chain once in the message's table, though its id is not ASCII (bytes ≠ characters).
  assert.equal(event.snapshot!.ruleChunk!.chains.ids.length, 300);
  const packed = decodeInParts(objects, 1).packedRules as SnapshotRules;
  assert.equal(packed.count, 600);
  for (let c = 0; c < 300; c++) {
    assert.deepEqual(
      packed.rulesOf(`chaîne-${c}`).map((i) => packed.idOf(i)),
      [`r${c}-0`, `r${c}-1`],
    );
  }
});

test("one decoder: a snapshot's parts share one chain table, the next snapshot starts its own; a broken snapshot's parts change nothing", () => {
  const d = new WatchEventDecoder();
  const a = Array.from({ length: 60 }, (_, i) => rule(`a${i}`, `ca-${i % 7}`, i));
  const first = decodeInParts(a, 3, d).packedRules as SnapshotRules;
  // The parts of a snapshot whose stream broke before its last message (the client drops them).
  for (const slice of [a.slice(0, 5), a.slice(5, 9)]) {
    d.decode(
      topologypb.WatchTopologyResponse.encode({ snapshotPart: { revision: 3, objects: slice } }).finish(),
    );
  }
  const b = Array.from({ length: 40 }, (_, i) => rule(`b${i}`, i % 2 ? "cb-odd" : "ca-1", i));
  const second = decodeInParts(b, 4, d).packedRules as SnapshotRules;
  const ids = (p: SnapshotRules, chain: string) => p.rulesOf(chain).map((i) => p.idOf(i));
  for (let c = 0; c < 7; c++) {
    assert.deepEqual(
      ids(first, `ca-${c}`),
      a.filter((o) => o.rule!.chainId === `ca-${c}`).map((o) => o.rule!.id),
    );
  }
  assert.deepEqual(
    ids(second, "ca-1"),
    b.filter((_, i) => i % 2 === 0).map((o) => o.rule!.id),
  );
  assert.deepEqual(
    ids(second, "cb-odd"),
    b.filter((_, i) => i % 2 === 1).map((o) => o.rule!.id),
  );
  assert.deepEqual(ids(second, "ca-2"), [], "a chain only the broken parts named has no rules");
  assert.deepEqual(ids(first, "cb-odd"), [], "the first snapshot knows nothing of the second's chains");

  // Messages of two snapshots cannot be joined as one.
  const partOf = (objects: Obj[]) =>
    d.decode(topologypb.WatchTopologyResponse.encode({ snapshot: { revision: 4, objects } }).finish())
      .snapshot!;
  assert.throws(() => joinSnapshot([partOf(a.slice(0, 2)), partOf(b.slice(0, 2))]), /different snapshots/);
});

test("a chain id whose bytes are not UTF-8 is found by its decoded form", () => {
  // TopologyObject { rule { id "r1", chain_id = 'c' 0xFF } } in a snapshot at revision 1.
  const ruleBytes = [0x0a, 2, 0x72, 0x31, 0x12, 2, 0x63, 0xff];
  const object = [0x3a, ruleBytes.length, ...ruleBytes];
  const snapshot = [0x08, 1, 0x12, object.length, ...object];
  const event = new WatchEventDecoder().decode(Buffer.from([0x0a, snapshot.length, ...snapshot]));
  const packed = joinSnapshot([event.snapshot!]).packedRules as SnapshotRules;
  assert.deepEqual(
    packed.rulesOf("c\uFFFD").map((i) => packed.idOf(i)),
    ["r1"],
  );
  assert.equal(packed.chainOf(0), "c\uFFFD");
});

test("a snapshot without rules has no packed rules; the object limit counts rules", () => {
  const d = new WatchEventDecoder();
  const s = d.decode(
    topologypb.WatchTopologyResponse.encode({
      snapshot: { revision: 1, objects: [{ chain: { id: "c1", name: "" } }] },
    }).finish(),
  ).snapshot!;
  assert.equal(s.ruleChunk, undefined);
  assert.equal(joinSnapshot([s]).packedRules, undefined);
  assert.throws(() => joinSnapshot([]), /no parts/);
});

/** Chains c0…c3 and rules r0…r11 spread over them. */
function chainsAndRules(): Obj[] {
  const objects: Obj[] = [0, 1, 2, 3].map((i) => ({ chain: { id: `c${i}`, name: `chain ${i}` } }));
  for (let i = 0; i < 12; i++)
    objects.push(rule(`r${i}`, `c${i % 3}`, i, i % 2 ? RA.RULE_ACTION_ACCEPT : RA.RULE_ACTION_DROP));
  return objects;
}

function compiled(view: TopologyView, chain: string): unknown {
  return view.chains.get(chain)?.rules.map((r) => [r.id, r.position, r.action, r.cond?.nwProto]);
}

test("a view from packed rules compiles, tags and changes as a view from the same rules as objects", () => {
  const op = fc.oneof(
    // Replace a rule (maybe into another chain, maybe at another position).
    fc.tuple(fc.nat(13), fc.nat(3), fc.nat(20)).map(([i, c, p]) => ({
      upserts: [rule(`r${i}`, `c${c}`, p)],
      deletes: [] as topologypb.TopologyRef[],
    })),
    // Delete a rule (maybe one that is gone already).
    fc.nat(13).map((i) => ({ upserts: [] as Obj[], deletes: [{ kind: K.TOPOLOGY_KIND_RULE, id: `r${i}` }] })),
    // Delete a chain, or bring one back.
    fc.nat(3).map((c) => ({ upserts: [] as Obj[], deletes: [{ kind: K.TOPOLOGY_KIND_CHAIN, id: `c${c}` }] })),
    fc.nat(3).map((c) => ({
      upserts: [{ chain: { id: `c${c}`, name: "again" } }],
      deletes: [] as topologypb.TopologyRef[],
    })),
  );
  fc.assert(
    fc.property(
      fc.array(op, { maxLength: 25 }),
      fc.integer({ min: 1, max: 3 }),
      fc.array(fc.nat(3)),
      (changes, parts, peeks) => {
        const objects = chainsAndRules();
        const snapshot = decodeInParts(objects, parts);
        assert.ok(snapshot.packedRules);
        const packed = new TopologyView(snapshot.objects, 1, snapshot.packedRules);
        const plain = new TopologyView(objects, 1);
        let revision = 1;
        changes.forEach((c, n) => {
          // Some chains compiled before the change (a compiled chain must be dropped by it).
          const peek = `c${peeks[n % Math.max(1, peeks.length)] ?? 0}`;
          assert.deepEqual(compiled(packed, peek), compiled(plain, peek), `chain ${peek} before change ${n}`);
          const change = { revision: ++revision, ...c };
          assert.deepEqual(packed.apply(change).sort(), plain.apply(change).sort(), `tags of change ${n}`);
        });
        for (const c of ["c0", "c1", "c2", "c3"])
          assert.deepEqual(compiled(packed, c), compiled(plain, c), `chain ${c}`);
      },
    ),
    { numRuns: 200 },
  );
});
