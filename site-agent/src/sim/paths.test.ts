import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { parseIp4, parseMac } from "../packets/addr.js";
import { TCP_ACK, TCP_SYN } from "../packets/encode.js";
import { eth } from "../packets/packet-dsl.js";
import { F } from "./flow-match.js";
import { InMemoryNatBlockRegistry } from "./nat-ports.js";
import type { Action, SimResult } from "./result.js";
import { simulate } from "./simulate.js";
import { EXT_MAC, RA_MAC, RB_MAC, twoSubnets, UP_MAC, VM1_MAC, VM2_MAC } from "./test-topologies.js";
import { newSimContext } from "./topology-builder.js";
import { TopologyView } from "./topology-view.js";
import type { SimContext } from "./walk.js";

const RA = topologypb.RuleAction;
const outputs = (r: SimResult) => r.actions.filter((a) => a.kind === "output" || a.kind === "encap");
const setOf = (r: SimResult) =>
  r.actions.find((a): a is Extract<Action, { kind: "set" }> => a.kind === "set");

/** Security groups as the site controller translates them: anti-spoofing on each VM's inbound
 * chain; on each VM's outbound chain accept return flows, then the group's ingress rules, drop. */
function withSecurityGroups(opts: { pingFromGroup?: boolean } = {}) {
  const s = twoSubnets();
  const { t } = s;
  const members = t.ipGroup(["10.0.1.1"]);
  const spoof1 = t.chain("vm1-in");
  t.rule(spoof1, RA.RULE_ACTION_DROP, { ethSrc: VM1_MAC, invEthSrc: true });
  t.rule(spoof1, RA.RULE_ACTION_DROP, { etherType: 0x0800, nwSrc: "10.0.1.1/32", invNwSrc: true });
  const out1 = t.chain("vm1-out");
  t.accept(out1, { matchReturnFlow: true });
  t.dropRule(out1);
  const out2 = t.chain("vm2-out");
  t.accept(out2, { matchReturnFlow: true });
  t.accept(out2, { nwProto: 6, tpDst: { start: 22, end: 22 }, ipAddrGroupSrc: members.id });
  if (opts.pingFromGroup) t.accept(out2, { nwProto: 1, ipAddrGroupSrc: members.id });
  t.dropRule(out2);
  s.vm1.inboundFilterId = spoof1.id;
  s.vm1.outboundFilterId = out1.id;
  s.vm2.outboundFilterId = out2.id;
  return { ...s, members };
}

type SgWorld = ReturnType<typeof withSecurityGroups>;

/** vm1's SSH SYN to vm2 from `sport` (what vm2's group admits). */
const sshSyn = (view: TopologyView, s: SgWorld, ctx: SimContext, sport = 40000) =>
  simulate(
    view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").tcp(sport, 22, TCP_SYN).build(),
    { portId: s.vm1.id },
    ctx,
  );

/** vm2's SYN-ACK back to vm1's port 40000. */
const sshReply = (view: TopologyView, s: SgWorld, ctx: SimContext) =>
  simulate(
    view,
    eth(VM2_MAC, RB_MAC)
      .ip4("10.0.2.1", "10.0.1.1")
      .tcp(22, 40000, TCP_SYN | TCP_ACK)
      .build(),
    { portId: s.vm2.id },
    ctx,
  );

