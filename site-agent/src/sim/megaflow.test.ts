import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import fc from "fast-check";
import { parseIp4, parseMac } from "../packets/addr.js";
import { encodePacket, type PacketSpec } from "../packets/encode.js";
import { F } from "./flow-match.js";
import type { SimResult } from "./result.js";
import { simulate } from "./simulate.js";
import { EXT_MAC, RA_MAC, RB_MAC, twoSubnets, UP_MAC, VM1_MAC, VM2_MAC } from "./test-topologies.js";
import { newSimContext } from "./topology-builder.js";
import { TopologyView } from "./topology-view.js";

// The megaflow contract: a cacheable result holds for every packet that agrees with the simulated
// one on the fields in its mask (and on the first `dstBits` bits of the IPv4 destination). Checked
// by simulating a packet, rewriting every field outside its mask at random, simulating that too on
// identical fresh state, and requiring the same actions, drop reason, tags and mask.

const RA = topologypb.RuleAction;
const RT = topologypb.RouteType;
const VM3_MAC = "02:00:00:00:01:03";

function topology() {
  const s = twoSubnets();
  const { t } = s;
  // vm3's outbound filter rewrites every destination, with no condition reading it: a packet
  // already addressed to the target gets no `set`, and its flow must not cover packets that do.
  const toVm3 = t.chain("vm3-out");
  t.rule(
    toVm3,
    RA.RULE_ACTION_DNAT,
    {},
    { natTargets: [{ ipStart: "10.0.1.77", ipEnd: "10.0.1.77", portStart: 0, portEnd: 0 }] },
  );
  const vm3 = t.vmPort(s.bA, s.h1, VM3_MAC, ["10.0.1.3"], { outboundFilterId: toVm3.id });
  const members = t.ipGroup(["10.0.1.0/24"]);
  // Anti-spoofing on vm1, a stateful group on vm2 (ssh and dns from the group, ping from anyone).
  const spoof = t.chain("vm1-in");
  t.rule(spoof, RA.RULE_ACTION_DROP, { ethSrc: VM1_MAC, invEthSrc: true });
  t.rule(spoof, RA.RULE_ACTION_DROP, { etherType: 0x0800, nwSrc: "10.0.1.1/32", invNwSrc: true });
  s.vm1.inboundFilterId = spoof.id;
  const sg = t.chain("vm2-sg");
  t.accept(sg, { matchReturnFlow: true });
  t.accept(sg, { nwProto: 6, tpDst: { start: 22, end: 22 }, ipAddrGroupSrc: members.id });
  t.accept(sg, { nwProto: 17, tpDst: { start: 53, end: 53 }, tpSrc: { start: 1024, end: 65535 } });
  t.accept(sg, { nwProto: 1 });
  t.rule(sg, RA.RULE_ACTION_REJECT, { nwProto: 6, tpDst: { start: 23, end: 23 } });
  t.dropRule(sg);
  s.vm2.outboundFilterId = sg.id;
  // The router: floating IP 203.0.113.10 ↔ vm2, SNAT of everything else out of the uplink.
  const pre = t.chain("r-in");
  t.rule(
    pre,
    RA.RULE_ACTION_DNAT,
    { inPortIds: [s.up.id], nwDst: "203.0.113.10/32" },
    { natTargets: [{ ipStart: "10.0.2.1", ipEnd: "10.0.2.1", portStart: 0, portEnd: 0 }] },
  );
  t.rule(pre, RA.RULE_ACTION_REVERSE_SNAT, { inPortIds: [s.up.id], nwDst: "203.0.113.2/32" });
  const post = t.chain("r-out");
  t.rule(
    post,
    RA.RULE_ACTION_SNAT,
    { outPortIds: [s.up.id], nwSrc: "10.0.2.1/32" },
    { natTargets: [{ ipStart: "203.0.113.10", ipEnd: "203.0.113.10", portStart: 0, portEnd: 0 }] },
  );
  t.rule(
    post,
    RA.RULE_ACTION_SNAT,
    { outPortIds: [s.up.id], nwSrc: "10.0.0.0/8" },
    { natTargets: [{ ipStart: "203.0.113.2", ipEnd: "203.0.113.2", portStart: 1024, portEnd: 65535 }] },
  );
  s.r.inboundFilterId = pre.id;
  s.r.outboundFilterId = post.id;
  // ECMP to 198.51.100.0/24, a reject and a blackhole route.
  t.route(s.r, "198.51.100.0/24", s.up, { nextHopGateway: "203.0.113.1" });
  t.route(s.r, "198.51.100.0/24", s.up, { nextHopGateway: "203.0.113.3" });
  t.route(s.r, "10.9.0.0/16", null, { type: RT.ROUTE_TYPE_REJECT });
  t.route(s.r, "10.8.0.0/16", null, { type: RT.ROUTE_TYPE_BLACKHOLE });
  // 172.16.0.0/12 through vm3 as a gateway (no chain reads the destination on that path), with a
  // blackhole inside it: there only the prefix bits the trie examined may be in the mask.
  t.route(s.r, "172.16.0.0/12", s.ifA.routerPort, { nextHopGateway: "10.0.1.3" });
  t.route(s.r, "172.16.5.0/24", null, { type: RT.ROUTE_TYPE_BLACKHOLE });
  return { s, vm3, view: new TopologyView(t.objects) };
}

