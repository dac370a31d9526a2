import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import fc from "fast-check";
import { type DecodedSnapshot, joinSnapshot, type SnapshotRules } from "./snapshot-rules.js";
import { eventOf, ruleWithUnknownField } from "./testing/wire.js";
import { objectKind } from "./topology-store.js";
import { CONDITION_FIELDS, RULE_FIELDS, WatchEventDecoder } from "./watch-event-decoder.js";

type Obj = topologypb.TopologyObject;
const { RULE_ACTION_ACCEPT: ACCEPT, RULE_ACTION_DROP: DROP } = topologypb.RuleAction;

function rule(id: string, chainId: string, condition: Partial<topologypb.Condition>, extra = {}): Obj {
  return {
    rule: topologypb.Rule.fromPartial({
      id,
      chainId,
      position: 10,
      action: DROP,
      condition: topologypb.Condition.fromPartial(condition),
      intentId: "intent-1",
      ...extra,
    }),
  };
}

/** One object of every kind, with repeated strings, non-ASCII text and shared conditions. */
function sample(): Obj[] {
  const P = topologypb;
  return [
    { host: P.Host.fromPartial({ id: "h1", name: "hôte-1", tunnelIp: "10.0.0.1", tunnelPort: 4789 }) },
    { bridge: P.Bridge.fromPartial({ id: "b1", name: "net", networkId: "n1", tunnelKey: 0x100001 }) },
    { router: P.Router.fromPartial({ id: "r1", name: "router", transitTunnelKey: 0x100002 }) },
    {
      port: P.Port.fromPartial({
        id: "p1",
        deviceId: "b1",
        hostId: "h1",
        ips: ["172.16.0.2", "fd00::2"],
        portGroupIds: ["pg1"],
        mac: "02:00:00:00:00:01",
      }),
    },
    { route: P.Route.fromPartial({ id: "rt1", routerId: "r1", dstPrefix: "0.0.0.0/0", weight: 3 }) },
    { chain: P.Chain.fromPartial({ id: "c1", name: "chaîne ✓" }) },
    rule("rule-1", "c1", { etherType: 0x0806 }),
    rule("rule-2", "c1", { etherType: 0x0806 }, { action: ACCEPT }),
    rule("rule-3", "c1", { ethSrc: "02:00:00:00:00:01", invEthSrc: true, tpDst: { start: 1, end: 2 } }),
    rule(
      "rule-4",
      "c1",
      { inPortIds: ["p1", "p2"], nwSrc: "10.0.0.0/8" },
      {
        jumpChainId: "c2",
        natTargets: [{ ipStart: "1.1.1.1", ipEnd: "1.1.1.2", portStart: 1000, portEnd: 2000 }],
      },
    ),
    { rule: topologypb.Rule.fromPartial({ id: "rule-5", chainId: "c1" }) }, // no condition at all
    { ipAddrGroup: P.IpAddrGroup.fromPartial({ id: "g1", addresses: ["172.16.0.2"] }) },
    { portGroup: P.PortGroup.fromPartial({ id: "pg1", portIds: ["p1"], stateful: true }) },
    {
      macEntry: P.MacEntry.fromPartial({ id: "m1", bridgeId: "b1", mac: "02:00:00:00:00:01", portId: "p1" }),
    },
    {
      arpEntry: P.ArpEntry.fromPartial({
        id: "a1",
        bridgeId: "b1",
        ip: "172.16.0.2",
        mac: "02:00:00:00:00:01",
      }),
    },
    { remoteGateway: P.RemoteGateway.fromPartial({ id: "rg1", site: "b", ip: "192.0.2.1", port: 4789 }) },
    {
      ipAddrGroupMember: P.IpAddrGroupMember.fromPartial({
        id: "gm1",
        groupId: "g1",
        addresses: ["172.16.0.9", "fd00::9"],
        intentId: "p1",
      }),
    },
  ];
}

