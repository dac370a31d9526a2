import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { eth } from "../packets/packet-dsl.js";
import { RA_MAC, twoSubnets, VM1_MAC } from "../sim/test-topologies.js";
import { AgentTopology } from "./agent-topology.js";
import { KEY_SIZE } from "./flow-key.js";
import { EngineSimulator } from "./sim-adapter.js";
import { joinSnapshot, type SnapshotRules } from "./snapshot-rules.js";
import { eventOf, ruleWithUnknownField } from "./testing/wire.js";
import { WatchEventDecoder } from "./watch-event-decoder.js";

const RA = topologypb.RuleAction;

test("a snapshot goes into the store and the simulator's view; a change into both, with both's tags", () => {
  const s = twoSubnets();
  const out = s.t.chain("vm1-in");
  const rule = s.t.rule(out, RA.RULE_ACTION_DROP, {});
  s.vm1.inboundFilterId = out.id;
  const sim = new EngineSimulator({ hostId: "h1" });
  const topology = new AgentTopology(sim);
  assert.equal(topology.ready, false);
  topology.applySnapshot({ revision: 3, objects: s.t.objects });
  assert.equal(topology.ready, true);
  assert.equal(topology.revision, 3);
  assert.equal(topology.store.ports.get(s.vm1.id)?.mac, s.vm1.mac);
  assert.equal(sim.view.revision, 3);

  // The simulator can simulate against it: the chain on what vm1 sends drops.
  const frame = Buffer.from(eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").udp(1, 2).build());
  const input = { frame, key: Buffer.alloc(KEY_SIZE), ingressPortId: s.vm1.id, traced: false, now: 0 };
  const dropped = sim.simulate(input);
  assert.ok(dropped.dropReason?.includes(rule.id), dropped.dropReason);

  // Turning the rule into an accept: the store names the rule, the view its chain too.
  const tags = topology.applyChange({
    revision: 4,
    upserts: [{ rule: { ...rule, action: RA.RULE_ACTION_ACCEPT } }],
    deletes: [],
  });
  assert.equal(topology.revision, 4);
  assert.ok(tags.has(`rule:${rule.id}`));
  assert.ok(tags.has(`chain:${out.id}`), [...tags].join(" "));
  assert.equal(sim.simulate(input).dropReason, undefined);
});

test("a decoded snapshot's rules are read only for the chains a simulation crosses; bad bytes fail closed", () => {
  const s = twoSubnets();
  const used = s.t.chain("vm1-in");
  const bad = s.t.dropRule(used, { nwSrc: "10.9.0.0/16" });
  s.t.accept(used, {});
  s.vm1.inboundFilterId = used.id;
  const unused = s.t.chain("unused");
  const idle = s.t.dropRule(unused, { nwSrc: "10.8.0.0/16" });
  const bytes = Buffer.from(
    topologypb.WatchTopologyResponse.encode({ snapshot: { revision: 1, objects: s.t.objects } }).finish(),
  );
  const decoded = joinSnapshot([new WatchEventDecoder().decode(bytes).snapshot!]);
  const rules = decoded.packedRules as SnapshotRules;
  const sim = new EngineSimulator({ hostId: "h1" });
  const topology = new AgentTopology(sim);
  topology.applySnapshot(decoded);
  assert.equal(rules.decoded, 0, "nothing read yet");

  const frame = Buffer.from(eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").udp(1, 2).build());
  const input = { frame, key: Buffer.alloc(KEY_SIZE), ingressPortId: s.vm1.id, traced: false, now: 0 };
  const ok = sim.simulate(input);
  assert.equal(ok.dropReason, undefined);
  assert.equal(rules.decoded, 2, "vm1's chain (its two rules) was compiled, the unused chain's rule not");
  assert.ok(rules.find(idle.id) >= 0 && rules.find(bad.id) >= 0);

  // The same snapshot with the first rule's prefix length corrupted: that rule fails closed.
  const at = bytes.indexOf(Buffer.from([106, "10.9.0.0/16".length]));
  assert.ok(at > 0);
  bytes[at + 1] = 120;
  const broken = new AgentTopology(new EngineSimulator({ hostId: "h1" }));
  broken.applySnapshot(joinSnapshot([new WatchEventDecoder().decode(bytes).snapshot!]));
  const dropped = (broken.simulator as EngineSimulator).simulate(input);
  assert.match(dropped.dropReason ?? "", new RegExp(`rule ${bad.id}: cannot be decoded`));
});

test("an ACCEPT rule with a condition field the agent does not know drops what it would have let through (fail closed)", () => {
  const s = twoSubnets();
  const chain = s.t.chain("vm1-in");
  s.t.dropRule(chain, {});
  s.vm1.inboundFilterId = chain.id;
  const bytes = topologypb.WatchTopologyResponse.encode({
    snapshot: { revision: 1, objects: s.t.objects },
  }).finish();
  const decoder = new WatchEventDecoder();
  const sim = new EngineSimulator({ hostId: "h1" });
  const topology = new AgentTopology(sim);
  topology.applySnapshot(joinSnapshot([decoder.decode(bytes).snapshot!]));
  const frame = Buffer.from(eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").udp(1, 2).build());
  const input = { frame, key: Buffer.alloc(KEY_SIZE), ingressPortId: s.vm1.id, traced: false, now: 0 };
  assert.match(sim.simulate(input).dropReason ?? "", /dropped by rule/);

  // A newer controller's ACCEPT for UDP, narrowed by condition field 40, ahead of the drop.
  const change = decoder.decode(
    eventOf("change", [ruleWithUnknownField("r-new", chain.id, RA.RULE_ACTION_ACCEPT, 40, 0)]),
  ).change!;
  const tags = topology.applyChange(change);
  assert.ok(tags.has(`chain:${chain.id}`));
  const r = sim.simulate(input);
  assert.match(
    r.dropReason ?? "",
    /rule r-new: cannot be decoded \(condition field 40 is not known to this agent\)/,
  );
  assert.equal(r.groups.flatMap((g) => g.outputs).length, 0, "nothing forwarded");
});