test("path: stateful security group allows the reply but not a new connection from the other side", () => {
  const s = withSecurityGroups();
  const view = new TopologyView(s.t.objects);
  const ctx = newSimContext("h1");
  const syn = sshSyn(view, s, ctx);
  assert.deepEqual(outputs(syn), [{ kind: "output", portId: s.vm2.id }]);
  assert.equal(syn.conntrack.length, 1, "the forward connection is committed");
  assert.ok(syn.tags.includes(`ipgroup:${s.members.id}`));

  const reply = sshReply(view, s, ctx);
  assert.deepEqual(outputs(reply), [{ kind: "output", portId: s.vm1.id }]);
  assert.ok(
    [...reply.tags].some((x) => x === `ct:${syn.conntrack[0]!.key}`),
    "the return flow depends on the entry",
  );

  const fresh = simulate(
    view,
    eth(VM2_MAC, RB_MAC).ip4("10.0.2.1", "10.0.1.1").tcp(5555, 22, TCP_SYN).build(),
    { portId: s.vm2.id },
    ctx,
  );
  assert.match(fresh.dropReason ?? "", /dropped by rule/);
  const notAllowed = simulate(
    view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").tcp(40001, 80, TCP_SYN).build(),
    { portId: s.vm1.id },
    ctx,
  );
  assert.ok(notAllowed.dropReason);
  assert.equal(notAllowed.conntrack.length, 0, "a dropped packet commits no connection");

  // When the entry expires the reply is no longer allowed (and its flow's ct tag is stale).
  const stale = ctx.state.expire(ctx.now + ctx.state.limits.conntrackIdleMs);
  assert.ok(stale.includes(`ct:${syn.conntrack[0]!.key}`));
  const late = simulate(
    view,
    eth(VM2_MAC, RB_MAC).ip4("10.0.2.1", "10.0.1.1").tcp(22, 40000, TCP_ACK).build(),
    { portId: s.vm2.id },
    ctx,
  );
  assert.ok(late.dropReason);
});

test("path: a stateful security group lets the echo reply of an allowed ping back, not a new ping", () => {
  // vm2 accepts ping from the group (vm1); vm1 accepts only return flows.
  const s = withSecurityGroups({ pingFromGroup: true });
  const view = new TopologyView(s.t.objects);
  const ctx = newSimContext("h1");
  const request = simulate(
    view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").icmpEcho(7, 1).build(),
    { portId: s.vm1.id },
    ctx,
  );
  assert.deepEqual(outputs(request), [{ kind: "output", portId: s.vm2.id }]);
  assert.equal(request.conntrack.length, 1, "the echo request is committed");
  const reply = simulate(
    view,
    eth(VM2_MAC, RB_MAC).ip4("10.0.2.1", "10.0.1.1").icmpEcho(7, 1, true).build(),
    { portId: s.vm2.id },
    ctx,
  );
  assert.deepEqual(outputs(reply), [{ kind: "output", portId: s.vm1.id }], "the echo reply is a return flow");
  assert.ok([...reply.tags].some((x) => x === `ct:${request.conntrack[0]!.key}`));
  const otherId = simulate(
    view,
    eth(VM2_MAC, RB_MAC).ip4("10.0.2.1", "10.0.1.1").icmpEcho(8, 1, true).build(),
    { portId: s.vm2.id },
    ctx,
  );
  assert.match(otherId.dropReason ?? "", /dropped by rule/, "a reply to no request of ours");
  const fresh = simulate(
    view,
    eth(VM2_MAC, RB_MAC).ip4("10.0.2.1", "10.0.1.1").icmpEcho(9, 1).build(),
    { portId: s.vm2.id },
    ctx,
  );
  assert.match(fresh.dropReason ?? "", /dropped by rule/, "vm1 takes no new ping");
});

test("path: anti-spoofing drops frames from a foreign MAC or IP", () => {
  const s = withSecurityGroups();
  const view = new TopologyView(s.t.objects);
  const ctx = newSimContext("h1");
  const mac = simulate(
    view,
    eth("02:66:66:66:66:66", RA_MAC).ip4("10.0.1.1", "10.0.2.1").tcp(1, 22).build(),
    { portId: s.vm1.id },
    ctx,
  );
  assert.match(mac.dropReason ?? "", /dropped by rule/);
  const ip = simulate(
    view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.66", "10.0.2.1").tcp(1, 22).build(),
    { portId: s.vm1.id },
    ctx,
  );
  assert.match(ip.dropReason ?? "", /dropped by rule/);
});

function withSnat() {
  const s = twoSubnets();
  const { t } = s;
  const post = t.chain("r-out");
  t.rule(
    post,
    RA.RULE_ACTION_SNAT,
    { outPortIds: [s.up.id], nwSrc: "10.0.0.0/8" },
    {
      natTargets: [{ ipStart: "203.0.113.2", ipEnd: "203.0.113.2", portStart: 1024, portEnd: 65535 }],
    },
  );
  const pre = t.chain("r-in");
  t.rule(pre, RA.RULE_ACTION_REVERSE_SNAT, { inPortIds: [s.up.id], nwDst: "203.0.113.2/32" });
  s.r.outboundFilterId = post.id;
  s.r.inboundFilterId = pre.id;
  return s;
}