test("the sample holds every kind of topology object (a new kind fails here until the decoder reads it)", () => {
  const kinds = new Set(sample().map((o) => objectKind(o)));
  const enumKinds = Object.values(topologypb.TopologyKind).filter((v) => typeof v === "number" && v > 0);
  assert.equal(kinds.size, enumKinds.length);
  const d = new WatchEventDecoder();
  const ours = d.decode(encode({ snapshot: { revision: 1, objects: sample() } })).snapshot!;
  assert.deepEqual(
    unpacked(ours).map((o) => objectKind(o)),
    rulesLast(sample()).map((o) => objectKind(o)),
    "no object decoded empty",
  );
});

/** The rules of a decoded snapshot (or part), decoded now, in the order they came. */
function rulesOf(s: DecodedSnapshot): topologypb.Rule[] {
  const p = joinSnapshot([s]).packedRules as SnapshotRules | undefined;
  return Array.from({ length: p?.count ?? 0 }, (_, i) => p!.rule(i));
}

/** A decoded snapshot's objects (which hold no rule), then its rules. */
function unpacked(s: DecodedSnapshot): Obj[] {
  assert.equal(s.objects.filter((o) => o.rule).length, 0, "rules are packed, not objects");
  return [...s.objects, ...rulesOf(s).map((rule) => ({ rule }))];
}

/** The generated decoder's objects in unpacked's order: other kinds as they came, then the rules. */
function rulesLast(objects: Obj[]): Obj[] {
  return [...objects.filter((o) => !o.rule), ...objects.filter((o) => o.rule)];
}

function encode(ev: topologypb.WatchTopologyResponse): Buffer {
  return Buffer.from(topologypb.WatchTopologyResponse.encode(ev).finish());
}

/** Every Condition field as read (ours hold only the fields on the wire, the rest via their prototype). */
function conditionFields(c: topologypb.Condition | undefined): unknown {
  return c && Object.fromEntries(CONDITION_FIELDS.map((f) => [f, c[f]]));
}

/** Every Rule field as read (a condition reads its defaults through its prototype). */
function ruleFields(r: topologypb.Rule): unknown {
  return Object.fromEntries(
    RULE_FIELDS.map((f) => [f, f === "condition" ? conditionFields(r.condition) : r[f]]),
  );
}

/** Objects as kind + payload (the generated decoder also writes every other kind as undefined). */
function payloads(objects: Obj[]): unknown[] {
  return objects.map((o) => {
    const k = objectKind(o);
    if (k === "rule") return [k, ruleFields(o.rule!)];
    return [k, k ? o[k] : undefined];
  });
}

function assertSameAsGenerated(d: WatchEventDecoder, bytes: Buffer): ReturnType<WatchEventDecoder["decode"]> {
  const ours = d.decode(bytes);
  const generated = topologypb.WatchTopologyResponse.decode(bytes);
  for (const field of ["snapshot", "snapshotPart"] as const) {
    assert.equal(ours[field] === undefined, generated[field] === undefined, field);
    if (generated[field]) {
      assert.equal(ours[field]!.revision, generated[field]!.revision);
      assert.deepEqual(payloads(unpacked(ours[field]!)), payloads(rulesLast(generated[field]!.objects)));
    }
  }
  // Changes: their rules are read here too (conditions through their prototype), field for field.
  assert.equal(ours.change === undefined, generated.change === undefined, "change");
  if (generated.change) {
    assert.equal(ours.change!.revision, generated.change.revision);
    assert.deepEqual(ours.change!.deletes, generated.change.deletes);
    assert.deepEqual(payloads(ours.change!.upserts), payloads(generated.change.upserts));
  }
  assert.equal(ours.heartbeatRevision, generated.heartbeatRevision);
  return ours;
}

