import assert from "node:assert/strict";
import { test } from "node:test";
import { BinaryWriter, topologypb } from "@isthmus/schema";
import {
  agentBody,
  EncodedWatchEvent,
  encodeSnapshotEvent,
  SnapshotPartFrame,
  topologyServiceDefinition,
} from "./snapshot-encoding.js";
import { FRAMING_OBJECTS } from "./test-support/framing-objects.js";

const objects = [...FRAMING_OBJECTS];
const bodies = objects.map((o) => Buffer.from(topologypb.TopologyObject.encode(o).finish()));
const decoded = bodies.map((b) => topologypb.TopologyObject.decode(b));

test("a snapshot event framed from stored encodings is byte for byte the generated encoding", () => {
  for (const revision of [0, 1, 300, 2 ** 40 + 7]) {
    for (const [field, key] of [
      ["snapshot", "snapshot"],
      ["snapshotPart", "snapshotPart"],
    ] as const) {
      const expected = Buffer.from(
        topologypb.WatchTopologyResponse.encode({ [key]: { revision, objects } }).finish(),
      );
      const got = encodeSnapshotEvent(field, revision, bodies).bytes;
      assert.ok(got.equals(expected), `${field} at revision ${revision}`);
      assert.deepEqual(topologypb.WatchTopologyResponse.decode(got)[key]?.objects, decoded);
    }
  }
  const empty = encodeSnapshotEvent("snapshot", 5, []).bytes;
  assert.deepEqual(topologypb.WatchTopologyResponse.decode(empty).snapshot, { revision: 5, objects: [] });
});

test("a framed part reused under other revisions and as either event is the generated encoding each time", () => {
  const frame = SnapshotPartFrame.of(bodies);
  assert.equal(frame.objects, bodies.length);
  // Revisions whose varints differ in length move the objects within the event: each event
  // must still be whole (the frame's bytes live in the last event built).
  for (const [revision, field] of [
    [1, "snapshotPart"],
    [2 ** 40 + 7, "snapshot"],
    [0, "snapshotPart"],
    [300, "snapshot"],
    [300, "snapshot"],
  ] as const) {
    const expected = Buffer.from(
      topologypb.WatchTopologyResponse.encode({ [field]: { revision, objects } }).finish(),
    );
    assert.ok(frame.event(field, revision).bytes.equals(expected), `${field} at revision ${revision}`);
  }
  const earlier = frame.event("snapshot", 7).bytes;
  const copy = Buffer.from(earlier);
  frame.event("snapshotPart", 8);
  assert.ok(earlier.equals(copy), "an event already handed out is not changed by a later one");
});

test("the service definition passes encoded events through and encodes the rest", () => {
  const ser = topologyServiceDefinition.watch.responseSerialize;
  const ev = encodeSnapshotEvent("snapshot", 9, bodies);
  assert.equal(ser(ev), ev.bytes);
  assert.ok(ev instanceof EncodedWatchEvent);
  const change = { change: { revision: 3, upserts: objects.slice(0, 1), deletes: [] } };
  assert.deepEqual(topologypb.WatchTopologyResponse.decode(ser(change)).change, {
    revision: 3,
    upserts: decoded.slice(0, 1),
    deletes: [],
  });
});

test("agents get rules, ports and group members without intent_id; everything else, and bytes that are not one well-formed rule, as stored", () => {
  const rule = topologypb.Rule.fromPartial({
    id: "r1",
    chainId: "c1",
    position: 7,
    condition: { nwProto: 6, tpDst: { start: 22, end: 22 } },
    action: topologypb.RuleAction.RULE_ACTION_ACCEPT,
    jumpChainId: "j",
    natTargets: [{ ipStart: "10.0.0.1", ipEnd: "10.0.0.1", portStart: 1, portEnd: 2 }],
    intentId: "i".repeat(300), // a two-byte length: the rule's own length varint shrinks too
  });
  const stored = Buffer.from(topologypb.TopologyObject.encode({ rule }).finish());
  const sent = agentBody(stored);
  assert.deepEqual(topologypb.TopologyObject.decode(sent).rule, { ...rule, intentId: "" });
  assert.ok(
    sent.equals(Buffer.from(topologypb.TopologyObject.encode({ rule: { ...rule, intentId: "" } }).finish())),
    "what the generated encoder writes without it",
  );

  // intent_id twice (a decoder keeps the last; both go), and between other fields.
  const w = new BinaryWriter();
  w.uint32(0x3a).fork();
  w.uint32(0x42)
    .string("first")
    .uint32(0x0a)
    .string("r2")
    .uint32(0x42)
    .string("second")
    .uint32(0x12)
    .string("c2");
  w.join();
  const twice = agentBody(Buffer.from(w.finish()));
  assert.deepEqual(
    topologypb.TopologyObject.decode(twice).rule,
    topologypb.Rule.fromPartial({ id: "r2", chainId: "c2" }),
  );

  const port = topologypb.Port.fromPartial({
    id: "p",
    name: "vm",
    ips: ["10.0.0.5"],
    intentId: "rec",
    vlan: 3,
  });
  const member = topologypb.IpAddrGroupMember.fromPartial({
    id: "m",
    groupId: "g",
    addresses: ["10.0.0.5"],
    intentId: "rec",
  });
  for (const o of [{ port }, { ipAddrGroupMember: member }] as topologypb.TopologyObject[]) {
    const b = agentBody(Buffer.from(topologypb.TopologyObject.encode(o).finish()));
    const [kind, value] = Object.entries(o)[0]!;
    assert.deepEqual(
      (topologypb.TopologyObject.decode(b) as Record<string, unknown>)[kind],
      { ...value, intentId: "" },
      kind,
    );
  }

  for (const o of FRAMING_OBJECTS) {
    const b = Buffer.from(topologypb.TopologyObject.encode(o).finish());
    if (o.rule?.intentId || o.port?.intentId || o.ipAddrGroupMember?.intentId) continue;
    assert.equal(agentBody(b), b, `${Object.keys(o)[0]} without intent_id: the same buffer`);
  }
  const chain = Buffer.from(topologypb.TopologyObject.encode({ chain: { id: "c", name: "n" } }).finish());
  assert.equal(agentBody(chain), chain, "a chain: as stored");
  const truncated = stored.subarray(0, stored.length - 3);
  assert.equal(agentBody(truncated), truncated, "cut short: as stored");
  const trailing = Buffer.concat([stored, Buffer.from([0x08, 0x01])]);
  assert.equal(agentBody(trailing), trailing, "a field after the rule: as stored");
  const badWireType = Buffer.from([0x3a, 0x02, 0x0f, 0x00]);
  assert.equal(agentBody(badWireType), badWireType, "an invalid wire type inside: as stored");
});