test("path: SNAT out of an uplink and reverse SNAT of the reply", () => {
  const s = withSnat();
  const view = new TopologyView(s.t.objects);
  const registry = new InMemoryNatBlockRegistry();
  const h1 = newSimContext("h1", registry);
  h1.state.arp.learn(s.r.id, parseIp4("203.0.113.1"), parseMac(EXT_MAC), h1.now);
  const out = simulate(
    view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "198.51.100.7").tcp(40000, 80).build(),
    { portId: s.vm1.id },
    h1,
  );
  const set = setOf(out)!;
  assert.equal(set.nwSrc, parseIp4("203.0.113.2"));
  assert.ok(set.tpSrc! >= 1024);
  assert.equal(set.ethDst, parseMac(EXT_MAC));
  assert.deepEqual(outputs(out), [
    { kind: "encap", tunnelKey: s.up.tunnelKey, remoteIp: "192.168.0.9", remotePort: 4789, hostId: "gw" },
  ]);
  assert.equal(out.nat.length, 1);
  assert.equal(registry.ownerOf(s.r.id, parseIp4("203.0.113.2"), set.tpSrc!), "h1");

  // The same connection re-simulated keeps its binding.
  const again = simulate(
    view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "198.51.100.7").tcp(40000, 80).build(),
    { portId: s.vm1.id },
    h1,
  );
  assert.equal(setOf(again)!.tpSrc, set.tpSrc);
  assert.equal(again.nat.length, 0);

  // The reply arrives at the gateway: the binding travelled there as flow state.
  const gw = newSimContext("gw", registry);
  gw.state.nat.put({ ...out.nat[0]! });
  const back = simulate(
    view,
    eth(EXT_MAC, UP_MAC).ip4("198.51.100.7", "203.0.113.2").tcp(80, set.tpSrc!, TCP_ACK).build(),
    { portId: s.up.id },
    gw,
  );
  const bset = setOf(back)!;
  assert.equal(bset.nwDst, parseIp4("10.0.1.1"));
  assert.equal(bset.tpDst, 40000);
  assert.deepEqual(outputs(back), [
    { kind: "encap", tunnelKey: s.vm1.tunnelKey, remoteIp: "192.168.0.1", remotePort: 4789, hostId: "h1" },
  ]);
  assert.ok(back.tags.includes(`nat:${out.nat[0]!.key}`));
});

test("path: SNAT ports never collide between hosts (block leases)", () => {
  const s = withSnat();
  const view = new TopologyView(s.t.objects);
  const registry = new InMemoryNatBlockRegistry(64);
  const used = new Map<number, string>();
  for (const host of ["h1", "h2", "h3"]) {
    const ctx = newSimContext(host, registry);
    ctx.state.arp.learn(s.r.id, parseIp4("203.0.113.1"), parseMac(EXT_MAC), ctx.now);
    for (let i = 0; i < 100; i++) {
      // Every host translates the very same inner tuples: only leases keep them apart.
      const r = simulate(
        view,
        eth(VM1_MAC, RA_MAC)
          .ip4("10.0.1.1", "198.51.100.7")
          .tcp(30000 + i, 80)
          .build(),
        { portId: s.vm1.id },
        ctx,
      );
      const port = setOf(r)!.tpSrc!;
      assert.equal(
        used.get(port),
        undefined,
        `port ${port} handed out twice (${used.get(port)} and ${host})`,
      );
      used.set(port, host);
      assert.equal(registry.ownerOf(s.r.id, parseIp4("203.0.113.2"), port), host);
    }
  }
  assert.equal(used.size, 300);
});

