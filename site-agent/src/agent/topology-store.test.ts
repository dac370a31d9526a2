import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { objectId, objectKind, TopologyStore } from "./topology-store.js";

// One object of every kind, as the generated decoder builds them (every oneof field present).
const KINDS = [
  "host",
  "bridge",
  "router",
  "port",
  "route",
  "chain",
  "rule",
  "ipAddrGroup",
  "portGroup",
  "macEntry",
  "arpEntry",
  "remoteGateway",
] as const;

function objectOf(kind: (typeof KINDS)[number], id: string): topologypb.TopologyObject {
  const inner = { [kind]: { id } } as unknown as topologypb.TopologyObject;
  return topologypb.TopologyObject.decode(
    topologypb.TopologyObject.encode(topologypb.TopologyObject.fromPartial(inner)).finish(),
  );
}

test("every kind is recognised with its id, and a snapshot holds them all", () => {
  const objects = KINDS.map((k, i) => objectOf(k, `${k}-${i}`));
  for (const [i, o] of objects.entries()) {
    assert.equal(objectKind(o), KINDS[i]);
    assert.equal(objectId(o), `${KINDS[i]}-${i}`);
  }
  assert.equal(objectKind(topologypb.TopologyObject.fromPartial({})), undefined);
  const store = new TopologyStore();
  store.applySnapshot({ revision: 7, objects });
  assert.equal(store.ready, true);
  assert.equal(store.revision, 7);
  assert.equal(store.objects().length, KINDS.length);
  assert.deepEqual(
    store
      .objects()
      .map((o) => objectKind(o))
      .sort(),
    [...KINDS].sort(),
  );
  // A change names what it touched; deleting by kind removes exactly that object.
  const touched = store.applyChange({
    revision: 8,
    upserts: [],
    deletes: [{ kind: topologypb.TopologyKind.TOPOLOGY_KIND_RULE, id: "rule-6" }],
  });
  assert.equal(touched.size, 1);
  assert.equal(store.objects().length, KINDS.length - 1);
  assert.equal(
    store.objects().some((o) => o.rule),
    false,
  );
});
