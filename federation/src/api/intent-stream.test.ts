import assert from "node:assert/strict";
import { test } from "node:test";
import { intentpb } from "@isthmus/schema";
import { snapshotEvents } from "./intent-stream.js";

const group = (i: number): intentpb.IntentObject => ({
  securityGroup: {
    meta: {
      id: `g-${i}`,
      name: `group-${i}`,
      revision: i,
      description: "x".repeat(100),
      labels: {},
      createdRevision: i,
    },
    stateless: false,
  },
});
const size = (o: intentpb.IntentObject) => intentpb.IntentObject.encode(o).finish().length;

test("a snapshot goes in parts of at most the byte bound, every part at its index, the last as snapshot", () => {
  const objects = Array.from({ length: 1000 }, (_, i) => group(i));
  const bound = 10 * size(objects[0]!) + 5;
  const events = snapshotEvents({ index: 77, objects }, bound);
  assert.ok(events.length >= 100, `${events.length} parts`);
  const last = events.pop()!;
  assert.ok(last.snapshot && !last.snapshotPart, "the last event is the snapshot");
  assert.ok(
    events.every((e) => e.snapshotPart && !e.snapshot),
    "the others are parts",
  );
  const parts = [...events.map((e) => e.snapshotPart!), last.snapshot];
  for (const p of parts) {
    assert.equal(p.index, 77);
    assert.ok(p.objects.length > 0);
    assert.ok(p.objects.reduce((n, o) => n + size(o), 0) <= bound, "each part within the bound");
  }
  assert.deepEqual(
    parts.flatMap((p) => p.objects),
    objects,
    "the union of the parts is the snapshot, in order",
  );
});

test("an object larger than the bound travels alone; without a bound the snapshot is one event", () => {
  const objects = [group(1), group(2), group(3)];
  const events = snapshotEvents({ index: 5, objects }, 10);
  assert.equal(events.length, 3);
  assert.deepEqual(events[2]!.snapshot?.objects, [objects[2]]);
  assert.deepEqual(snapshotEvents({ index: 5, objects }, undefined), [{ snapshot: { index: 5, objects } }]);
  assert.deepEqual(snapshotEvents({ index: 5, objects: [] }, 1000), [
    { snapshot: { index: 5, objects: [] } },
  ]);
});