test("path: SNAT with no port block left drops with a reason", () => {
  const s = twoSubnets();
  const post = s.t.chain();
  s.t.rule(
    post,
    RA.RULE_ACTION_SNAT,
    {},
    { natTargets: [{ ipStart: "203.0.113.2", ipEnd: "203.0.113.2", portStart: 2000, portEnd: 2001 }] },
  );
  s.r.outboundFilterId = post.id;
  const view = new TopologyView(s.t.objects);
  const registry = new InMemoryNatBlockRegistry(64);
  const ctx = newSimContext("h1", registry);
  ctx.state.arp.learn(s.r.id, parseIp4("203.0.113.1"), parseMac(EXT_MAC), ctx.now);
  const send = (p: number) =>
    simulate(
      view,
      eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "198.51.100.7").udp(p, 53).build(),
      { portId: s.vm1.id },
      ctx,
    );
  assert.ok(setOf(send(1))!.tpSrc! >= 2000);
  assert.ok(setOf(send(2))!.tpSrc! <= 2001);
  assert.match(send(3).dropReason ?? "", /no SNAT port available/);
  // Another host cannot get the block this one holds.
  const other = newSimContext("h2", registry);
  other.state.arp.learn(s.r.id, parseIp4("203.0.113.1"), parseMac(EXT_MAC), other.now);
  assert.match(
    simulate(
      view,
      eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "198.51.100.7").udp(9, 53).build(),
      { portId: s.vm1.id },
      other,
    ).dropReason ?? "",
    /no SNAT port/,
  );
});

test("path: floating IP is 1:1 NAT in both directions, without state", () => {
  const s = twoSubnets();
  const { t } = s;
  const pre = t.chain("r-in");
  t.rule(
    pre,
    RA.RULE_ACTION_DNAT,
    { inPortIds: [s.up.id], nwDst: "203.0.113.10/32" },
    {
      natTargets: [{ ipStart: "10.0.2.1", ipEnd: "10.0.2.1", portStart: 0, portEnd: 0 }],
    },
  );
  const post = t.chain("r-out");
  t.rule(
    post,
    RA.RULE_ACTION_SNAT,
    { outPortIds: [s.up.id], nwSrc: "10.0.2.1/32" },
    {
      natTargets: [{ ipStart: "203.0.113.10", ipEnd: "203.0.113.10", portStart: 0, portEnd: 0 }],
    },
  );
  s.r.inboundFilterId = pre.id;
  s.r.outboundFilterId = post.id;
  const view = new TopologyView(t.objects);
  const gw = newSimContext("gw");
  const inbound = simulate(
    view,
    eth(EXT_MAC, UP_MAC).ip4("198.51.100.7", "203.0.113.10").tcp(5000, 443, TCP_SYN).build(),
    { portId: s.up.id },
    gw,
  );
  const iset = setOf(inbound)!;
  assert.equal(iset.nwDst, parseIp4("10.0.2.1"));
  assert.equal(iset.tpDst, undefined, "ports untouched");
  assert.equal(iset.ethDst, parseMac(VM2_MAC));
  assert.deepEqual(outputs(inbound), [
    { kind: "encap", tunnelKey: s.vm2.tunnelKey, remoteIp: "192.168.0.1", remotePort: 4789, hostId: "h1" },
  ]);
  assert.equal(inbound.nat.length, 0);

  const h1 = newSimContext("h1");
  h1.state.arp.learn(s.r.id, parseIp4("203.0.113.1"), parseMac(EXT_MAC), h1.now);
  const outbound = simulate(
    view,
    eth(VM2_MAC, RB_MAC).ip4("10.0.2.1", "198.51.100.7").tcp(443, 5000, TCP_ACK).build(),
    { portId: s.vm2.id },
    h1,
  );
  assert.equal(setOf(outbound)!.nwSrc, parseIp4("203.0.113.10"));
  assert.equal(outbound.cacheable, true);
  // A VM without a floating IP is not translated by that rule.
  const other = simulate(
    view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "198.51.100.7").tcp(1, 2).build(),
    { portId: s.vm1.id },
    h1,
  );
  assert.equal(setOf(other)!.nwSrc, undefined);
});