test("snapshot events decode to what the generated decoder gives, object for object", () => {
  const d = new WatchEventDecoder();
  const objects = sample();
  for (const ev of [
    { snapshot: { revision: 42, objects } },
    { snapshotPart: { revision: 2 ** 40, objects } },
    { snapshot: { revision: 0, objects: [] } },
  ]) {
    const ours = assertSameAsGenerated(d, encode(ev));
    const s = ours.snapshot ?? ours.snapshotPart!;
    // Each object holds only its kind.
    for (const o of s.objects) assert.equal(Object.keys(o).length, 1);
  }
  // Changes and heartbeats too.
  assertSameAsGenerated(
    d,
    encode({ change: { revision: 7, upserts: objects, deletes: [{ kind: 7, id: "x" }] } }),
  );
  assertSameAsGenerated(d, encode({ heartbeatRevision: 9 }));
  assertSameAsGenerated(d, encode({ heartbeatRevision: 0 }));
});

test("rules with byte-identical conditions share one frozen condition; others do not", () => {
  const d = new WatchEventDecoder();
  const s = d.decode(encode({ snapshot: { revision: 1, objects: sample() } })).snapshot!;
  const rules = rulesOf(s);
  assert.equal(rules[0]!.condition, rules[1]!.condition);
  assert.notEqual(rules[0]!.condition, rules[2]!.condition);
  assert.ok(Object.isFrozen(rules[0]!.condition));
  assert.ok(Object.isFrozen(rules[2]!.condition!.tpDst));
  assert.ok(Object.isFrozen(rules[3]!.condition!.inPortIds));
  assert.throws(() => {
    (rules[0]!.condition as { etherType: number }).etherType = 1;
  }, TypeError);
  assert.equal(rules[4]!.condition, undefined);
  // Across events too (the tables belong to the decoder): the next snapshot's ARP rule shares it.
  const again = d.decode(
    encode({ snapshot: { revision: 2, objects: [rule("rule-9", "c9", { etherType: 0x0806 })] } }),
  );
  assert.equal(rulesOf(again.snapshot!)[0]!.condition, rules[0]!.condition);
  // The rules themselves stay separate objects.
  assert.notEqual(rules[0], rules[1]);
  assert.equal(rules[1]!.action, ACCEPT);
});

test("the rule decoder reads every field the generated Rule has", () => {
  // Fails when topology.proto grows a Rule field: decodeRule must then learn it.
  assert.deepEqual(Object.keys(topologypb.Rule.fromPartial({})), [...RULE_FIELDS]);
});

test("a condition holds only the fields on the wire and reads the others as the generated decoder sets them", () => {
  const d = new WatchEventDecoder();
  const objects = [rule("r1", "c1", { etherType: 0x0800, nwProto: 6, tpDst: { start: 22, end: 22 } })];
  const ours = rulesOf(d.decode(encode({ snapshot: { revision: 1, objects } })).snapshot!)[0]!.condition!;
  assert.deepEqual(Object.keys(ours), ["etherType", "nwProto", "tpDst"]);
  assert.deepEqual(conditionFields(ours), conditionFields(objects[0]!.rule!.condition));
  assert.equal(ours.ethSrc, "");
  assert.equal(ours.tpSrc, undefined);
  assert.deepEqual(ours.inPortIds, []);
});

test("the condition decoder reads every field the generated Condition has", () => {
  // Fails when topology.proto grows a Condition field: decodeCondition must then learn it.
  assert.deepEqual(Object.keys(topologypb.Condition.fromPartial({})), [...CONDITION_FIELDS]);
});

test("absent lists are one shared frozen empty list; present ones are the rule's own", () => {
  const d = new WatchEventDecoder();
  const rules = rulesOf(d.decode(encode({ snapshot: { revision: 1, objects: sample() } })).snapshot!);
  const [a, b, c, withLists] = [rules[0]!, rules[1]!, rules[2]!, rules[3]!];
  assert.deepEqual(a.natTargets, []);
  assert.equal(a.natTargets, c.natTargets, "no NAT targets: the shared empty list");
  assert.ok(Object.isFrozen(a.natTargets));
  assert.throws(() => a.natTargets.push({ ipStart: "", ipEnd: "", portStart: 0, portEnd: 0 }), TypeError);
  assert.equal(a.condition!.inPortIds, c.condition!.outPortIds);
  assert.deepEqual(c.condition!.inPortIds, []);
  assert.deepEqual(withLists.condition!.inPortIds, ["p1", "p2"]);
  assert.notEqual(withLists.condition!.inPortIds, a.condition!.inPortIds);
  assert.equal(withLists.natTargets.length, 1);
  assert.notEqual(withLists.natTargets, b.natTargets);
});

