// Address groups whose addresses come from member objects (one per port, as translation derives a
// security group's): a rule naming the group matches exactly its current members' addresses, and
// every membership change names the group's tag, so flows that read the group are invalidated.
import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { parseIp4 } from "../packets/addr.js";
import { eth } from "../packets/packet-dsl.js";
import type { SimResult } from "./result.js";
import { simulate } from "./simulate.js";
import { newSimContext, TopologyBuilder } from "./topology-builder.js";
import { TopologyView } from "./topology-view.js";

const K = topologypb.TopologyKind;
const M1 = "02:00:00:00:00:01";
const M2 = "02:00:00:00:00:02";

/** vm1 → vm2 on one bridge; vm2 accepts UDP only from the group's addresses, drops the rest. */
function setup() {
  const t = new TopologyBuilder();
  const h = t.host("h1", "192.168.0.1");
  const br = t.bridge();
  const chain = t.chain("to-vm2");
  const vm1 = t.vmPort(br, h, M1, ["10.0.0.1"]);
  t.vmPort(br, h, M2, ["10.0.0.2", "fd00::2"], { outboundFilterId: chain.id });
  const group = t.ipGroup([]);
  t.accept(chain, { nwProto: 17, ipAddrGroupSrc: group.id });
  t.dropRule(chain);
  const first = t.ipGroupMember(group, ["10.0.0.5"]);
  const view = new TopologyView(t.objects);
  const ctx = newSimContext("h1");
  const from = (src: string): SimResult =>
    simulate(view, eth(M1, M2).ip4(src, "10.0.0.2").udp(1000, 53).build(), { portId: vm1.id }, ctx);
  return { view, group, first, from };
}

const passed = (r: SimResult) => r.actions.some((a) => a.kind === "output");
const member = (id: string, groupId: string, addresses: string[]): topologypb.TopologyObject => ({
  ipAddrGroupMember: { id, groupId, addresses, intentId: "" },
});
const memberRef = (id: string) => ({ kind: K.TOPOLOGY_KIND_IP_ADDR_GROUP_MEMBER, id });

test("address group members: a rule naming the group matches a member added later and stops when it leaves", () => {
  const s = setup();
  assert.ok(passed(s.from("10.0.0.5")), "the snapshot's member matches");
  assert.ok(!passed(s.from("10.0.0.1")), "not a member yet");
  s.view.apply({ revision: 2, upserts: [member("m-vm1", s.group.id, ["10.0.0.1"])], deletes: [] });
  assert.ok(passed(s.from("10.0.0.1")), "a member added later matches");
  s.view.apply({ revision: 3, upserts: [], deletes: [memberRef("m-vm1")] });
  assert.ok(!passed(s.from("10.0.0.1")), "a removed member no longer matches");
  assert.ok(passed(s.from("10.0.0.5")), "the other member still does");
  // A member whose addresses change matches its new ones only.
  s.view.apply({ revision: 4, upserts: [member(s.first.id, s.group.id, ["10.0.0.6"])], deletes: [] });
  assert.ok(!passed(s.from("10.0.0.5")));
  assert.ok(passed(s.from("10.0.0.6")));
});

test("address group members: an address two members hold stays until both have left", () => {
  const s = setup();
  s.view.apply({
    revision: 2,
    upserts: [member("m-b", s.group.id, ["10.0.0.5", "10.9.0.0/16"])],
    deletes: [],
  });
  s.view.apply({ revision: 3, upserts: [], deletes: [memberRef(s.first.id)] });
  assert.ok(passed(s.from("10.0.0.5")), "still held by m-b");
  assert.ok(passed(s.from("10.9.1.2")), "a member's prefix matches too");
  s.view.apply({ revision: 4, upserts: [], deletes: [memberRef("m-b")] });
  assert.ok(!passed(s.from("10.0.0.5")));
  assert.ok(!passed(s.from("10.9.1.2")));
  // Deleting a member twice (or one never seen) changes nothing.
  s.view.apply({ revision: 5, upserts: [], deletes: [memberRef("m-b")] });
  assert.equal(s.view.ipGroups.get(s.group.id)?.v4.size, 0);
});