test("path: stateful DNAT (port forward) and reverse DNAT of the reply", () => {
  const s = twoSubnets();
  const { t } = s;
  const pre = t.chain("r-in");
  t.rule(
    pre,
    RA.RULE_ACTION_DNAT,
    { inPortIds: [s.up.id], nwDst: "203.0.113.2/32", nwProto: 6, tpDst: { start: 8022, end: 8022 } },
    {
      natTargets: [{ ipStart: "10.0.2.1", ipEnd: "10.0.2.1", portStart: 22, portEnd: 22 }],
    },
  );
  const post = t.chain("r-out");
  t.rule(post, RA.RULE_ACTION_REVERSE_DNAT, { outPortIds: [s.up.id] });
  s.r.inboundFilterId = pre.id;
  s.r.outboundFilterId = post.id;
  const view = new TopologyView(t.objects);
  const ctx = newSimContext("h1");
  ctx.state.arp.learn(s.r.id, parseIp4("203.0.113.1"), parseMac(EXT_MAC), ctx.now);
  const inbound = simulate(
    view,
    eth(EXT_MAC, UP_MAC).ip4("198.51.100.7", "203.0.113.2").tcp(5000, 8022, TCP_SYN).build(),
    { portId: s.up.id },
    ctx,
  );
  assert.equal(setOf(inbound)!.tpDst, 22);
  assert.equal(inbound.nat.length, 1);
  const reply = simulate(
    view,
    eth(VM2_MAC, RB_MAC).ip4("10.0.2.1", "198.51.100.7").tcp(22, 5000, TCP_ACK).build(),
    { portId: s.vm2.id },
    ctx,
  );
  const rs = setOf(reply)!;
  assert.equal(rs.nwSrc, parseIp4("203.0.113.2"));
  assert.equal(rs.tpSrc, 8022);
});

test("path: a loop between devices is cut by the device bound", () => {
  const s = twoSubnets();
  // Route 10.0.2.0/24 back out of interface A with gateway vm1's address: the router sends to
  // bridge A... which delivers to vm1; make it loop instead by peering two routers' routes.
  const r2 = s.t.router();
  const a = s.t.port(s.r.id, topologypb.PortType.PORT_TYPE_ROUTER_INTERFACE, {
    mac: "02:00:00:00:aa:01",
    ips: ["10.9.0.1/30"],
  });
  const b = s.t.port(r2.id, topologypb.PortType.PORT_TYPE_ROUTER_INTERFACE, {
    mac: "02:00:00:00:aa:02",
    ips: ["10.9.0.2/30"],
    peerId: a.id,
  });
  a.peerId = b.id;
  s.t.route(s.r, "192.0.2.0/24", a, { nextHopGateway: "10.9.0.2" });
  s.t.route(r2, "192.0.2.0/24", b, { nextHopGateway: "10.9.0.1" });
  const view = new TopologyView(s.t.objects);
  const ctx = newSimContext("h1");
  ctx.state.arp.learn(s.r.id, parseIp4("10.9.0.2"), parseMac("02:00:00:00:aa:02"), ctx.now);
  ctx.state.arp.learn(r2.id, parseIp4("10.9.0.1"), parseMac("02:00:00:00:aa:01"), ctx.now);
  const r = simulate(
    view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "192.0.2.9", { ttl: 255 }).udp(1, 2).build(),
    { portId: s.vm1.id },
    ctx,
  );
  assert.match(r.dropReason ?? "", /loop: more than 16 devices/);
});

test("path: a connection translated again after its binding lapsed (before expiry ran) leaks no port", () => {
  const s = withSnat();
  const view = new TopologyView(s.t.objects);
  const h1 = newSimContext("h1", new InMemoryNatBlockRegistry());
  const gwIp = parseIp4("203.0.113.1");
  const send = () => {
    h1.state.arp.learn(s.r.id, gwIp, parseMac(EXT_MAC), h1.now);
    return simulate(
      view,
      eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "198.51.100.7").tcp(40000, 80).build(),
      { portId: s.vm1.id },
      h1,
    );
  };
  const first = send();
  assert.equal(first.nat.length, 1);
  // The binding lapses; the agent's expiry timer has not run yet when the next packet comes.
  h1.now += h1.state.limits.natIdleMs + 1;
  const second = send();
  assert.equal(second.nat.length, 1, "a new binding replaces the lapsed one");
  assert.equal(h1.state.nat.size, 1);
  assert.equal(h1.state.nat.reverseSize, 1, "the lapsed binding's reverse entry went with it");
  // Everything expires, then the block idles out: no port may still count as used.
  h1.now += h1.state.limits.natIdleMs + 1;
  h1.state.expire(h1.now);
  assert.equal(h1.state.nat.size, 0);
  assert.equal(h1.state.nat.reverseSize, 0);
  h1.now += h1.state.limits.natBlockIdleMs;
  h1.state.expire(h1.now);
  assert.deepEqual(h1.state.natPorts.heldBlocks(), [], "every port freed, so the block went back");
});

