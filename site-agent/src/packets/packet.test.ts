import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { formatIp4, formatIp6, formatMac, parseCidr4, parseIp4, parseIp6, parseMac } from "./addr.js";
import { checksumError, finishChecksum, onesSum, updateChecksum16, updateChecksum32 } from "./checksum.js";
import { describePacket, encodePacket, TCP_ACK, TCP_SYN } from "./encode.js";
import { ARP_REQUEST, ETH_IP4, FRAG_FIRST, FRAG_LATER, Packet, PROTO_TCP, parsePacket } from "./packet.js";
import { eth } from "./packet-dsl.js";
import { encapVxlan, parseVxlan, vxlanOf } from "./vxlan.js";

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

test("addresses: MAC, IPv4 and IPv4 prefixes parse exactly what the plain rules (hex pairs; 1-3 digit parts up to 255; 1-2 digit lengths up to 32) accept", () => {
  // The rules as regular expressions, against the character-by-character parsers.
  const macRule = (s: string) =>
    /^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$/.test(s) ? Number.parseInt(s.replace(/[:-]/g, ""), 16) : -1;
  const ip4Rule = (s: string) => {
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
    if (!m || m.slice(1).some((p) => Number(p) > 255)) return -1;
    return m.slice(1).reduce((v, p) => v * 256 + Number(p), 0);
  };
  const chars = (alphabet: string, max: number) =>
    fc.array(fc.constantFrom(...alphabet), { maxLength: max }).map((a) => a.join(""));
  const mac = fc.oneof(
    chars("0123456789abcdefABCDEFgG:-. ", 19),
    fc
      .array(fc.integer({ min: 0, max: 255 }), { minLength: 6, maxLength: 6 })
      .map((b) => b.map((x) => x.toString(16).padStart(2, "0")).join(":")),
  );
  const ip = fc.oneof(
    chars("0123456789.a -", 17),
    fc.array(fc.integer({ min: 0, max: 999 }), { minLength: 3, maxLength: 5 }).map((p) => p.join(".")),
  );
  fc.assert(
    fc.property(mac, (s) => assert.equal(parseMac(s), macRule(s), JSON.stringify(s))),
    { numRuns: 3000 },
  );
  fc.assert(
    fc.property(ip, (s) => assert.equal(parseIp4(s), ip4Rule(s), JSON.stringify(s))),
    { numRuns: 3000 },
  );
  // A prefix: the address as above, then "/" and one or two digits up to 32 (none: /32).
  const cidrRule = (s: string) => {
    const m = /^([^/]*)(?:\/(\d{1,2}))?$/.exec(s);
    const ip = m ? ip4Rule(m[1]!) : -1;
    const len = m?.[2] === undefined ? 32 : Number(m[2]);
    if (ip < 0 || len > 32) return null;
    const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
    return { addr: (ip & mask) >>> 0, len, mask };
  };
  const cidr = fc.tuple(ip, fc.oneof(fc.constant(""), chars("/0123456789a", 4))).map(([a, b]) => a + b);
  fc.assert(
    fc.property(cidr, (s) => assert.deepEqual(parseCidr4(s), cidrRule(s), JSON.stringify(s))),
    {
      numRuns: 3000,
    },
  );
  for (const s of [
    "0.0.0.0",
    "255.255.255.255",
    "010.1.1.1",
    "1.2.3.256",
    "1..2.3",
    ".1.2.3",
    "1.2.3.",
    "1.2.3.4.5",
    "١.2.3.4",
  ]) {
    assert.equal(parseIp4(s), ip4Rule(s), s);
  }
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

test("parse: a first fragment's UDP length covers the whole datagram, not just the fragment", () => {
  const f = eth(A, B).ip4("1.1.1.1", "2.2.2.2", { mf: true }).udp(53, 4000).payload("x".repeat(16)).build();
  f[14 + 20 + 4] = 3000 >>> 8; // the datagram is 3000 bytes; this fragment carries 24 of them
  f[14 + 20 + 5] = 3000 & 0xff;
  const p = parsePacket(f);
  assert.equal(p.error, null);
  assert.equal(p.nwFrag, FRAG_FIRST);
  assert.equal(p.tpSrc, 53);
  assert.equal(p.tpDst, 4000);
  // An unfragmented datagram claiming more than it carries is still malformed.
  const whole = eth(A, B).ip4("1.1.1.1", "2.2.2.2").udp(53, 4000).payload("x".repeat(16)).build();
  whole[14 + 20 + 4] = 3000 >>> 8;
  whole[14 + 20 + 5] = 3000 & 0xff;
  assert.match(parsePacket(whole).error ?? "", /^udp: length field 3000 is out of range/);
});

/** `f` with `bytes` written at `off` (a copy). */
function patch(f: Uint8Array, off: number, ...bytes: number[]): Uint8Array {
  const c = f.slice();
  c.set(bytes, off);
  return c;
}

test("parse: each layer's malformed input is rejected with that layer's reason, never a throw", () => {
  const v4udp = eth(A, B).ip4("10.0.0.1", "10.0.0.2").udp(1, 2).payload("abcd").build();
  const v6udp = eth(A, B).ip6("fd00::1", "fd00::2").udp(1, 2).payload("abcd").build();
  const arp = eth(A, B).arpRequest(A, "10.0.0.1", "10.0.0.2").build();
  const ns = eth(A, B).ip6("fd00::1", "ff02::1:ff00:2").neighborSolicit("fd00::2", A).build();
  const ip4p = (proto: number, len: number) =>
    eth(A, B).ip4("10.0.0.1", "10.0.0.2", { proto }).payload(new Uint8Array(len)).build();
  const ip6p = (next: number, payload: Uint8Array) => {
    const f = eth(A, B).ip6("fd00::1", "fd00::2").payload(payload).build();
    f[14 + 6] = next;
    return f;
  };
  // Nine hop-by-hop style headers in a row (each 8 bytes, next header 0).
  const hbh = new Uint8Array(9 * 8);
  const cases: [string, Uint8Array, RegExp][] = [
    ["short ethernet", v4udp.subarray(0, 13), /^ethernet: frame of 13 bytes is shorter than 14/],
    ["short VLAN tag", patch(v4udp, 12, 0x81, 0x00).subarray(0, 16), /^802\.1Q: frame too short/],
    ["stacked VLAN tags", patch(v4udp, 12, 0x81, 0x00, 0, 5, 0x81, 0x00), /^802\.1Q: stacked VLAN tags/],
    ["802.3 length field", patch(v4udp, 12, 0x05, 0xdc), /^ethernet: length field 1500 \(802\.3 LLC/],
    ["short ARP", arp.subarray(0, 14 + 27), /^arp: packet shorter than 28 bytes/],
    ["ARP over another hardware", patch(arp, 14, 0, 6), /^arp: only Ethernet\/IPv4 ARP/],
    ["ARP operation 3", patch(arp, 14 + 6, 0, 3), /^arp: unknown operation 3/],
    ["short IPv4", v4udp.subarray(0, 14 + 19), /^ipv4: packet shorter than the 20-byte header/],
    ["IPv4 version 5", patch(v4udp, 14, 0x55), /^ipv4: version field is 5/],
    ["IPv4 IHL 4", patch(v4udp, 14, 0x44), /^ipv4: header length 16 is below 20/],
    ["IPv4 total < IHL", patch(v4udp, 16, 0, 19), /^ipv4: total length 19 is below the header length 20/],
    ["IPv4 total > frame", patch(v4udp, 16, 0x23, 0x28), /^ipv4: total length 9000 exceeds the frame/],
    [
      "IPv4 option truncated",
      eth(A, B)
        .ip4("1.1.1.1", "2.2.2.2", { options: new Uint8Array([1, 1, 1, 0x83]) })
        .udp(1, 2)
        .build(),
      /^ipv4: option 131 is truncated/,
    ],
    ["short TCP", ip4p(6, 19), /^tcp: segment shorter than the 20-byte header/],
    ["short UDP", ip4p(17, 7), /^udp: datagram shorter than the 8-byte header/],
    ["UDP length 7", patch(v4udp, 14 + 20 + 4, 0, 7), /^udp: length field 7 is out of range/],
    ["short ICMP", ip4p(1, 7), /^icmp: message shorter than 8 bytes/],
    ["ICMPv4 inside IPv6", ip6p(1, new Uint8Array(8)), /^ip: protocol 1 is not valid for IPv6/],
    ["ICMPv6 inside IPv4", ip4p(58, 8), /^ip: protocol 58 is not valid for IPv4/],
    ["short IPv6", v6udp.subarray(0, 14 + 39), /^ipv6: packet shorter than the 40-byte header/],
    ["IPv6 version 4", patch(v6udp, 14, 0x40), /^ipv6: version field is 4/],
    ["IPv6 payload > frame", patch(v6udp, 14 + 4, 0x10, 0), /^ipv6: payload length 4096 exceeds the frame/],
    ["IPv6 extension truncated", ip6p(0, new Uint8Array(4)), /^ipv6: extension header 0 is truncated/],
    [
      "IPv6 extension length",
      ip6p(60, new Uint8Array([17, 3, 0, 0, 0, 0, 0, 0])),
      /^ipv6: extension header 60/,
    ],
    ["IPv6 too many extensions", ip6p(0, hbh), /^ipv6: too many extension headers/],
    ["IPv6 fragment truncated", ip6p(44, new Uint8Array(4)), /^ipv6: fragment header is truncated/],
    ["short ND", ns.subarray(0, ns.length - 24).map((x) => x), /^ipv6: payload length/],
    ["ND option length 0", patch(ns, ns.length - 7, 0), /^icmpv6: ND option 1 has bad length/],
  ];
  // A neighbor solicitation whose IPv6 length says the ND body is cut short.
  const cut = patch(ns, 14 + 4, 0, 8 + 12);
  cases.push([
    "ND body cut short",
    cut.subarray(0, 14 + 40 + 20),
    /^icmpv6: neighbor discovery message shorter/,
  ]);
  for (const [name, frame, why] of cases) {
    let p: Packet | undefined;
    assert.doesNotThrow(() => {
      p = parsePacket(frame);
    }, name);
    assert.match(p!.error ?? "(parsed)", why, name);
  }
  // The layers before the failing one stay valid: the Ethernet addresses of an IPv4 failure.
  const p = parsePacket(patch(v4udp, 14, 0x55));
  assert.equal(p.ethSrc, 0x020000000001);
  assert.equal(p.etherType, ETH_IP4);
});

test("vxlan: malformed headers are rejected with a reason", () => {
  const inner = eth(A, B).ip4("10.0.0.1", "10.0.0.2").udp(1, 2).build();
  const ep = { srcMac: 1, dstMac: 2, srcIp: 3, dstIp: 4, srcPort: 5 };
  const outer = encapVxlan(inner, 77, ep);
  const p = parsePacket(outer);
  assert.equal(parseVxlan(outer, p.payloadOff, p.payloadOff + 7), "vxlan: header shorter than 8 bytes");
  assert.equal(
    parseVxlan(patch(outer, p.payloadOff, 0), p.payloadOff, p.ipEnd),
    "vxlan: I flag (VNI valid) is not set",
  );
  assert.equal(
    parseVxlan(outer, p.payloadOff, p.payloadOff + 8 + 13),
    "vxlan: inner frame shorter than an Ethernet header",
  );
  assert.equal(vxlanOf(parsePacket(inner.slice())), "vxlan: header shorter than 8 bytes");
  assert.equal(
    vxlanOf(parsePacket(eth(A, B).ip4("10.0.0.1", "10.0.0.2").tcp(1, 4789).build())),
    "vxlan: outer packet is not UDP",
  );
  assert.equal(vxlanOf(parsePacket(outer.subarray(0, 20))), "ipv4: packet shorter than the 20-byte header");
});

test("checksums: every frame the encoder writes verifies (IPv4 header, TCP, UDP, ICMP, ICMPv6)", () => {
  const odd = "odd-length"; // 10 bytes, plus one below
  const frames = [
    eth(A, B).ip4("10.0.0.1", "10.0.0.2").udp(1, 2).payload(`${odd}!`).build(),
    eth(A, B)
      .vlan(9)
      .ip4("10.0.0.1", "10.0.0.2", { options: new Uint8Array([0x94, 4, 0, 0]) })
      .tcp(1, 2)
      .payload(odd)
      .build(),
    eth(A, B).ip4("10.0.0.1", "10.0.0.2").icmpEcho(3, 4).payload(`${odd}!`).build(),
    eth(A, B).ip6("fd00::1", "fd00::2").udp(1, 2).payload(odd).build(),
    eth(A, B).ip6("fd00::1", "fd00::2").tcp(1, 2).payload(`${odd}!`).build(),
    eth(A, B).ip6("fd00::1", "fd00::2").icmpEcho(1, 2).build(),
    eth(A, B).ip6("fd00::1", "ff02::1:ff00:2").neighborSolicit("fd00::2", A).build(),
  ];
  for (const f of frames) assert.equal(checksumError(parsePacket(f)), null);
  // And the check itself fails on a corrupted byte of each layer it covers.
  for (const f of frames) {
    const p = parsePacket(f);
    const bad = patch(f, p.l4Off + 1, f[p.l4Off + 1]! ^ 0x40);
    assert.match(checksumError(parsePacket(bad)) ?? "", /checksum/);
  }
  const hdr = patch(frames[0]!, 14 + 8, 7); // TTL changed, header checksum not updated
  assert.equal(checksumError(parsePacket(hdr)), "ipv4: header checksum");
});

test("checksums: the RFC 1624 incremental update equals recomputing from scratch", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 20, maxLength: 64 }).map((b) => (b.length % 2 ? b.subarray(1) : b)),
      fc.nat(),
      fc.integer({ min: 0, max: 0xffffffff }),
      (bytes, at, now) => {
        const b = bytes.slice();
        const off = (at % (b.length / 2 - 1)) * 2;
        const check = finishChecksum(onesSum(b, 0, b.length));
        const old16 = (b[off]! << 8) | b[off + 1]!;
        const old32 = ((old16 << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0;
        const c = b.slice();
        c[off] = now >>> 24;
        c[off + 1] = (now >>> 16) & 0xff;
        c[off + 2] = (now >>> 8) & 0xff;
        c[off + 3] = now & 0xff;
        // Compared by verifying (summing the data with the checksum gives 0 once inverted): one's
        // complement has two zeros, so the incremental and the full checksum may differ in form.
        const inc = updateChecksum32(check, old32, now >>> 0);
        assert.equal(finishChecksum(onesSum(c, 0, c.length, inc)), 0);
        const d = b.slice();
        d[off] = 0x12;
        d[off + 1] = 0x34;
        assert.equal(finishChecksum(onesSum(d, 0, d.length, updateChecksum16(check, old16, 0x1234))), 0);
      },
    ),
    { numRuns: 500, seed: 1624 },
  );
});