test("address group members: without its group object the members match nothing; they count again when it returns", () => {
  const s = setup();
  s.view.apply({
    revision: 2,
    upserts: [],
    deletes: [{ kind: K.TOPOLOGY_KIND_IP_ADDR_GROUP, id: s.group.id }],
  });
  assert.ok(!passed(s.from("10.0.0.5")));
  s.view.apply({
    revision: 3,
    upserts: [{ ipAddrGroup: { ...s.group, addresses: ["10.0.0.1"] } }],
    deletes: [],
  });
  assert.ok(passed(s.from("10.0.0.5")), "the member kept its place");
  assert.ok(passed(s.from("10.0.0.1")), "the group's own addresses count too");
  // Members that arrive before their group (a change may order them so) count once it exists.
  const t = new TopologyBuilder();
  const g = { id: "late", name: "", addresses: [] };
  const v = new TopologyView([...t.objects, member("m1", "late", ["10.0.0.7"]), { ipAddrGroup: g }]);
  assert.deepEqual([...v.ipGroups.get("late")!.v4], [0x0a000007]);
});

test("address group members: each membership change invalidates the flows that read the group, and only those", () => {
  const s = setup();
  const tagged = s.from("10.0.0.5");
  const other = s.from("10.0.0.9"); // dropped, but it read the group too
  const groupTag = `ipgroup:${s.group.id}`;
  assert.ok(tagged.tags.includes(groupTag) && other.tags.includes(groupTag));
  assert.deepEqual(
    s.view.apply({ revision: 2, upserts: [member("m-x", s.group.id, ["10.0.0.9"])], deletes: [] }),
    [groupTag],
  );
  assert.deepEqual(s.view.apply({ revision: 3, upserts: [], deletes: [memberRef("m-x")] }), [groupTag]);
  // A member of another group names that group, not this one.
  const stale = s.view.apply({
    revision: 4,
    upserts: [member("m-y", "other-group", ["10.0.0.9"])],
    deletes: [],
  });
  assert.deepEqual(stale, ["ipgroup:other-group"]);
  assert.ok(!tagged.tags.includes(stale[0]!));
  assert.ok(!passed(s.from("10.0.0.9")), "a member of a group that does not exist matches nothing");
});

test("address group members: the tables, read at any point (or first after many changes), hold exactly the current members' addresses", () => {
  const pool = ["10.0.0.1", "10.0.0.2", "10.0.0.2/32", "10.1.0.0/16", "fd00::1", "fd00::1/128", "bad"];
  let seed = 11;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let round = 0; round < 40; round++) {
    const own = ["192.0.2.1"];
    const view = new TopologyView([
      { ipAddrGroup: { id: "g", name: "", addresses: own } },
      member("m0", "g", ["10.0.0.1"]),
    ]);
    const current = new Map<string, string[]>([["m0", ["10.0.0.1"]]]);
    let revision = 1;
    // Some rounds read the tables only at the end: every change before it lands on unbuilt tables.
    const readEvery = round % 3 === 0 ? 0 : 1 + rnd(4);
    for (let step = 0; step < 30; step++) {
      const id = `m${rnd(5)}`;
      if (rnd(3) === 0) {
        view.apply({ revision: ++revision, upserts: [], deletes: [memberRef(id)] });
        current.delete(id);
      } else {
        const addresses = Array.from({ length: rnd(3) }, () => pool[rnd(pool.length)]!);
        view.apply({ revision: ++revision, upserts: [member(id, "g", addresses)], deletes: [] });
        current.set(id, addresses);
      }
      if (readEvery === 0 ? step < 29 : step % readEvery !== 0) continue;
      const g = view.ipGroups.get("g")!;
      const all = [...own, ...[...current.values()].flat()];
      const hosts = new Set(
        all
          .filter((a) => !a.includes(":") && (!a.includes("/") || a.endsWith("/32")))
          .map((a) => parseIp4(a.split("/")[0]!))
          .filter((ip) => ip >= 0),
      );
      assert.deepEqual([...g.v4].sort(), [...hosts].sort(), `round ${round} step ${step}: hosts`);
      assert.deepEqual(
        g.v4Cidrs.map((c) => c.len),
        all.includes("10.1.0.0/16") ? [16] : [],
        `round ${round} step ${step}: prefixes`,
      );
      assert.equal(
        g.v6.length,
        all.some((a) => a.startsWith("fd00::1")) ? 1 : 0,
        `round ${round} step ${step}: v6`,
      );
    }
  }
});