test("path: a full conntrack table refuses new connections (not cached), and a full NAT table new bindings", () => {
  const s = withSecurityGroups();
  const view = new TopologyView(s.t.objects);
  const ctx = newSimContext("h1", undefined, { conntrackEntries: 1 });
  const syn = (sport: number) => sshSyn(view, s, ctx, sport);
  assert.equal(syn(40000).conntrack.length, 1);
  const refused = syn(40001);
  assert.match(refused.dropReason ?? "", /conntrack table full \(1 entries\): new connection refused/);
  assert.equal(refused.cacheable, false, "room may come back: the next packet is simulated again");
  assert.deepEqual(refused.conntrack, []);
  assert.equal(ctx.state.conntrack.size, 1);
  // The connection already in the table goes on: its reply is a return flow.
  const reply = sshReply(view, s, ctx);
  assert.deepEqual(outputs(reply), [{ kind: "output", portId: s.vm1.id }]);

  const n = withSnat();
  const nview = new TopologyView(n.t.objects);
  const h1 = newSimContext("h1", new InMemoryNatBlockRegistry(), { natBindings: 1 });
  h1.state.arp.learn(n.r.id, parseIp4("203.0.113.1"), parseMac(EXT_MAC), h1.now);
  const out = (sport: number) =>
    simulate(
      nview,
      eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "198.51.100.7").tcp(sport, 80).build(),
      { portId: n.vm1.id },
      h1,
    );
  assert.equal(out(40000).nat.length, 1);
  const full = out(40001);
  assert.match(full.dropReason ?? "", /NAT table full \(1 bindings\)/);
  assert.equal(full.cacheable, false, "a flow would keep dropping the connection after room came back");
  assert.equal(h1.state.nat.size, 1);
  h1.state.expire(h1.now + h1.state.limits.natIdleMs);
  h1.now += h1.state.limits.natIdleMs;
  h1.state.arp.learn(n.r.id, parseIp4("203.0.113.1"), parseMac(EXT_MAC), h1.now);
  assert.equal(out(40001).nat.length, 1, "translated once there is room");
});

test("path: trace records each port, device, chain, rule, conntrack, route, NAT step and the decision, in order", () => {
  const s = withSnat();
  const vmIn = s.t.chain("vm1-in");
  const accept = s.t.accept(vmIn, { matchForwardFlow: true });
  s.vm1.inboundFilterId = vmIn.id;
  const view = new TopologyView(s.t.objects);
  const ctx = { ...newSimContext("h1"), trace: true };
  ctx.state.arp.learn(s.r.id, parseIp4("203.0.113.1"), parseMac(EXT_MAC), ctx.now);
  const r = simulate(
    view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "198.51.100.7").tcp(4000, 80).build(),
    { portId: s.vm1.id },
    ctx,
  );
  const snatRule = s.t.objects.find((o) => o.rule?.action === RA.RULE_ACTION_SNAT)!.rule!;
  const expected: [string, string, RegExp][] = [
    ["port", s.vm1.id, /enter/],
    ["chain", vmIn.id, /evaluate 1 rules/],
    ["conntrack", "|6|167772417|4000|3325256711|80", /forward flow/],
    ["rule", accept.id, /accept/],
    ["device", s.bA.id, /bridge A/],
    ["decision", s.bA.id, new RegExp(`forward to ${s.ifA.bridgePort.id}`)],
    ["port", s.ifA.routerPort.id, /enter/],
    ["device", s.r.id, /router r/],
    ["chain", s.r.inboundFilterId, /evaluate/],
    ["route", s.routeDefault.id, /0\.0\.0\.0\/0 via .* gw 203\.0\.113\.1/],
    ["chain", s.r.outboundFilterId, /evaluate/],
    ["nat", snatRule.id, /^snat to 203\.0\.113\.2:\d+$/],
    ["decision", "gw", /encap key \d+ to 192\.168\.0\.9/],
  ];
  // In this order (other steps may come between).
  let i = 0;
  for (const step of r.trace!) {
    const e = expected[i];
    if (e && step.kind === e[0] && step.id === e[1] && e[2].test(step.detail)) i++;
  }
  assert.equal(i, expected.length, `missing ${JSON.stringify(expected[i])} in ${JSON.stringify(r.trace)}`);
  // The same simulation without tracing: the same result, no trace.
  const plain = newSimContext("h1");
  plain.state.arp.learn(s.r.id, parseIp4("203.0.113.1"), parseMac(EXT_MAC), plain.now);
  const q = simulate(
    view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "198.51.100.7").tcp(4000, 80).build(),
    { portId: s.vm1.id },
    plain,
  );
  assert.equal(q.trace, null);
  assert.deepEqual(q.actions, r.actions);
  assert.deepEqual(q.tags, r.tags);
  assert.equal(q.mask, r.mask);
});

