// Chains compiled on first lookup (ChainTable in topology-view.ts): the same verdicts, tags and
// masks as chains compiled up front, and changes to chains nobody has looked up yet still name
// (and reach) every flow they make stale.
import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { eth } from "../packets/packet-dsl.js";
import type { SimResult } from "./result.js";
import { simulate } from "./simulate.js";
import { RA_MAC, twoSubnets, VM1_MAC } from "./test-topologies.js";
import { newSimContext } from "./topology-builder.js";
import { TopologyView } from "./topology-view.js";

const RA = topologypb.RuleAction;

/** vm1 (bridge A) and vm2 (bridge B) behind a router; chains on both ports, one jumping to a shared one. */
function topology() {
  const s = twoSubnets();
  const shared = s.t.chain("shared");
  s.t.accept(shared, { nwProto: 6, tpDst: { start: 22, end: 22 } });
  s.t.dropRule(shared, { nwProto: 6 });
  const vm1In = s.t.chain("vm1-in");
  s.t.dropRule(vm1In, { nwSrc: "10.9.0.0/16" });
  s.t.rule(vm1In, RA.RULE_ACTION_JUMP, {}, { jumpChainId: shared.id });
  s.t.accept(vm1In, {});
  s.vm1.inboundFilterId = vm1In.id;
  const vm2Out = s.t.chain("vm2-out");
  const vm2Udp = s.t.accept(vm2Out, { nwProto: 17, tpDst: { start: 53, end: 53 } });
  s.t.accept(vm2Out, { nwProto: 6 });
  s.t.dropRule(vm2Out, {});
  s.vm2.outboundFilterId = vm2Out.id;
  const unused = s.t.chain("unused");
  const unusedRule = s.t.dropRule(unused, {});
  return { ...s, shared, vm1In, vm2Out, vm2Udp, unused, unusedRule };
}

const frames = [
  eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").tcp(40000, 22).build(),
  eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").tcp(40000, 80).build(),
  eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").udp(5000, 53).build(),
  eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").udp(5000, 54).build(),
  eth(VM1_MAC, RA_MAC).ip4("10.9.1.1", "10.0.2.1").udp(5000, 53).build(),
  eth(VM1_MAC, "ff:ff:ff:ff:ff:ff").arpRequest(VM1_MAC, "10.0.1.1", "10.0.1.254").build(),
];

function same(a: SimResult, b: SimResult, what: string): void {
  assert.deepEqual(a.actions, b.actions, `${what}: actions`);
  assert.equal(a.dropReason, b.dropReason, `${what}: drop reason`);
  assert.equal(a.mask, b.mask, `${what}: mask`);
  assert.deepEqual([...a.tags].sort(), [...b.tags].sort(), `${what}: tags`);
}

test("a new view compiles no chain; a simulation compiles exactly the chains it crosses", () => {
  const s = topology();
  const view = new TopologyView(s.t.objects);
  assert.equal(view.chains.compiledCount, 0);
  const r = simulate(view, frames[0]!, { portId: s.vm1.id }, newSimContext("h1"));
  assert.equal(r.actions.at(-1)?.kind, "output", r.dropReason ?? undefined);
  assert.ok(view.chains.isCompiled(s.vm1In.id));
  assert.ok(view.chains.isCompiled(s.shared.id));
  assert.ok(view.chains.isCompiled(s.vm2Out.id));
  assert.equal(view.chains.isCompiled(s.unused.id), false);
  assert.equal(view.chains.compiledCount, 3);
});

test("lazily compiled chains decide, tag and mask as chains compiled up front", () => {
  const s = topology();
  const lazy = new TopologyView(s.t.objects);
  const eager = new TopologyView(s.t.objects);
  assert.equal([...eager.chains.values()].length, 4, "values() compiles every chain");
  assert.equal(eager.chains.compiledCount, 4);
  const cl = newSimContext("h1");
  const ce = newSimContext("h1");
  const verdicts = new Set<string>();
  for (const [i, f] of frames.entries()) {
    const a = simulate(lazy, f, { portId: s.vm1.id }, cl);
    const b = simulate(eager, f, { portId: s.vm1.id }, ce);
    same(a, b, `frame ${i}`);
    verdicts.add(a.dropReason ?? a.actions.at(-1)?.kind ?? "none");
  }
  // The frames exercise accepts and drops in each chain, not one verdict throughout.
  assert.ok(verdicts.size >= 3, [...verdicts].join(" | "));
});

