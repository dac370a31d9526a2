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
  "ipAddrGroupMember",
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

test("the kinds above are every kind topology.proto has", () => {
  const enumKinds = Object.values(topologypb.TopologyKind).filter(
    (v) => typeof v === "number" && v > 0,
  ) as number[];
  assert.equal(KINDS.length, enumKinds.length);
});

test("an address-group member's change names its group's flows, when it joins, changes and leaves", () => {
  const store = new TopologyStore();
  const member = (addresses: string[]): topologypb.TopologyObject => ({
    ipAddrGroupMember: { id: "m1", groupId: "g1", addresses, intentId: "p1" },
  });
  store.applySnapshot({ revision: 1, objects: [{ ipAddrGroup: { id: "g1", name: "", addresses: [] } }] });
  assert.ok(
    store.applyChange({ revision: 2, upserts: [member(["10.0.0.1"])], deletes: [] }).has("ipgroup:g1"),
  );
  assert.ok(
    store.applyChange({ revision: 3, upserts: [member(["10.0.0.2"])], deletes: [] }).has("ipgroup:g1"),
  );
  assert.equal(store.addrGroupMembers.get("m1")?.addresses[0], "10.0.0.2");
  const left = store.applyChange({
    revision: 4,
    upserts: [],
    deletes: [{ kind: topologypb.TopologyKind.TOPOLOGY_KIND_IP_ADDR_GROUP_MEMBER, id: "m1" }],
  });
  assert.ok(left.has("ipgroup:g1"), "a deleted member still names its group");
  assert.equal(store.addrGroupMembers.size, 0);
  assert.equal(store.objects().length, 1);
});
