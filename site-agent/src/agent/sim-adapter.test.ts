import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { parseIp4 } from "../packets/addr.js";
import { TCP_ACK, TCP_SYN } from "../packets/encode.js";
import { eth } from "../packets/packet-dsl.js";
import { EXT_MAC, RA_MAC, RB_MAC, twoSubnets, UP_MAC, VM1_MAC, VM2_MAC } from "../sim/test-topologies.js";
import { extractKey, KEY, KEY_SIZE, maskFromFields } from "./flow-key.js";
import { FlowTable } from "./flow-table.js";
import { EngineSimulator } from "./sim-adapter.js";

const RA = topologypb.RuleAction;

/** vm1 on h1, vm2 on h2; vm1 only lets return traffic in, vm2 takes any connection. */
function topology() {
  const s = twoSubnets({ vm2Host: "h2" });
  const out1 = s.t.chain("vm1-out");
  s.t.accept(out1, { matchReturnFlow: true });
  s.t.rule(out1, RA.RULE_ACTION_DROP, {});
  s.vm1.outboundFilterId = out1.id;
  const out2 = s.t.chain("vm2-out");
  s.t.accept(out2, { matchReturnFlow: true });
  s.t.accept(out2, {});
  s.vm2.outboundFilterId = out2.id;
  return s;
}

