import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { formatIp4, formatIp6 } from "../packets/addr.js";
import { checksumError } from "../packets/checksum.js";
import { TCP_ACK, TCP_RST, TCP_SYN } from "../packets/encode.js";
import { parsePacket } from "../packets/packet.js";
import { eth } from "../packets/packet-dsl.js";
import { F } from "./flow-match.js";
import type { SimResult } from "./result.js";
import { simulate } from "./simulate.js";
import { type ConditionSpec, newSimContext, TopologyBuilder } from "./topology-builder.js";
import { TopologyView } from "./topology-view.js";

const RA = topologypb.RuleAction;
const M1 = "02:00:00:00:00:01";
const M2 = "02:00:00:00:00:02";

/** vm1 → vm2 on one bridge; `chain` is vm2's outbound filter (traffic toward vm2). */
function setup(build: (t: TopologyBuilder, chain: topologypb.Chain) => void) {
  const t = new TopologyBuilder();
  const h = t.host("h1", "192.168.0.1");
  const br = t.bridge();
  const chain = t.chain("to-vm2");
  const vm1 = t.vmPort(br, h, M1, ["10.0.0.1", "fd00::1"]);
  const vm2 = t.vmPort(br, h, M2, ["10.0.0.2", "fd00::2"], { outboundFilterId: chain.id });
  build(t, chain);
  const view = new TopologyView(t.objects);
  const ctx = newSimContext("h1");
  const send = (frame: Uint8Array): SimResult => simulate(view, frame, { portId: vm1.id }, ctx);
  return { t, view, ctx, vm1, vm2, chain, send, br };
}
const udp = (src = "10.0.0.1", dst = "10.0.0.2", sport = 1000, dport = 53) =>
  eth(M1, M2).ip4(src, dst).udp(sport, dport).build();
const passed = (r: SimResult) => r.actions.some((a) => a.kind === "output");

/** One rule `action` with `cond` followed by a default drop; checks which frames pass. */
function check(
  cond: ConditionSpec,
  pass: Uint8Array[],
  fail: Uint8Array[],
  extra?: (t: TopologyBuilder) => void,
) {
  const s = setup((t, c) => {
    extra?.(t);
    t.accept(c, cond);
    t.dropRule(c);
  });
  for (const f of pass) assert.ok(passed(s.send(f)), `expected to pass: ${JSON.stringify(cond)}`);
  for (const f of fail) assert.ok(!passed(s.send(f)), `expected to be dropped: ${JSON.stringify(cond)}`);
  return s;
}

