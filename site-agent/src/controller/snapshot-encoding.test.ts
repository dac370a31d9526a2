import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import {
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
