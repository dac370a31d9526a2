import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { eth } from "../packets/packet-dsl.js";
import type { SimResult } from "./result.js";
import { simulate } from "./simulate.js";
import { RA_MAC, RB_MAC, twoSubnets, VM1_MAC, VM2_MAC } from "./test-topologies.js";
import { newSimContext } from "./topology-builder.js";
import { TopologyView } from "./topology-view.js";

const RA = topologypb.RuleAction;
const K = topologypb.TopologyKind;

/**
 * Three flows: `routed` (vm1 → router → vm2, through vm2's chain), `local` (vm1 → vm3 on bridge A)
 * and `back` (vm2 → router → vm1 by another route, through vm1's own chain): the same router and
 * bridges as `routed`, so only exact invalidation spares it.
 */
function flows() {
  const s = twoSubnets();
  const vm3 = s.t.vmPort(s.bA, s.h1, "02:00:00:00:01:03", ["10.0.1.3"]);
  const chain = s.t.chain("vm2-out");
  const rule = s.t.accept(chain, { nwProto: 17 });
  s.vm2.outboundFilterId = chain.id;
  const chain1 = s.t.chain("vm1-out");
  s.t.accept(chain1, { nwProto: 17 });
  s.vm1.outboundFilterId = chain1.id;
  const view = new TopologyView(s.t.objects);
  const ctx = newSimContext("h1");
  const routed = simulate(
    view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").udp(1, 2).build(),
    { portId: s.vm1.id },
    ctx,
  );
  const local = simulate(
    view,
    eth(VM1_MAC, "02:00:00:00:01:03").ip4("10.0.1.1", "10.0.1.3").udp(1, 2).build(),
    { portId: s.vm1.id },
    ctx,
  );
  const back = simulate(
    view,
    eth(VM2_MAC, RB_MAC).ip4("10.0.2.1", "10.0.1.1").udp(2, 1).build(),
    { portId: s.vm2.id },
    ctx,
  );
  for (const r of [routed, local, back]) assert.equal(r.actions.at(-1)?.kind, "output");
  assert.ok(back.tags.includes(`device:${s.r.id}`) && back.tags.includes(`chain:${chain1.id}`));
  return { ...s, vm3, chain, rule, view, routed, local, back };
}

const hits = (stale: string[], r: SimResult) => stale.filter((x) => r.tags.includes(x));

test("invalidation: changing a route invalidates flows that used it, not an unrelated flow", () => {
  const f = flows();
  const stale = f.view.apply({ revision: 2, upserts: [{ route: { ...f.routeB, weight: 5 } }], deletes: [] });
  assert.ok(stale.includes(`route:${f.routeB.id}`));
  assert.ok(hits(stale, f.routed).length > 0);
  assert.deepEqual(hits(stale, f.local), []);
  assert.deepEqual(hits(stale, f.back), [], "a flow through the same router by another route survives");
  assert.equal(f.view.revision, 2);
});

test("invalidation: adding a more specific route invalidates flows through the covering route", () => {
  const f = flows();
  const more = { ...f.routeB, id: "route-new", dstPrefix: "10.0.2.0/28" };
  const stale = f.view.apply({ revision: 2, upserts: [{ route: more }], deletes: [] });
  assert.ok(hits(stale, f.routed).includes(`route:${f.routeB.id}`));
  assert.deepEqual(hits(stale, f.local), []);
  assert.deepEqual(hits(stale, f.back), []);
  // And the new route is used from now on.
  const r = simulate(
    f.view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").udp(1, 2).build(),
    { portId: f.vm1.id },
    newSimContext("h1"),
  );
  assert.ok(r.tags.includes("route:route-new"));
});

