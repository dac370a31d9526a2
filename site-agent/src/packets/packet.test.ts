import assert from "node:assert/strict";
import { test } from "node:test";
import { formatIp4, formatIp6, formatMac, parseCidr4, parseIp4, parseIp6, parseMac } from "./addr.js";
import { onesSum } from "./checksum.js";
import { describePacket, encodePacket, TCP_ACK, TCP_SYN } from "./encode.js";
import { ARP_REQUEST, ETH_IP4, FRAG_FIRST, FRAG_LATER, Packet, PROTO_TCP, parsePacket } from "./packet.js";
import { eth } from "./packet-dsl.js";
import { encapVxlan, vxlanOf } from "./vxlan.js";

const A = "02:00:00:00:00:01";
const B = "02:00:00:00:00:02";

test("addresses: MAC, IPv4, IPv6 and CIDR parse and format round-trip; junk is rejected", () => {
  assert.equal(formatMac(parseMac("02:AB:cd:00:10:ff")), "02:ab:cd:00:10:ff");
  assert.equal(parseMac("02:ab:cd:00:10"), -1);
  assert.equal(parseMac("zz:ab:cd:00:10:ff"), -1);
  assert.equal(formatIp4(parseIp4("10.1.2.3")), "10.1.2.3");
  assert.equal(parseIp4("10.1.2.300"), -1);
  assert.equal(formatIp6(parseIp6("fd00:0:0:0:0:0:0:1")!), "fd00::1");
  assert.equal(formatIp6(parseIp6("::ffff:10.0.0.1")!), "::ffff:a00:1");
  assert.equal(parseIp6("1::2::3"), null);
  assert.deepEqual(parseCidr4("10.1.2.3/8"), { addr: parseIp4("10.0.0.0"), len: 8, mask: 0xff000000 });
  assert.equal(parseCidr4("10.0.0.0/33"), null);
});

test("parse: ethernet with 802.1Q, IPv4 and TCP fields read in place", () => {
  const f = eth(A, B)
    .vlan(42, 3)
    .ip4("10.0.0.1", "10.0.0.2", { ttl: 17, tos: 0x10 })
    .tcp(1234, 80, TCP_SYN | TCP_ACK, 99)
    .payload("hi")
    .build();
  const p = parsePacket(f);
  assert.equal(p.error, null);
  assert.equal(p.vlan, 42);
  assert.equal(p.vlanPcp, 3);
  assert.equal(p.etherType, ETH_IP4);
  assert.equal(p.nwProto, PROTO_TCP);
  assert.equal(p.nwTtl, 17);
  assert.equal(p.nwTos, 0x10);
  assert.equal(p.tpSrc, 1234);
  assert.equal(p.tpDst, 80);
  assert.equal(p.tcpSeq, 99);
  assert.equal(p.tcpFlags, TCP_SYN | TCP_ACK);
  assert.equal(p.buf, f, "no copy: the packet views the caller's buffer");
  assert.equal(new TextDecoder().decode(f.subarray(p.payloadOff, p.ipEnd)), "hi");
  // IPv4 header checksum verifies (sums to 0xffff), so does TCP's over the pseudo-header.
  assert.equal(onesSum(f, p.l3Off, p.ipHeaderLen), 0xffff);
});

test("parse: IPv4 options and fragments", () => {
  const opts = new Uint8Array([0x94, 0x04, 0x00, 0x00]); // router alert
  const first = parsePacket(
    eth(A, B).ip4("1.1.1.1", "2.2.2.2", { options: opts, mf: true, id: 7 }).udp(1, 2).build(),
  );
  assert.equal(first.error, null);
  assert.equal(first.ipOptionsLen, 4);
  assert.equal(first.nwFrag, FRAG_FIRST);
  assert.equal(first.tpDst, 2);
  const later = parsePacket(
    eth(A, B).ip4("1.1.1.1", "2.2.2.2", { fragOffset: 185, proto: 17 }).payload("xxxxxxxx").build(),
  );
  assert.equal(later.error, null);
  assert.equal(later.nwFrag, FRAG_LATER);
  assert.equal(later.tpSrc, 0, "later fragments carry no ports");
  const badOpt = eth(A, B)
    .ip4("1.1.1.1", "2.2.2.2", { options: new Uint8Array([0x07, 0x09, 0, 0]) })
    .udp(1, 2)
    .build();
  assert.match(parsePacket(badOpt).error ?? "", /ipv4: option 7 has bad length/);
});