test("path: SNAT translates an echo identifier like a port: two VMs and two hosts pinging one host with the same id each get their own replies", () => {
  const s = withSnat();
  const vm3 = s.t.vmPort(s.bA, s.h1, "02:00:00:00:01:03", ["10.0.1.3"]);
  const vm4 = s.t.vmPort(s.bA, s.t.host("h2", "192.168.0.2"), "02:00:00:00:01:04", ["10.0.1.4"]);
  const view = new TopologyView(s.t.objects);
  const registry = new InMemoryNatBlockRegistry(64);
  const h1 = newSimContext("h1", registry);
  const h2 = newSimContext("h2", registry);
  for (const c of [h1, h2]) c.state.arp.learn(s.r.id, parseIp4("203.0.113.1"), parseMac(EXT_MAC), c.now);
  const ping = (ctx: typeof h1, mac: string, src: string, port: string) =>
    simulate(view, eth(mac, RA_MAC).ip4(src, "198.51.100.7").icmpEcho(77, 1).build(), { portId: port }, ctx);
  // vm1 and vm3 on h1, vm4 on h2.
  const sent = [
    { r: ping(h1, VM1_MAC, "10.0.1.1", s.vm1.id), ip: "10.0.1.1", host: "h1" },
    { r: ping(h1, "02:00:00:00:01:03", "10.0.1.3", vm3.id), ip: "10.0.1.3", host: "h1" },
    { r: ping(h2, "02:00:00:00:01:04", "10.0.1.4", vm4.id), ip: "10.0.1.4", host: "h2" },
  ];
  const ids = sent.map(({ r }) => {
    const set = setOf(r)!;
    assert.equal(set.nwSrc, parseIp4("203.0.113.2"));
    assert.equal(r.nat.length, 1);
    assert.ok(r.mask & F.ICMP_ID, "the identifier is in the flow's match");
    return set.icmpId!;
  });
  assert.equal(new Set(ids).size, 3, `three distinct translated identifiers: ${ids.join(", ")}`);
  for (const [i, { host }] of sent.entries())
    assert.equal(
      registry.ownerOf(s.r.id, parseIp4("203.0.113.2"), ids[i]!),
      host,
      "from the host's own block",
    );

  // At the gateway (bindings travelled there as flow state), each reply goes back to its sender
  // with the identifier it sent.
  const gw = newSimContext("gw", registry);
  for (const { r } of sent) gw.state.nat.put({ ...r.nat[0]! });
  for (const [i, { ip }] of sent.entries()) {
    const reply = simulate(
      view,
      eth(EXT_MAC, UP_MAC).ip4("198.51.100.7", "203.0.113.2").icmpEcho(ids[i]!, 1, true).build(),
      { portId: s.up.id },
      gw,
    );
    const set = setOf(reply);
    assert.ok(set, `reply ${i}: ${reply.dropReason ?? JSON.stringify(reply.actions)}`);
    assert.equal(set.nwDst, parseIp4(ip));
    assert.equal(set.icmpId, 77);
  }
  // The same request again keeps its binding (and identifier).
  assert.equal(setOf(ping(h1, VM1_MAC, "10.0.1.1", s.vm1.id))!.icmpId, ids[0]);
});

