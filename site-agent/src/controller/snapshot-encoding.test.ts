import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { EncodedWatchEvent, encodeSnapshotEvent, topologyServiceDefinition } from "./snapshot-encoding.js";
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