test("a change to a chain nobody looked up yet names its flows' tags and takes effect when it is used", () => {
  const s = topology();
  const view = new TopologyView(s.t.objects);
  const ctx = newSimContext("h1");
  // Only vm1's chains are crossed: a frame from vm1 to the router's own address stays before vm2's chain.
  const arp = simulate(view, frames[5]!, { portId: s.vm1.id }, ctx);
  assert.equal(view.chains.isCompiled(s.vm2Out.id), false);
  const stale = view.apply({
    revision: 2,
    upserts: [{ rule: { ...s.vm2Udp, action: RA.RULE_ACTION_DROP } }],
    deletes: [],
  });
  assert.ok(stale.includes(`rule:${s.vm2Udp.id}`) && stale.includes(`chain:${s.vm2Out.id}`), stale.join(" "));
  assert.equal(view.chains.isCompiled(s.vm2Out.id), false, "still compiled only when used");
  assert.ok(!arp.tags.some((t) => stale.includes(t)), "the ARP answer did not cross vm2's chain");
  const dns = simulate(view, frames[2]!, { portId: s.vm1.id }, ctx);
  assert.ok(dns.dropReason?.includes(s.vm2Udp.id), dns.dropReason ?? undefined);
  // The same change made on a view that had compiled the chain before gives the same result.
  const eager = new TopologyView(s.t.objects);
  for (const _ of eager.chains.values());
  const eagerStale = eager.apply({
    revision: 2,
    upserts: [{ rule: { ...s.vm2Udp, action: RA.RULE_ACTION_DROP } }],
    deletes: [],
  });
  assert.deepEqual([...eagerStale].sort(), [...stale].sort());
  same(dns, simulate(eager, frames[2]!, { portId: s.vm1.id }, newSimContext("h1")), "after the change");
});

test("a change to a compiled chain drops its compiled form and invalidates the flows that crossed it", () => {
  const s = topology();
  const view = new TopologyView(s.t.objects);
  const ctx = newSimContext("h1");
  const before = simulate(view, frames[2]!, { portId: s.vm1.id }, ctx);
  assert.equal(before.actions.at(-1)?.kind, "output", before.dropReason ?? undefined);
  assert.ok(view.chains.isCompiled(s.vm2Out.id));
  const stale = view.apply({
    revision: 2,
    upserts: [],
    deletes: [{ kind: topologypb.TopologyKind.TOPOLOGY_KIND_RULE, id: s.vm2Udp.id }],
  });
  assert.ok(
    before.tags.some((t) => stale.includes(t)),
    "the flow through the chain is stale",
  );
  assert.equal(view.chains.isCompiled(s.vm2Out.id), false);
  assert.ok(view.chains.isCompiled(s.vm1In.id), "chains the change did not touch stay compiled");
  const after = simulate(view, frames[2]!, { portId: s.vm1.id }, ctx);
  assert.ok(after.dropReason?.includes("dropped by rule"), after.dropReason ?? undefined);
  // A chain deleted before anyone used it: its lookup finds nothing, and the packet fails closed.
  view.apply({
    revision: 3,
    upserts: [],
    deletes: [{ kind: topologypb.TopologyKind.TOPOLOGY_KIND_CHAIN, id: s.shared.id }],
  });
  const closed = simulate(view, frames[0]!, { portId: s.vm1.id }, ctx);
  assert.ok(closed.dropReason?.includes("not in the topology"), closed.dropReason ?? undefined);
  assert.equal(view.chains.get(s.shared.id), undefined);
});

test("rules replaced, moved between chains, deleted and re-added: each chain compiles what a new view would", () => {
  const s = topology();
  const chains = [s.shared, s.vm2Out, s.unused];
  const view = new TopologyView(s.t.objects);
  // The current rules by id, as a view built afresh from them would hold them.
  const current = new Map<string, topologypb.Rule>();
  for (const o of s.t.objects) if (o.rule) current.set(o.rule.id, o.rule);
  const seen: topologypb.Rule[] = [...current.values()];
  let seed = 7;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const ids = Array.from({ length: 12 }, (_, i) => `r-${i}`);
  let revision = 1;
  for (let step = 0; step < 600; step++) {
    const id = ids[rnd(ids.length)]!;
    const op = rnd(10);
    const change: topologypb.TopologyChange = { revision: ++revision, upserts: [], deletes: [] };
    if (op < 2 && current.has(id)) {
      change.deletes.push({ kind: topologypb.TopologyKind.TOPOLOGY_KIND_RULE, id });
      current.delete(id);
    } else if (op < 4 && seen.length > 0) {
      // An object the view has seen before, made current again (the same object, not a copy).
      const again = seen[rnd(seen.length)]!;
      change.upserts.push({ rule: again });
      current.set(again.id, again);
    } else {
      const chain = chains[rnd(chains.length)]!;
      const r: topologypb.Rule = {
        ...s.unusedRule,
        id,
        chainId: chain.id,
        position: rnd(20),
        action: rnd(2) === 0 ? RA.RULE_ACTION_ACCEPT : RA.RULE_ACTION_DROP,
      };
      change.upserts.push({ rule: r });
      current.set(id, r);
      seen.push(r);
    }
    view.apply(change);
    // Compile now and then (compiling compacts a chain's list), and always at the end.
    if (rnd(5) === 0 || step === 599) {
      const fresh = new TopologyView([
        ...s.t.objects.filter((o) => !o.rule),
        ...[...current.values()].map((rule) => ({ rule })),
      ]);
      for (const c of chains) {
        const got = view.chains.get(c.id)!.rules.map((r) => [r.id, r.position, r.action]);
        const want = fresh.chains.get(c.id)!.rules.map((r) => [r.id, r.position, r.action]);
        assert.deepEqual(got, want, `step ${step}, chain ${c.name}`);
      }
    }
  }
});