test("path: SNAT leaves bytes 4-5 of ICMP messages other than echo alone (a parameter problem's pointer)", () => {
  const s = withSnat();
  const view = new TopologyView(s.t.objects);
  const ctx = newSimContext("h1", new InMemoryNatBlockRegistry(64));
  ctx.state.arp.learn(s.r.id, parseIp4("203.0.113.1"), parseMac(EXT_MAC), ctx.now);
  // Parameter problem (type 12), pointer 20 in byte 4: the VM answering an external host.
  const r = simulate(
    view,
    eth(VM1_MAC, RA_MAC)
      .ip4("10.0.1.1", "198.51.100.7")
      .icmp(12, 0, 20 << 24)
      .build(),
    { portId: s.vm1.id },
    ctx,
  );
  const set = setOf(r)!;
  assert.equal(set.nwSrc, parseIp4("203.0.113.2"), "the address is translated");
  assert.equal(set.icmpId, undefined, "bytes 4-5 are not an identifier here");
});

test("path: a REJECT's reset reaches a sender behind a stateful group that accepts only return traffic", () => {
  const s = withSecurityGroups();
  const rej = s.t.chain("vm2-reject");
  s.t.rule(rej, RA.RULE_ACTION_REJECT, { nwProto: 6 });
  s.vm2.outboundFilterId = rej.id;
  const view = new TopologyView(s.t.objects);
  const ctx = newSimContext("h1");
  const r = simulate(
    view,
    eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").tcp(40000, 23, TCP_SYN).build(),
    { portId: s.vm1.id },
    ctx,
  );
  assert.match(r.dropReason ?? "", /rejected by rule/);
  const rst = r.generated.find((g) => g.why === "reject")!;
  assert.deepEqual(outputs({ ...r, actions: rst.actions }), [{ kind: "output", portId: s.vm1.id }]);
  assert.equal(ctx.state.conntrack.size, 0, "neither the rejected packet nor its reset commits a connection");
});

test("path: an ICMP error about a connection is related traffic for the group of the host that opened it", () => {
  const s = withSecurityGroups();
  // vm2 takes UDP 53 from the group; vm1 takes only return traffic.
  const out2 = s.t.objects.find((o) => o.chain?.id === s.vm2.outboundFilterId)!.chain!;
  s.t.rule(out2, RA.RULE_ACTION_ACCEPT, { nwProto: 17, tpDst: { start: 53, end: 53 } }, { position: 2 });
  const view = new TopologyView(s.t.objects);
  const ctx = newSimContext("h1");
  const query = eth(VM1_MAC, RA_MAC).ip4("10.0.1.1", "10.0.2.1").udp(40000, 53).build();
  assert.deepEqual(outputs(simulate(view, query, { portId: s.vm1.id }, ctx)), [
    { kind: "output", portId: s.vm2.id },
  ]);
  // vm2's kernel answers port unreachable, quoting the query as vm2 received it (TTL one lower).
  const quoted = (src: string, sport: number) => {
    const q = eth(VM1_MAC, RA_MAC).ip4(src, "10.0.2.1", { ttl: 63 }).udp(sport, 53).build();
    return q.subarray(14, 14 + 28);
  };
  const error = (q: Uint8Array) =>
    simulate(
      view,
      eth(VM2_MAC, RB_MAC).ip4("10.0.2.1", "10.0.1.1").icmp(3, 3).payload(q).build(),
      { portId: s.vm2.id },
      ctx,
    );
  const related = error(quoted("10.0.1.1", 40000));
  assert.deepEqual(outputs(related), [{ kind: "output", portId: s.vm1.id }]);
  assert.equal(related.cacheable, false, "decided by the quoted packet, which no flow key holds");
  // About no connection of vm1's (another port), or quoting another sender: not related.
  assert.match(error(quoted("10.0.1.1", 40001)).dropReason ?? "", /dropped by rule/);
  assert.match(error(quoted("10.0.1.7", 40000)).dropReason ?? "", /dropped by rule/);
  assert.equal(ctx.state.conntrack.size, 1, "an error commits no connection");
});