test("sim adapter: a reply dropped before its connection's state arrived is invalidated when it arrives", () => {
  const s = topology();
  const h1 = new EngineSimulator({ hostId: "h1" });
  const h2 = new EngineSimulator({ hostId: "h2" });
  for (const sim of [h1, h2]) sim.applySnapshot({ revision: 1, objects: s.t.objects });
  const syn = Buffer.from(eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").tcp(40000, 22, TCP_SYN).build());
  const reply = Buffer.from(
    eth(VM2_MAC, RB_MAC)
      .ip4("10.0.2.1", "10.0.1.1")
      .tcp(22, 40000, TCP_SYN | TCP_ACK)
      .build(),
  );
  const key = Buffer.alloc(KEY_SIZE);
  const input = (frame: Buffer, portId: string, now: number) => {
    extractKey(frame, 1, 0, key);
    return { frame, key, ingressPortId: portId, traced: false, now };
  };

  const forward = h1.simulate(input(syn, s.vm1.id, 0));
  assert.equal(forward.flowState.length, 1, "h1 commits the connection");

  // The reply reaches h2 before h1's flow state does: dropped, and cached as a drop.
  const early = h2.simulate(input(reply, s.vm2.id, 1));
  assert.equal(early.groups[0]?.outputs.length ?? 0, 0);
  assert.ok(early.dropReason?.includes("dropped by rule"), early.dropReason);
  const table = new FlowTable();
  const flow = table.install(
    {
      match: Buffer.from(key),
      mask: maskFromFields(early.maskFields!),
      actions: { outputs: [] },
      tags: early.tags,
    },
    1,
  );
  assert.ok(flow);

  // The state arrives: the tags it reports name the cached drop, which goes away.
  const stale = h2.installFlowState(forward.flowState, 2);
  assert.ok(
    stale.some((t) => early.tags.includes(t)),
    `drop tags ${early.tags.join(" ")} miss ${stale.join(" ")}`,
  );
  assert.equal(table.invalidate(stale), 1);
  assert.equal(table.lookup(Buffer.from(key), 60, 3), undefined);
  const late = h2.simulate(input(reply, s.vm2.id, 3));
  assert.equal(late.groups[0]?.outputs[0]?.kind, "tunnel", "the reply now passes as return traffic");
  assert.equal(late.dropReason, undefined);
  // A refresh of the same state (sent every second while the connection runs) changes no
  // decision, so it invalidates nothing: the reply's flow stays installed.
  assert.deepEqual(h2.installFlowState(forward.flowState, 4), []);
});

test("sim adapter: destinations behind one route share a megaflow unless something read the whole address", () => {
  const GW_MAC = 0x02000000f001;
  /** The flow vm1's packet to `dst` installs, and whether a packet to `other` then hits it. */
  const run = (filter: (s: ReturnType<typeof twoSubnets>) => void, dst: string, other: string) => {
    const s = twoSubnets();
    filter(s);
    const sim = new EngineSimulator({ hostId: "h1" });
    sim.applySnapshot({ revision: 1, objects: s.t.objects });
    // The default route's gateway is resolved (else the packet waits for ARP and nothing is cached).
    sim.state.arp.learn(s.r.id, parseIp4("203.0.113.1"), GW_MAC, 0);
    const frame = (to: string) =>
      Buffer.from(eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", to).tcp(40000, 80, TCP_SYN).build());
    const key = Buffer.alloc(KEY_SIZE);
    extractKey(frame(dst), 1, 0, key);
    const out = sim.simulate({ frame: frame(dst), key, ingressPortId: s.vm1.id, traced: false, now: 1 });
    assert.equal(out.groups[0]?.outputs[0]?.kind, "tunnel", "out through the uplink on the gateway host");
    assert.ok(out.cacheable);
    const table = new FlowTable();
    const flow = table.install(
      {
        match: Buffer.from(key),
        mask: maskFromFields(out.maskFields!, out.ipDstPrefixBits),
        actions: { outputs: [] },
        tags: out.tags,
      },
      1,
    );
    assert.ok(flow);
    const otherKey = Buffer.alloc(KEY_SIZE);
    extractKey(frame(other), 1, 0, otherKey);
    return { bits: out.ipDstPrefixBits, shared: table.lookup(otherKey, 60, 2) === flow };
  };
  const none = () => {};

  // Only the route lookup read the destination: the default route's flow covers its neighbours.
  const open = run(none, "198.51.100.7", "198.51.100.9");
  assert.ok(open.bits !== undefined && open.bits < 24, `prefix bits ${open.bits}`);
  assert.ok(open.shared, "a second destination behind the same route reuses the megaflow");
  // …but not a destination whose route lookup went elsewhere (10.0.2.0/24 is on-link).
  assert.equal(run(none, "198.51.100.7", "10.0.2.1").shared, false);

  // A stateful filter reads conntrack, keyed by the whole address: one flow per destination.
  const stateful = run(
    (s) => {
      const c = s.t.chain("vm1-in");
      s.t.accept(c, { matchReturnFlow: true });
      s.t.accept(c, {});
      s.vm1.inboundFilterId = c.id;
    },
    "198.51.100.7",
    "198.51.100.9",
  );
  assert.equal(stateful.bits, undefined);
  assert.equal(stateful.shared, false, "conntrack read the destination: no sharing");

  // A rule on one address reads the whole address too, even when it does not match.
  const ruled = run(
    (s) => {
      const c = s.t.chain("vm1-in");
      s.t.rule(c, RA.RULE_ACTION_DROP, { nwDst: "198.51.100.66/32" });
      s.t.accept(c, {});
      s.vm1.inboundFilterId = c.id;
    },
    "198.51.100.7",
    "198.51.100.9",
  );
  assert.equal(ruled.bits, undefined);
  assert.equal(ruled.shared, false, "a /32 rule read the destination: no sharing");
});

test("flow key: a destination prefix mask keeps only the leading bits of ipDst", () => {
  const m = maskFromFields(["ethType", "ipDst"], 13);
  assert.equal(m.subarray(KEY.ipDst, KEY.ipDst + 4).toString("hex"), "fff80000");
  assert.ok(m.subarray(KEY.ipDst + 4, KEY.ipDst + 16).every((b) => b === 0));
  assert.equal(m.readUInt16BE(KEY.ethType), 0xffff);
  assert.ok(
    maskFromFields(["ipDst"], 32)
      .subarray(KEY.ipDst, KEY.ipDst + 16)
      .every((b) => b === 0xff),
  );
  assert.ok(
    maskFromFields(["ipDst"])
      .subarray(KEY.ipDst, KEY.ipDst + 16)
      .every((b) => b === 0xff),
  );
  assert.ok(maskFromFields(["ethType"], 8).every((b, i) => i < KEY.ipDst || i >= KEY.ipDst + 16 || b === 0));
  assert.throws(() => maskFromFields(["ipDst"], 0), /ipDstBits/);
});

test("sim adapter: an ARP answer learned on an uplink is shared, and a peer's copy releases its held packet", () => {
  const s = twoSubnets();
  const h1 = new EngineSimulator({ hostId: "h1" });
  const gw = new EngineSimulator({ hostId: "gw" });
  for (const sim of [h1, gw]) sim.applySnapshot({ revision: 1, objects: s.t.objects });
  const key = Buffer.alloc(KEY_SIZE);
  const input = (frame: Buffer, portId: string, now: number) => {
    extractKey(frame, 1, 0, key);
    return { frame, key, ingressPortId: portId, traced: false, now };
  };
  // h1 routes out of the uplink (on gw) and does not know the next hop: the packet waits.
  const out = Buffer.from(eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "198.51.100.7").udp(5000, 53).build());
  const held = h1.simulate(input(out, s.vm1.id, 0));
  assert.equal(held.groups[0]?.outputs.length ?? 0, 0, "nothing leaves while the next hop is unknown");
  assert.equal(held.generated.length, 1, "an ARP request goes out of the uplink");

  // The neighbour's answer reaches the gateway, which owns the uplink.
  const answer = Buffer.from(
    eth(EXT_MAC, UP_MAC).arpReply(EXT_MAC, "203.0.113.1", UP_MAC, "203.0.113.2").build(),
  );
  const learned = gw.simulate(input(answer, s.up.id, 1));
  const shared = learned.flowState.filter((e) => e.arp);
  assert.equal(shared.length, 1, "the gateway shares what it learned");
  assert.equal(shared[0]!.arp!.routerId, s.r.id);
  // The same answer again is not passed on to every host again; a changed MAC is.
  assert.equal(gw.simulate(input(answer, s.up.id, 2)).flowState.filter((e) => e.arp).length, 0);
  const moved = Buffer.from(
    eth(VM2_MAC, UP_MAC).arpReply(VM2_MAC, "203.0.113.1", UP_MAC, "203.0.113.2").build(),
  );
  assert.equal(gw.simulate(input(moved, s.up.id, 2)).flowState.filter((e) => e.arp).length, 1);
  assert.equal(gw.simulate(input(answer, s.up.id, 2)).flowState.filter((e) => e.arp).length, 1);

  // An ARP reply on an interior router port is not shared.
  const inside = Buffer.from(
    eth(VM1_MAC, RA_MAC).arpReply(VM1_MAC, "10.0.1.1", RA_MAC, "10.0.1.254").build(),
  );
  assert.equal(h1.simulate(input(inside, s.vm1.id, 2)).flowState.filter((e) => e.arp).length, 0);

  const tags = h1.installFlowState(shared, 3);
  assert.ok(
    tags.some((t) => t.startsWith(`arp:${s.r.id}:`)),
    `tags: ${tags.join(",")}`,
  );
  const released = h1.takeResubmits();
  assert.equal(released.length, 1, "the held packet is released");
  assert.equal(released[0]!.ingressPortId, s.vm1.id);
  assert.deepEqual(h1.takeResubmits(), [], "each released packet is handed out once");
  // Now h1 forwards to the neighbour's MAC by itself.
  const again = h1.simulate(input(out, s.vm1.id, 4));
  assert.equal(again.groups[0]?.outputs.length, 1);
  assert.deepEqual(
    again.groups[0]?.rewrites.setEthDst,
    Buffer.from(EXT_MAC.split(":").map((x) => Number.parseInt(x, 16))),
  );
});

test("sim adapter: outcomes with the same engine mask share one field list (read-only)", () => {
  const s = topology();
  const h1 = new EngineSimulator({ hostId: "h1" });
  h1.applySnapshot({ revision: 1, objects: s.t.objects });
  const key = Buffer.alloc(KEY_SIZE);
  const run = (sport: number) => {
    const frame = Buffer.from(
      eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").tcp(sport, 22, TCP_SYN).build(),
    );
    extractKey(frame, 1, 0, key);
    return h1.simulate({ frame, key, ingressPortId: s.vm1.id, traced: false, now: 0 });
  };
  const a = run(40000);
  const b = run(40001);
  assert.ok(a.maskFields && a.maskFields.length > 0);
  assert.ok(a.maskFields.includes("ethType"), "protocol fields come with the ether type");
  assert.equal(b.maskFields, a.maskFields, "the second flow reuses the first one's list");
  assert.deepEqual(maskFromFields(b.maskFields!), maskFromFields(a.maskFields));
});