const mac = (m: string) => parseMac(m);
const ip = (a: string) => parseIp4(a);
const u8 = fc.integer({ min: 0, max: 255 });
const u16 = fc.integer({ min: 0, max: 65535 });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const anyMac = fc
  .integer({ min: 0, max: 2 ** 48 - 1 })
  .map((m) => m - (Math.floor(m / 2 ** 40) % 2) * 2 ** 40);

/** Packets that reach deep into the topology, with every field drawn from values that matter. */
function packetArb(ingress: { vm1: string; vm2: string; up: string }) {
  const ports = fc.oneof(fc.constantFrom(22, 23, 53, 80, 1023, 1024), u16);
  const l4 = fc.record({
    proto: fc.constantFrom("tcp", "udp", "icmp"),
    sp: ports,
    dp: ports,
    flags: u8,
    id: u16,
  });
  // Mostly packets that pass anti-spoofing and reach the router; now and then anything.
  const fromVm1 = fc.record({
    port: fc.constant(ingress.vm1),
    src: fc.oneof({ arbitrary: fc.constant(mac(VM1_MAC)), weight: 6 }, fc.constant(mac(RB_MAC)), anyMac),
    dst: fc.oneof(
      { arbitrary: fc.constant(mac(RA_MAC)), weight: 6 },
      fc.constant(mac(VM3_MAC)),
      fc.constant(2 ** 48 - 1),
      anyMac,
    ),
    nwSrc: fc.oneof({ arbitrary: fc.constant(ip("10.0.1.1")), weight: 6 }, u32),
    nwDst: fc.oneof(
      fc.constantFrom(ip("10.0.2.1"), ip("10.0.1.3"), ip("10.0.1.77"), ip("10.0.2.254"), ip("203.0.113.10")),
      {
        arbitrary: fc
          .constantFrom(ip("198.51.100.0"), ip("8.8.0.0"), ip("10.9.0.0"), ip("10.8.0.0"), ip("172.16.0.0"))
          .chain((b) => fc.integer({ min: 0, max: 0x7ffff }).map((x) => (b + x) >>> 0)),
        weight: 4,
      },
      u32,
    ),
  });
  const fromVm2 = fc.record({
    port: fc.constant(ingress.vm2),
    src: fc.oneof(fc.constant(mac(VM2_MAC)), anyMac),
    dst: fc.oneof(fc.constant(mac(RB_MAC)), anyMac),
    nwSrc: fc.oneof(fc.constant(ip("10.0.2.1")), u32),
    nwDst: fc.oneof(fc.constantFrom(ip("10.0.1.1"), ip("198.51.100.7"), ip("8.8.8.8")), u32),
  });
  const fromUplink = fc.record({
    port: fc.constant(ingress.up),
    // The router's own MACs as a source: nothing on this path reads the source MAC.
    src: fc.oneof(fc.constantFrom(mac(EXT_MAC), mac(RB_MAC), mac(RA_MAC)), anyMac),
    dst: fc.oneof(fc.constant(mac(UP_MAC)), anyMac),
    nwSrc: fc.oneof(fc.constantFrom(ip("198.51.100.7"), ip("10.0.2.1")), u32),
    nwDst: fc.oneof(fc.constantFrom(ip("203.0.113.10"), ip("203.0.113.2"), ip("10.0.2.1")), u32),
  });
  return fc
    .tuple(fc.oneof(fromVm1, fromVm2, fromUplink), l4, fc.integer({ min: 0, max: 255 }), u8)
    .map(([h, x, ttl, tos]) => {
      const spec: PacketSpec = {
        eth: { src: h.src, dst: h.dst },
        ip4: { src: h.nwSrc, dst: h.nwDst, ttl, tos },
      };
      if (x.proto === "tcp") spec.tcp = { src: x.sp, dst: x.dp, flags: x.flags };
      else if (x.proto === "udp") spec.udp = { src: x.sp, dst: x.dp };
      else spec.icmp = { type: x.sp % 2 ? 8 : 0, code: 0, rest: ((x.id << 16) | 1) >>> 0 };
      return { port: h.port, spec };
    });
}

