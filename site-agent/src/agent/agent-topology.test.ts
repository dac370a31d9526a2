import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { eth } from "../packets/packet-dsl.js";
import { RA_MAC, twoSubnets, VM1_MAC } from "../sim/test-topologies.js";
import { AgentTopology } from "./agent-topology.js";
import { KEY_SIZE } from "./flow-key.js";
import { EngineSimulator } from "./sim-adapter.js";

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
