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

/** The kinds the store keeps (the agent reads them itself); the others live in the simulator's view. */
const KEPT = ["host", "bridge", "port", "remoteGateway", "macEntry", "ipAddrGroupMember"];

test("every kind is recognised with its id; a snapshot keeps the kinds the agent reads itself", () => {
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
  assert.deepEqual(
    store
      .objects()
      .map((o) => objectKind(o))
      .sort(),
    [...KEPT].sort(),
  );
  // A change names what it touched, kept here or not; deleting by kind removes exactly that object.
  const rule = store.applyChange({
    revision: 8,
    upserts: [],
    deletes: [{ kind: topologypb.TopologyKind.TOPOLOGY_KIND_RULE, id: "rule-6" }],
  });
  assert.deepEqual([...rule], ["rule:rule-6"]);
  const port = store.applyChange({
    revision: 9,
    upserts: [],
    deletes: [{ kind: topologypb.TopologyKind.TOPOLOGY_KIND_PORT, id: "port-3" }],
  });
  assert.deepEqual([...port], ["port:port-3"]);
  assert.equal(store.ports.size, 0);
  assert.equal(store.objects().length, KEPT.length - 1);
  // An object without an id is refused whether the store keeps its kind or not.
  for (const kind of ["rule", "port"] as const) {
    assert.throws(
      () => store.applyChange({ revision: 10, upserts: [objectOf(kind, "")], deletes: [] }),
      new RegExp(`topology ${kind} without an id`),
    );
  }
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
  assert.equal(store.objects().length, 0, "the group itself is the view's, not the store's");
});