/** Random values for every field a mask may leave out. */
const others = fc.record({
  ethSrc: anyMac,
  ethDst: anyMac,
  nwSrc: u32,
  nwDst: u32,
  tos: u8,
  ttl: u8,
  sp: u16,
  dp: u16,
  flags: u8,
  icmpType: u8,
  icmpCode: u8,
  id: u16,
});

type Others = typeof others extends fc.Arbitrary<infer T> ? T : never;

/** `spec` with each field outside `r`'s mask replaced by the value drawn for it. */
function varyUnmasked(spec: PacketSpec, r: SimResult, o: Others): PacketSpec {
  const m = r.mask;
  const q: PacketSpec = structuredClone(spec);
  const ip4 = q.ip4!;
  if (!(m & F.ETH_SRC)) q.eth.src = o.ethSrc;
  if (!(m & F.ETH_DST)) q.eth.dst = o.ethDst;
  if (!(m & F.NW_SRC)) ip4.src = o.nwSrc;
  if (!(m & F.NW_DST)) ip4.dst = o.nwDst;
  else if (r.dstBits < 32) {
    const keep = r.dstBits === 0 ? 0 : (0xffffffff << (32 - r.dstBits)) >>> 0;
    ip4.dst = ((ip4.dst & keep) | (o.nwDst & ~keep)) >>> 0;
  }
  if (!(m & F.NW_TOS)) ip4.tos = o.tos;
  if (!(m & F.NW_TTL)) ip4.ttl = o.ttl;
  const ports = q.tcp ?? q.udp;
  if (ports) {
    if (!(m & F.TP_SRC)) ports.src = o.sp;
    if (!(m & F.TP_DST)) ports.dst = o.dp;
  }
  if (q.tcp && !(m & F.TCP_FLAGS)) q.tcp.flags = o.flags;
  if (q.icmp) {
    if (!(m & F.TP_SRC)) q.icmp.type = o.icmpType;
    if (!(m & F.TP_DST)) q.icmp.code = o.icmpCode;
    if (!(m & F.ICMP_ID)) q.icmp.rest = ((o.id << 16) | ((q.icmp.rest ?? 0) & 0xffff)) >>> 0;
  }
  return q;
}

test("megaflow: every packet that agrees on a cacheable result's mask gets that result (property)", () => {
  const { s, view } = topology();
  const ctx = () => {
    const c = newSimContext("h1");
    c.state.arp.learn(s.r.id, ip("203.0.113.1"), mac(EXT_MAC), c.now);
    c.state.arp.learn(s.r.id, ip("203.0.113.3"), mac("02:00:00:00:0f:03"), c.now);
    return c;
  };
  const sim = (port: string, spec: PacketSpec) => simulate(view, encodePacket(spec), { portId: port }, ctx());
  let cacheable = 0;
  let outputs = 0;
  fc.assert(
    fc.property(packetArb({ vm1: s.vm1.id, vm2: s.vm2.id, up: s.up.id }), others, ({ port, spec }, o) => {
      const a = sim(port, spec);
      if (!a.cacheable) return;
      cacheable++;
      if (a.dropReason === null) outputs++;
      const q = varyUnmasked(spec, a, o);
      const b = sim(port, q);
      const why = `p=${JSON.stringify(spec)} q=${JSON.stringify(q)}`;
      assert.deepEqual(b.actions, a.actions, why);
      assert.equal(b.dropReason, a.dropReason, why);
      assert.deepEqual([...b.tags].sort(), [...a.tags].sort(), why);
      assert.equal(b.mask, a.mask, why);
      assert.equal(b.cacheable, true, why);
    }),
    { numRuns: 4000, seed: 20261125 },
  );
  // The property means something only if many results were cacheable, outputs among them.
  assert.ok(cacheable > 1000 && outputs > 300, `cacheable ${cacheable}, with an output ${outputs}`);
  if (process.env.MEGAFLOW_STATS) console.log(`cacheable ${cacheable}, with an output ${outputs}`);
});