test("conditions with every field set decode as the generated decoder does", () => {
  const str = fc.oneof(fc.constantFrom("", "p1", "10.0.0.0/8"), fc.string({ maxLength: 20 }));
  const range = fc.option(fc.record({ start: fc.nat(65535), end: fc.nat(65535) }), { nil: undefined });
  const record: Record<string, fc.Arbitrary<unknown>> = {};
  const base = topologypb.Condition.fromPartial({}) as unknown as Record<string, unknown>;
  for (const f of CONDITION_FIELDS) {
    const v = base[f];
    record[f] =
      typeof v === "boolean"
        ? fc.boolean()
        : typeof v === "number"
          ? fc.nat(0xffff)
          : typeof v === "string"
            ? str
            : Array.isArray(v)
              ? fc.array(str, { maxLength: 3 })
              : range;
  }
  const d = new WatchEventDecoder({ stringSlots: 2, conditionSlots: 2 });
  fc.assert(
    fc.property(fc.array(fc.record(record), { maxLength: 6 }), (conds) => {
      const objects = conds.map((c, i) =>
        rule(`r${i}`, "c1", c as Partial<topologypb.Condition>, { natTargets: [] }),
      );
      assertSameAsGenerated(d, encode({ snapshot: { revision: 3, objects } }));
    }),
    { numRuns: 300 },
  );
});

test("random topologies decode as the generated decoder does, even with one-slot tables", () => {
  const str = fc.oneof(fc.constantFrom("", "c1", "p1", "02:00:00:00:00:01"), fc.string({ maxLength: 40 }));
  const cond = fc.record({
    etherType: fc.constantFrom(0, 0x0800, 0x0806),
    ethSrc: str,
    invEthSrc: fc.boolean(),
    inPortIds: fc.array(str, { maxLength: 3 }),
    nwProto: fc.integer({ min: 0, max: 255 }),
    tpDst: fc.option(fc.record({ start: fc.nat(65535), end: fc.nat(65535) }), { nil: undefined }),
  });
  const obj: fc.Arbitrary<Obj> = fc.oneof(
    fc
      .tuple(str, str, fc.option(cond, { nil: undefined }), fc.nat(), str)
      .map(([id, chainId, c, position, jump]) => ({
        rule: topologypb.Rule.fromPartial({
          id,
          chainId,
          position,
          condition: c ? topologypb.Condition.fromPartial(c) : undefined,
          jumpChainId: jump,
        }),
      })),
    fc
      .tuple(str, fc.array(str, { maxLength: 3 }))
      .map(([id, ips]) => ({ port: topologypb.Port.fromPartial({ id, ips }) })),
    fc.tuple(str, str).map(([id, name]) => ({ chain: { id, name } })),
  );
  const small = new WatchEventDecoder({ stringSlots: 1, conditionSlots: 1 });
  const big = new WatchEventDecoder();
  fc.assert(
    fc.property(fc.array(obj, { maxLength: 30 }), fc.nat(), (objects, revision) => {
      const bytes = encode({ snapshot: { revision, objects } });
      if (objects.some((o) => o.rule?.id === "")) {
        // Refused, as the store refuses any object without an id (the stream then starts over).
        assert.throws(() => small.decode(bytes), /topology rule without an id/);
        return;
      }
      assertSameAsGenerated(small, bytes);
      assertSameAsGenerated(big, bytes);
    }),
    { numRuns: 200 },
  );
});