test("parse: ARP, IPv6 UDP, ICMP echo and ND", () => {
  const arp = parsePacket(eth(A, "ff:ff:ff:ff:ff:ff").arpRequest(A, "10.0.0.1", "10.0.0.2").build());
  assert.equal(arp.arpOp, ARP_REQUEST);
  assert.equal(arp.arpTpa, parseIp4("10.0.0.2"));
  const v6 = parsePacket(eth(A, B).ip6("fd00::1", "fd00::2").udp(53, 5353).build());
  assert.equal(v6.error, null);
  assert.equal(v6.ipVersion, 6);
  assert.equal(formatIp6(v6.nwDst6), "fd00::2");
  assert.equal(v6.tpSrc, 53);
  const echo = parsePacket(eth(A, B).ip4("10.0.0.1", "10.0.0.2").icmpEcho(77, 3).build());
  assert.equal(echo.icmpType, 8);
  assert.equal(echo.icmpId, 77);
  const ns = parsePacket(eth(A, B).ip6("fd00::1", "ff02::1:ff00:2").neighborSolicit("fd00::2", A).build());
  assert.equal(ns.error, null);
  assert.equal(formatIp6(ns.ndTarget), "fd00::2");
  assert.equal(ns.ndLinkAddr, parseMac(A));
});

test("parse: malformed input is rejected with a reason at the failing layer", () => {
  const good = eth(A, B).ip4("10.0.0.1", "10.0.0.2").tcp(1, 2).build();
  assert.match(parsePacket(good.subarray(0, 10)).error ?? "", /^ethernet:/);
  assert.match(parsePacket(good.subarray(0, 30)).error ?? "", /^ipv4:/);
  const badLen = good.slice();
  badLen[16] = 0xff; // total length beyond the frame
  assert.match(parsePacket(badLen).error ?? "", /exceeds the frame/);
  const badTcp = good.slice();
  badTcp[14 + 20 + 12] = 0xf0; // data offset 60 > segment
  assert.match(parsePacket(badTcp).error ?? "", /^tcp: data offset/);
  // A reused Packet is fully reset between frames.
  const p = new Packet();
  parsePacket(badTcp, p);
  parsePacket(good, p);
  assert.equal(p.error, null);
});

test("encode/describe round-trip for each layer", () => {
  const frames = [
    eth(A, B).ip4("10.0.0.1", "10.0.0.2").udp(1, 2).payload("abc").build(),
    eth(A, B)
      .vlan(7)
      .ip4("10.0.0.1", "10.0.0.2", { df: true, id: 9 })
      .tcp(5, 6, TCP_ACK, 12345)
      .payload("z")
      .build(),
    eth(A, B).ip6("fd00::1", "fd00::2").icmpEcho(1, 2).build(),
    eth(A, "ff:ff:ff:ff:ff:ff").arpReply(A, "1.2.3.4", B, "1.2.3.5").build(),
    eth(A, B).etherType(0x88cc).payload("lldp").build(),
  ];
  for (const f of frames) assert.deepEqual(encodePacket(describePacket(parsePacket(f))), f);
});

test("vxlan: encapsulate and parse back the VNI and inner frame", () => {
  const inner = eth(A, B).ip4("10.0.0.1", "10.0.0.2").udp(1, 2).build();
  const outer = encapVxlan(inner, 0x123456, {
    srcMac: parseMac(A),
    dstMac: parseMac(B),
    srcIp: parseIp4("192.168.0.1"),
    dstIp: parseIp4("192.168.0.2"),
    srcPort: 50000,
  });
  const p = parsePacket(outer);
  assert.equal(p.tpDst, 4789);
  const v = vxlanOf(p);
  assert.ok(typeof v !== "string");
  assert.equal(v.vni, 0x123456);
  assert.deepEqual(outer.subarray(v.innerOff), inner);
  assert.throws(
    () => encapVxlan(inner, 0x1000000, { srcMac: 0, dstMac: 0, srcIp: 0, dstIp: 0, srcPort: 1 }),
    /VNI/,
  );
});

test("parse: a reused Packet carries nothing over from the frame parsed before", () => {
  const p = new Packet();
  parsePacket(eth(A, B).ip6("fd00::1", "ff02::1:ff00:2").neighborSolicit("fd00::2", A).build(), p);
  assert.equal(formatIp6(p.ndTarget), "fd00::2");
  for (const next of [
    eth(A, B).ip4("10.0.0.1", "10.0.0.2").udp(1, 2).build(),
    eth(A, B).ip6("fd00::1", "fd00::2").udp(1, 2).build().subarray(0, 40), // fails inside IPv6
  ]) {
    parsePacket(next, p);
    assert.ok(
      [...p.nwSrc6, ...p.nwDst6, ...p.ndTarget].every((w) => w === 0),
      "IPv6 fields cleared",
    );
    assert.equal(p.ndLinkAddr, 0);
  }
  parsePacket(eth(A, B).ip6("fd00::1", "ff02::1:ff00:2").neighborSolicit("fd00::2", A).build(), p);
  parsePacket(eth(A, B).ip6("fd00::3", "fd00::4").udp(1, 2).build(), p);
  assert.equal(formatIp6(p.nwSrc6), "fd00::3");
  assert.ok(
    p.ndTarget.every((w) => w === 0),
    "no ND target on a UDP packet after an ND one",
  );
});