test("chain: accept and drop, with the deciding rule's tag and the chain's tag", () => {
  let accept = "";
  const s = setup((t, c) => {
    accept = t.accept(c, { nwProto: 17 }).id;
    t.dropRule(c);
  });
  const r = s.send(udp());
  assert.ok(passed(r));
  assert.ok(r.tags.includes(`rule:${accept}`) && r.tags.includes(`chain:${s.chain.id}`));
  assert.ok(r.mask & F.NW_PROTO);
  const d = s.send(eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").tcp(1, 2).build());
  assert.match(d.dropReason ?? "", /dropped by rule/);
  assert.equal(d.cacheable, true);
});

test("chain: L2 conditions — eth src/dst, ether type, VLAN, with inversion", () => {
  check(
    { ethSrc: M1 },
    [udp()],
    [eth("02:00:00:00:00:09", M2).ip4("10.0.0.1", "10.0.0.2").udp(1, 2).build()],
  );
  check(
    { ethSrc: M1, invEthSrc: true },
    [eth("02:00:00:00:00:09", M2).ip4("10.0.0.1", "10.0.0.2").udp(1, 2).build()],
    [udp()],
  );
  check({ ethDst: M2 }, [udp()], []);
  check({ etherType: 0x0806 }, [eth(M1, M2).arpReply(M1, "10.0.0.1", M2, "10.0.0.2").build()], [udp()]);
  check(
    { etherType: 0x0800, invEtherType: true },
    [eth(M1, M2).arpReply(M1, "10.0.0.1", M2, "10.0.0.2").build()],
    [udp()],
  );
  check({ noVlan: true }, [udp()], []);
});

test("chain: L3 conditions — IPv4 and IPv6 prefixes, protocol, inversion", () => {
  check({ nwSrc: "10.0.0.0/30" }, [udp()], [udp("10.0.0.9")]);
  check({ nwSrc: "10.0.0.0/30", invNwSrc: true }, [udp("10.0.0.9")], [udp()]);
  check({ nwDst: "10.0.0.2" }, [udp()], [udp("10.0.0.1", "10.0.0.3")]);
  check(
    { nwSrc: "fd00::/64" },
    [eth(M1, M2).ip6("fd00::1", "fd00::2").udp(1, 2).build()],
    [udp(), eth(M1, M2).ip6("fd01::1", "fd00::2").udp(1, 2).build()],
  );
  check(
    { nwProto: 6, invNwProto: true },
    [udp()],
    [eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").tcp(1, 2).build()],
  );
});

test("chain: L4 port ranges with inversion; later fragments never match ports", () => {
  const s = check(
    { tpDst: { start: 50, end: 60 } },
    [udp(), udp(undefined, undefined, 1, 50), udp(undefined, undefined, 1, 60)],
    [udp(undefined, undefined, 1, 61)],
  );
  assert.ok(s.send(udp()).mask & F.TP_DST);
  check({ tpSrc: { start: 1000, end: 1000 }, invTpSrc: true }, [udp(undefined, undefined, 999)], [udp()]);
  check(
    { tpDst: { start: 0, end: 65535 } },
    [udp()],
    [eth(M1, M2).ip4("10.0.0.1", "10.0.0.2", { fragOffset: 10, proto: 17 }).payload("xxxxxxxx").build()],
  );
});

test("chain: in/out ports, port groups and IP address groups", () => {
  let vm1Id = "";
  const s = setup((t, c) => {
    t.accept(c, { inPortIds: ["nope"] });
    t.dropRule(c);
  });
  assert.ok(!passed(s.send(udp())));
  vm1Id = s.vm1.id;
  check({ inPortIds: [vm1Id] }, [udp()], []);
  check({ inPortIds: [vm1Id], invInPorts: true }, [], [udp()]);
  check({ outPortIds: ["port-4"] }, [udp()], []);
  let pg = "";
  check({ portGroupId: "portgroup-5" }, [udp()], [], (t) => {
    pg = t.portGroup([vm1Id]).id;
  });
  assert.equal(pg, "portgroup-5");
  let ig = "";
  const g = check({ ipAddrGroupSrc: "ipgroup-5" }, [udp(), udp("10.1.2.3")], [udp("10.0.0.9")], (t) => {
    ig = t.ipGroup(["10.0.0.1", "10.1.0.0/16"]).id;
  });
  assert.ok(g.send(udp()).tags.includes(`ipgroup:${ig}`));
  check(
    { ipAddrGroupDst: "ipgroup-5", invIpAddrGroupDst: true },
    [udp("10.0.0.1", "10.0.0.2")],
    [udp("10.0.0.1", "10.0.0.1")],
    (t) => {
      t.ipGroup(["10.0.0.1"]);
    },
  );
});

test("chain: jump and return; a jump loop is detected and drops", () => {
  const s = setup((t, c) => {
    const sub = t.chain("sub");
    t.rule(sub, RA.RULE_ACTION_RETURN, { nwProto: 17 });
    t.dropRule(sub);
    t.rule(c, RA.RULE_ACTION_JUMP, {}, { jumpChainId: sub.id });
    t.accept(c);
  });
  assert.ok(passed(s.send(udp())), "RETURN continues after the jump");
  assert.match(
    s.send(eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").tcp(1, 2).build()).dropReason ?? "",
    /dropped by rule/,
  );

  const loop = setup((t, c) => {
    const a = t.chain("a");
    const b = t.chain("b");
    t.rule(c, RA.RULE_ACTION_JUMP, {}, { jumpChainId: a.id });
    t.rule(a, RA.RULE_ACTION_JUMP, {}, { jumpChainId: b.id });
    t.rule(b, RA.RULE_ACTION_JUMP, {}, { jumpChainId: a.id });
  });
  assert.match(loop.send(udp()).dropReason ?? "", /jump loop: chain-\d+ → chain-\d+ → chain-\d+ → chain-\d+/);
});

test("chain: reject answers TCP with RST and others with ICMP admin-prohibited", () => {
  const s = setup((t, c) => {
    t.rule(c, RA.RULE_ACTION_REJECT);
  });
  const syn = s.send(eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").tcp(4000, 22, TCP_SYN, 500).build());
  assert.match(syn.dropReason ?? "", /rejected/);
  const rst = parsePacket(syn.generated[0]!.frame);
  assert.equal(rst.tcpFlags, TCP_RST | TCP_ACK);
  assert.equal(rst.tcpAck, 501);
  assert.equal(rst.tpSrc, 22);
  assert.equal(formatIp4(rst.nwDst), "10.0.0.1");
  assert.deepEqual(syn.generated[0]!.actions, [{ kind: "output", portId: s.vm1.id }]);
  const u = s.send(udp());
  const icmp = parsePacket(u.generated[0]!.frame);
  assert.equal(icmp.icmpType, 3);
  assert.equal(icmp.icmpCode, 13);
});

test("chain: a rule that does not compile fails closed naming the field; a missing chain drops", () => {
  const s = setup((t, c) => {
    t.accept(c, { nwSrc: "10.0.0.0/99" });
  });
  assert.match(s.send(udp()).dropReason ?? "", /condition\.nw_src "10\.0\.0\.0\/99" is not an IPv4 prefix/);
  const t = new TopologyBuilder();
  const h = t.host("h1", "1.1.1.1");
  const br = t.bridge();
  const a = t.vmPort(br, h, M1, [], { inboundFilterId: "chain-missing" });
  t.vmPort(br, h, M2, []);
  const r = simulate(new TopologyView(t.objects), udp(), { portId: a.id }, newSimContext("h1"));
  assert.match(r.dropReason ?? "", /chain chain-missing is not in the topology/);
  assert.ok(r.tags.includes("chain:chain-missing"), "the chain appearing later invalidates this drop");
});

test("chain: trace records ports, devices, chains, rules and the decision", () => {
  const s = setup((t, c) => {
    t.accept(c, { nwProto: 17 });
  });
  const r = simulate(s.view, udp(), { portId: s.vm1.id }, { ...s.ctx, trace: true });
  const kinds = r.trace!.map((x) => x.kind);
  for (const k of ["port", "device", "chain", "rule", "decision"]) assert.ok(kinds.includes(k as never), k);
  assert.equal(s.send(udp()).trace, null, "no trace unless asked");
});

test("chain: for ARP frames, address conditions see the sender/target protocol addresses (as MidoNet)", () => {
  // Anti-spoofing as the site controller writes it: drop unless the source is in the port's group.
  const s = setup((t, c) => {
    t.rule(c, RA.RULE_ACTION_DROP, { ipAddrGroupSrc: t.ipGroup(["10.0.0.1"]).id, invIpAddrGroupSrc: true });
    t.accept(c, { etherType: 0x0806, nwDst: "10.0.0.2/32" });
    t.dropRule(c);
  });
  assert.ok(passed(s.send(eth(M1, M2).arpReply(M1, "10.0.0.1", M2, "10.0.0.2").build())));
  assert.ok(
    !passed(s.send(eth(M1, M2).arpReply(M1, "10.0.0.9", M2, "10.0.0.2").build())),
    "spoofed ARP sender",
  );
  assert.ok(!passed(s.send(eth(M1, M2).arpReply(M1, "10.0.0.1", M2, "10.0.0.3").build())));
  // nw_proto on ARP is the operation.
  check(
    { etherType: 0x0806, nwProto: 2 },
    [eth(M1, M2).arpReply(M1, "10.0.0.1", M2, "10.0.0.2").build()],
    [udp()],
  );
});

test("chain: reject never answers a TCP reset, an ICMP error, a later fragment or a broadcast, and is never a flow", () => {
  const s = setup((t, c) => {
    t.rule(c, RA.RULE_ACTION_REJECT);
  });
  const silent: [string, Uint8Array][] = [
    ["a TCP reset", eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").tcp(4000, 22, TCP_RST).build()],
    ["an ICMP error", eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").icmp(3, 1).payload(new Uint8Array(28)).build()],
    [
      "a later fragment",
      eth(M1, M2).ip4("10.0.0.1", "10.0.0.2", { fragOffset: 8, proto: 17 }).payload("xxxxxxxx").build(),
    ],
    ["a multicast destination", eth(M1, M2).ip4("10.0.0.1", "224.0.0.251").udp(5353, 5353).build()],
    ["a source naming no host", eth(M1, M2).ip4("0.0.0.0", "10.0.0.2").udp(68, 67).build()],
  ];
  for (const [what, f] of silent) {
    const r = s.send(f);
    assert.match(r.dropReason ?? "", /rejected by rule/, what);
    assert.equal(r.generated.length, 0, `no reply to ${what}`);
    assert.equal(r.cacheable, false, `${what}: not a flow, or it would silence the packets that get a reply`);
  }
  // An echo request and a SYN are answered (and are not flows either).
  const echo = s.send(eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").icmpEcho(1, 1).build());
  assert.equal(parsePacket(echo.generated[0]!.frame).icmpCode, 13);
  assert.equal(echo.cacheable, false);
});

test("chain: reject answers IPv6 with ICMPv6 admin-prohibited or a TCP reset, checksums valid", () => {
  const s = setup((t, c) => {
    t.rule(c, RA.RULE_ACTION_REJECT);
  });
  const u = s.send(eth(M1, M2).ip6("fd00::1", "fd00::2").udp(1000, 53).payload("q").build());
  assert.match(u.dropReason ?? "", /rejected by rule/);
  const icmp = parsePacket(u.generated[0]!.frame);
  assert.equal(icmp.error, null);
  assert.equal(checksumError(icmp), null);
  assert.equal(icmp.icmpType, 1);
  assert.equal(icmp.icmpCode, 1);
  assert.equal(formatIp6(icmp.nwSrc6), "fd00::2");
  assert.equal(formatIp6(icmp.nwDst6), "fd00::1");
  assert.deepEqual(u.generated[0]!.actions, [{ kind: "output", portId: s.vm1.id }]);
  const syn = s.send(eth(M1, M2).ip6("fd00::1", "fd00::2").tcp(4000, 22, TCP_SYN, 77).build());
  const rst = parsePacket(syn.generated[0]!.frame);
  assert.equal(checksumError(rst), null);
  assert.equal(rst.tcpFlags, TCP_RST | TCP_ACK);
  assert.equal(rst.tcpAck, 78);
  assert.equal(rst.tpSrc, 22);
  assert.equal(rst.tpDst, 4000);
  // An ICMPv6 error is not answered.
  const err = s.send(eth(M1, M2).ip6("fd00::1", "fd00::2").icmp(1, 4).payload(new Uint8Array(48)).build());
  assert.equal(err.generated.length, 0);
});

test("chain: every condition field decides on its own, and its inversion decides the other way", () => {
  const v6 = (src: string, dst: string) => eth(M1, M2).ip6(src, dst).udp(1, 2).build();
  const tagged = (vlan: number) => eth(M1, M2).vlan(vlan).ip4("10.0.0.1", "10.0.0.2").udp(1, 2).build();
  // vm1 is port-3 and vm2 port-4 in setup(); extras are built after them.
  const cases: [string, ConditionSpec, Uint8Array[], Uint8Array[], ((t: TopologyBuilder) => void)?][] = [
    ["out ports", { outPortIds: ["port-4"] }, [udp()], []],
    ["out ports, other", { outPortIds: ["port-9"] }, [], [udp()]],
    ["out ports inverted", { outPortIds: ["port-4"], invOutPorts: true }, [], [udp()]],
    [
      "port group inverted",
      { portGroupId: "portgroup-5", invPortGroup: true },
      [],
      [udp()],
      (t) => {
        t.portGroup(["port-3"]);
      },
    ],
    [
      "port group without the port",
      { portGroupId: "portgroup-5" },
      [],
      [udp()],
      (t) => {
        t.portGroup(["port-4"]);
      },
    ],
    ["eth dst inverted", { ethDst: M2, invEthDst: true }, [], [udp()]],
    ["eth dst other, inverted", { ethDst: "02:00:00:00:00:09", invEthDst: true }, [udp()], []],
    ["VLAN id", { vlan: 7 }, [tagged(7)], [tagged(8), udp()]],
    ["no VLAN", { noVlan: true }, [udp()], [tagged(7)]],
    [
      "tp dst inverted",
      { tpDst: { start: 53, end: 53 }, invTpDst: true },
      [udp(undefined, undefined, 1, 54)],
      [udp()],
    ],
    [
      "tp src range",
      { tpSrc: { start: 1000, end: 2000 } },
      [udp(), udp(undefined, undefined, 2000)],
      [udp(undefined, undefined, 2001)],
    ],
    ["nw dst inverted", { nwDst: "10.0.0.2/32", invNwDst: true }, [udp("10.0.0.1", "10.0.0.3")], [udp()]],
    ["nw dst IPv6", { nwDst: "fd00::2/128" }, [v6("fd00::1", "fd00::2")], [v6("fd00::1", "fd00::3"), udp()]],
    [
      "address group IPv6",
      { ipAddrGroupSrc: "ipgroup-5" },
      [v6("fd00::1", "fd00::2")],
      [v6("fd01::1", "fd00::2")],
      (t) => {
        t.ipGroup(["fd00::/64"]);
      },
    ],
    [
      "address group src inverted",
      { ipAddrGroupSrc: "ipgroup-5", invIpAddrGroupSrc: true },
      [udp("10.0.0.9")],
      [udp()],
      (t) => {
        t.ipGroup(["10.0.0.1"]);
      },
    ],
    [
      "address group dst",
      { ipAddrGroupDst: "ipgroup-5" },
      [udp()],
      [udp("10.0.0.1", "10.0.0.3")],
      (t) => {
        t.ipGroup(["10.0.0.2"]);
      },
    ],
    ["missing address group matches nothing", { ipAddrGroupSrc: "ipgroup-404" }, [], [udp()]],
    ["ether type IPv6", { etherType: 0x86dd }, [v6("fd00::1", "fd00::2")], [udp()]],
    ["protocol ICMP", { nwProto: 1 }, [eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").icmpEcho().build()], [udp()]],
  ];
  for (const [name, cond, pass, fail, extra] of cases) {
    const s = setup((t, c) => {
      extra?.(t);
      t.accept(c, cond);
      t.dropRule(c);
    });
    for (const f of pass) assert.ok(passed(s.send(f)), `${name}: expected to pass`);
    for (const f of fail) assert.ok(!passed(s.send(f)), `${name}: expected to be dropped`);
  }
});

/**
 * vm1 and vm2 on one bridge whose inbound chain (`rules` fills it) sees both directions; `from1`
 * and `from2` simulate a frame from each VM with one shared conntrack state.
 */
function bridgeFilter(name: string, rules: (t: TopologyBuilder, c: topologypb.Chain) => void) {
  const t = new TopologyBuilder();
  const h = t.host("h1", "192.168.0.1");
  const c = t.chain(name);
  const br = t.bridge({ inboundFilterId: c.id });
  rules(t, c);
  const vm1 = t.vmPort(br, h, M1, ["10.0.0.1"]);
  const vm2 = t.vmPort(br, h, M2, ["10.0.0.2"]);
  const view = new TopologyView(t.objects);
  const ctx = newSimContext("h1");
  return {
    from1: (f: Uint8Array) => simulate(view, f, { portId: vm1.id }, ctx),
    from2: (f: Uint8Array) => simulate(view, f, { portId: vm2.id }, ctx),
  };
}

test("chain: conntrack forward matches the packet opening a connection, not its reply", () => {
  // Only forward packets pass the chain.
  const { from1, from2 } = bridgeFilter("forward-only", (t, c) => {
    t.accept(c, { matchForwardFlow: true });
    t.dropRule(c);
  });
  const req = from1(eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").tcp(4000, 80).build());
  assert.ok(passed(req));
  assert.equal(req.conntrack.length, 1);
  assert.ok(req.mask & F.TP_SRC && req.mask & F.NW_SRC, "the tuple is in the mask");
  const reply = from2(
    eth(M2, M1)
      .ip4("10.0.0.2", "10.0.0.1")
      .tcp(80, 4000, TCP_SYN | TCP_ACK)
      .build(),
  );
  assert.match(reply.dropReason ?? "", /dropped by rule/, "a return packet is not forward");
  assert.ok(reply.tags.includes(`ct:${req.conntrack[0]!.key}`));
  // The next packet of the opening side is still forward.
  assert.ok(passed(from1(eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").tcp(4000, 80, TCP_ACK).build())));
});

test("chain: conntrack established matches a connection's later packets and its replies; inverted, only opening ones", () => {
  // Established passes; new passes only to TCP 80.
  const { from1, from2 } = bridgeFilter("stateful", (t, c) => {
    t.accept(c, { matchEstablished: true });
    t.accept(c, { matchEstablished: true, invEstablished: true, nwProto: 6, tpDst: { start: 80, end: 80 } });
    t.dropRule(c);
  });
  const syn = eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").tcp(4000, 80, TCP_SYN).build();

  const first = from1(syn);
  assert.ok(passed(first), "a new connection to port 80 opens");
  assert.equal(
    first.cacheable,
    false,
    "a result that read 'new' is not a flow: the next packet is established",
  );
  assert.equal(first.conntrack.length, 1, "the opening packet commits its connection");

  const second = from1(eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").tcp(4000, 80, TCP_ACK).build());
  assert.ok(passed(second), "its next packet is established");
  assert.equal(second.cacheable, true);
  assert.ok(
    second.tags.includes(`ct:${first.conntrack[0]!.key}`),
    `tagged with its entry (expiry invalidates it): ${second.tags.join(" ")}`,
  );

  const reply = from2(
    eth(M2, M1)
      .ip4("10.0.0.2", "10.0.0.1")
      .tcp(80, 4000, TCP_SYN | TCP_ACK)
      .build(),
  );
  assert.ok(passed(reply), "a reply is established");

  const ssh = from1(eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").tcp(4001, 22, TCP_SYN).build());
  assert.match(ssh.dropReason ?? "", /dropped by rule/, "a new connection elsewhere is neither rule's");
  const arp = from1(eth(M1, "ff:ff:ff:ff:ff:ff").arpRequest(M1, "10.0.0.1", "10.0.0.2").build());
  assert.ok(!passed(arp), "non-IP frames are never established");

  // Inverted alone: the opening packet passes, the connection's later packets do not.
  const newOnly = bridgeFilter("new-only", (t, c) => {
    t.accept(c, { matchEstablished: true, invEstablished: true });
    t.dropRule(c);
  });
  const udp1 = eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").udp(5000, 53).build();
  assert.ok(passed(newOnly.from1(udp1)));
  const later = newOnly.from1(udp1);
  assert.match(later.dropReason ?? "", /dropped by rule/);
  assert.equal(later.cacheable, true, "established is decided by its entry, so the drop may be a flow");
});

test("chain: jumps nested deeper than the bound drop, naming the bound", () => {
  const s = setup((t, c) => {
    let from = c;
    for (let i = 0; i < 20; i++) {
      const next = t.chain(`level-${i}`);
      t.rule(from, RA.RULE_ACTION_JUMP, {}, { jumpChainId: next.id });
      from = next;
    }
    t.accept(from);
  });
  assert.match(s.send(udp()).dropReason ?? "", /chain jumps nested deeper than 16/);
  const shallow = setup((t, c) => {
    const a = t.chain("a");
    t.rule(c, RA.RULE_ACTION_JUMP, {}, { jumpChainId: a.id });
    t.accept(a);
  });
  assert.ok(passed(shallow.send(udp())));
});