test("a snapshot's rules stay in the message until asked for, then read as the generated decoder reads them", () => {
  const d = new WatchEventDecoder({ stringSlots: 1, conditionSlots: 1 });
  const objects = sample();
  const bytes = encode({ snapshot: { revision: 5, objects } });
  const snapshot = joinSnapshot([d.decode(bytes).snapshot!]);
  const rules = snapshot.packedRules as SnapshotRules;
  const plain = objects.filter((o) => o.rule).map((o) => o.rule!);
  assert.equal(snapshot.objects.length, objects.length - plain.length);
  assert.equal(rules.count, plain.length);
  // Ids and chains are known at once (what the view files rules by); nothing has been decoded.
  for (const [i, r] of plain.entries()) {
    assert.equal(rules.find(r.id), i);
    assert.equal(rules.idOf(i), r.id);
    assert.equal(rules.chainOf(i), r.chainId);
  }
  assert.deepEqual(rules.rulesOf("c1"), [0, 1, 2, 3, 4]);
  assert.deepEqual(rules.rulesOf("c-none"), []);
  assert.equal(rules.find("rule-none"), -1);
  assert.equal(rules.decoded, 0);
  // Other events through the same (one-slot) tables first: what a rule reads later is its own.
  d.decode(
    encode({ snapshot: { revision: 6, objects: [rule("other", "c-other", { nwSrc: "192.0.2.0/24" })] } }),
  );
  assert.deepEqual(
    plain.map((_, i) => ruleFields(rules.rule(i))),
    plain.map((r) => ruleFields(r)),
  );
  assert.equal(rules.decoded, plain.length);
  // Changes are read whole: their rules are objects.
  const change = d.decode(encode({ change: { revision: 7, upserts: objects, deletes: [] } })).change!;
  assert.deepEqual(
    change.upserts.filter((o) => o.rule).map((o) => ruleFields(o.rule!)),
    plain.map((r) => ruleFields(r)),
  );
});

test("a snapshot rule whose bytes do not decode comes back with its id and chain, and throws from its condition", () => {
  const r = rule("r-bad", "c1", { nwSrc: "10.0.0.0/8" });
  const bytes = encode({ snapshot: { revision: 1, objects: [r] } });
  // The nw_src string's length (tag 106, then 10) made longer than the rule: structure intact around it.
  const at = bytes.indexOf(Buffer.from([106, 10]));
  assert.ok(at > 0);
  bytes[at + 1] = 100;
  const bad = rulesOf(new WatchEventDecoder().decode(bytes).snapshot!)[0]!;
  assert.equal(bad.id, "r-bad");
  assert.equal(bad.chainId, "c1");
  assert.equal(bad.action, 0);
  assert.throws(() => bad.condition, /rule r-bad: cannot be decoded \(premature EOF\)/);
  assert.throws(() => bad.condition, /cannot be decoded/, "and again on every read");
});

test("bad table sizes are refused by name; a truncated event is an error", () => {
  assert.throws(() => new WatchEventDecoder({ stringSlots: 1000 }), /stringSlots must be a power of two/);
  assert.throws(() => new WatchEventDecoder({ conditionSlots: 0 }), /conditionSlots/);
  const bytes = encode({ snapshot: { revision: 1, objects: sample() } });
  assert.throws(() => new WatchEventDecoder().decode(bytes.subarray(0, bytes.length - 5)));
});

test("a condition field this agent does not know fails the rule closed, in a snapshot and in a change; other rules read on", () => {
  const known = Buffer.from(topologypb.TopologyObject.encode(rule("r-ok", "c1", { nwProto: 6 })).finish());
  for (const field of [33, 40, 1000]) {
    const unknown = ruleWithUnknownField("r-new", "c1", ACCEPT, field);
    const d = new WatchEventDecoder();
    const snap = rulesOf(d.decode(eventOf("snapshot", [known, unknown])).snapshot!);
    const change = d.decode(eventOf("change", [known, unknown])).change!;
    assert.equal(change.revision, 3);
    for (const [r, ok] of [
      [snap[1]!, snap[0]!],
      [change.upserts[1]!.rule!, change.upserts[0]!.rule!],
    ] as const) {
      assert.deepEqual([r.id, r.chainId], ["r-new", "c1"]);
      assert.throws(
        () => r.condition,
        new RegExp(`rule r-new: cannot be decoded \\(condition field ${field} is not known`),
      );
      assert.equal(ok.condition!.nwProto, 6, "the rule beside it reads as sent");
    }
  }
});