test("invalidation: changing or deleting a rule invalidates flows through its chain only", () => {
  const f = flows();
  const stale = f.view.apply({
    revision: 2,
    upserts: [{ rule: { ...f.rule, action: RA.RULE_ACTION_DROP } }],
    deletes: [],
  });
  assert.ok(hits(stale, f.routed).includes(`chain:${f.chain.id}`));
  assert.deepEqual(hits(stale, f.local), []);
  assert.deepEqual(hits(stale, f.back), [], "a flow through another chain on the same path survives");
  const after = simulate(
    f.view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").udp(1, 2).build(),
    { portId: f.vm1.id },
    newSimContext("h1"),
  );
  assert.match(after.dropReason ?? "", /dropped by rule/);
  const del = f.view.apply({
    revision: 3,
    upserts: [],
    deletes: [{ kind: K.TOPOLOGY_KIND_RULE, id: f.rule.id }],
  });
  assert.ok(del.includes(`chain:${f.chain.id}`));
});

test("invalidation: a MAC entry change invalidates flows to that MAC only", () => {
  const f = flows();
  const stale = f.view.apply({
    revision: 2,
    upserts: [
      { macEntry: { id: "m1", bridgeId: f.bA.id, mac: "02:00:00:00:01:03", portId: f.vm1.id, vlan: 0 } },
    ],
    deletes: [],
  });
  assert.ok(hits(stale, f.local).length > 0);
  assert.deepEqual(hits(stale, f.routed), []);
  assert.deepEqual(hits(stale, f.back), [], "a flow to another MAC on the same bridge survives");
});

test("invalidation: a port change invalidates flows through it only; a new port invalidates floods", () => {
  const f = flows();
  const stale = f.view.apply({ revision: 2, upserts: [{ port: { ...f.vm2, hostId: "h2" } }], deletes: [] });
  assert.ok(hits(stale, f.routed).includes(`port:${f.vm2.id}`));
  assert.deepEqual(hits(stale, f.local), [], "a flow on the same bridge through other ports survives");
  const moved = simulate(
    f.view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").udp(1, 2).build(),
    { portId: f.vm1.id },
    newSimContext("h1"),
  );
  assert.equal(moved.actions.at(-1)?.kind, "encap");

  const flood = simulate(
    f.view,
    eth(VM1_MAC, "02:00:00:00:09:09").ip4("10.0.1.1", "10.0.1.9").udp(1, 2).build(),
    { portId: f.vm1.id },
    newSimContext("h1"),
  );
  const added = f.view.apply({
    revision: 3,
    upserts: [{ port: { ...f.vm3, id: "port-new", mac: "02:00:00:00:01:04", ips: [] } }],
    deletes: [],
  });
  assert.ok(hits(added, flood).includes(`flood:${f.bA.id}`));
  assert.deepEqual(hits(added, f.routed), []);
});

test("invalidation: IP address group and host changes name their tags", () => {
  const s = twoSubnets();
  const g = s.t.ipGroup(["10.0.1.1"]);
  const view = new TopologyView(s.t.objects);
  assert.deepEqual(
    view.apply({ revision: 2, upserts: [{ ipAddrGroup: { ...g, addresses: [] } }], deletes: [] }),
    [`ipgroup:${g.id}`],
  );
  assert.deepEqual(
    view.apply({ revision: 3, upserts: [{ host: { ...s.h2, tunnelIp: "192.168.0.22" } }], deletes: [] }),
    ["host:h2"],
  );
  assert.throws(() => view.apply({ revision: 4, upserts: [{}], deletes: [] }), /carries no object/);
});

test("invalidation: learning a MAC that moved reports its tag", () => {
  const s = twoSubnets();
  const view = new TopologyView(s.t.objects);
  const ctx = newSimContext("h1");
  const x = "02:00:00:00:07:07";
  simulate(view, eth(x, VM2_MAC).ip4("10.0.2.7", "10.0.2.1").udp(1, 2).build(), { portId: s.vm2.id }, ctx);
  const vm4 = s.t.vmPort(s.bB, s.h1, "02:00:00:00:02:04", []);
  view.apply({ revision: 2, upserts: [{ port: vm4 }], deletes: [] });
  const moved = simulate(
    view,
    eth(x, VM2_MAC).ip4("10.0.2.7", "10.0.2.1").udp(1, 2).build(),
    { portId: vm4.id },
    ctx,
  );
  assert.deepEqual(
    moved.learned.map((l) => l.portId),
    [vm4.id],
  );
  assert.ok(moved.invalidate.includes(`mac:${s.bB.id}:${x}`));
});
