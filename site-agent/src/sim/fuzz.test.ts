import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import fc from "fast-check";
import { checksumError } from "../packets/checksum.js";
import { describePacket, encodePacket, type PacketSpec } from "../packets/encode.js";
import { parsePacket } from "../packets/packet.js";
import { simulate } from "./simulate.js";
import { RA_MAC, twoSubnets, VM1_MAC } from "./test-topologies.js";
import { newSimContext } from "./topology-builder.js";
import { TopologyView } from "./topology-view.js";

const RA = topologypb.RuleAction;
const u8 = fc.integer({ min: 0, max: 255 });
const u16 = fc.integer({ min: 0, max: 65535 });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const mac = fc.integer({ min: 0, max: 2 ** 48 - 1 });
const ip6 = fc.tuple(u32, u32, u32, u32).map((w) => Uint32Array.from(w));
const payload = fc.uint8Array({ maxLength: 64 });

/** IPv4 options that parse: NOPs, router alert, a timestamp, padded with end-of-list to 4n bytes. */
const ip4Options = fc
  .array(fc.constantFrom([1], [0x94, 4, 0, 0], [0x44, 8, 5, 0, 1, 2, 3, 4]), { minLength: 1, maxLength: 4 })
  .map((parts) => {
    const bytes = parts.flat();
    while (bytes.length % 4 !== 0) bytes.push(0);
    return Uint8Array.from(bytes);
  });
/** TCP options are not interpreted: any bytes, 4n long. */
const tcpOptions = fc
  .integer({ min: 1, max: 10 })
  .chain((n) => fc.uint8Array({ minLength: 4 * n, maxLength: 4 * n }));
const l4Arb = fc.record({
  l4: fc.constantFrom("tcp", "udp", "icmp"),
  sp: u16,
  dp: u16,
  tcpOpts: fc.option(tcpOptions, { nil: undefined }),
});
function withL4(s: PacketSpec, x: { l4: string; sp: number; dp: number; tcpOpts?: Uint8Array | undefined }) {
  const { l4, sp, dp, tcpOpts } = x;
  if (l4 === "tcp")
    s.tcp = { src: sp, dst: dp, seq: sp * 7, ack: dp, flags: sp & 0x1ff, window: dp, options: tcpOpts };
  else if (l4 === "udp") s.udp = { src: sp, dst: dp };
  // ICMPv6 neighbor discovery (135, 136) has a body of its own: other types here.
  else
    s.icmp = {
      type: s.ip6 && (sp & 0xff) >= 135 && (sp & 0xff) <= 136 ? 128 : sp & 0xff,
      code: dp & 0xff,
      rest: (sp << 16) | dp,
    };
  return s;
}

/** Valid packets of every kind the encoder writes. */
const specArb: fc.Arbitrary<PacketSpec> = fc.oneof(
  fc.record({
    eth: fc.record({ src: mac, dst: mac }),
    arp: fc.record({ op: fc.constantFrom(1, 2), sha: mac, spa: u32, tha: mac, tpa: u32 }),
  }),
  fc
    .record({
      eth: fc.record({
        src: mac,
        dst: mac,
        vlan: fc.integer({ min: 0, max: 4095 }),
        pcp: fc.integer({ min: 0, max: 7 }),
      }),
      ip4: fc.record({
        src: u32,
        dst: u32,
        ttl: u8,
        tos: u8,
        id: u16,
        df: fc.boolean(),
        mf: fc.boolean(),
        options: fc.option(ip4Options, { nil: undefined }),
      }),
      x: l4Arb,
      payload,
    })
    .map(({ eth, ip4, x, payload }) => withL4({ eth, ip4, payload }, x)),
  // Later fragments: no L4 header, whatever the protocol says.
  fc.record({
    eth: fc.record({ src: mac, dst: mac }),
    ip4: fc.record({
      src: u32,
      dst: u32,
      proto: fc.constantFrom(1, 6, 17, 47),
      fragOffset: fc.integer({ min: 1, max: 0x1fff }),
      mf: fc.boolean(),
      id: u16,
    }),
    payload,
  }),
  fc
    .record({
      eth: fc.record({ src: mac, dst: mac }),
      ip6: fc.record({
        src: ip6,
        dst: ip6,
        hopLimit: u8,
        trafficClass: u8,
        flowLabel: fc.integer({ min: 0, max: 0xfffff }),
      }),
      x: l4Arb,
      payload,
    })
    .map(({ eth, ip6, x, payload }) => withL4({ eth, ip6, payload }, x)),
  // Other EtherTypes (LLDP, MPLS, ...): the payload is carried as it is.
  fc.record({
    eth: fc.record({ src: mac, dst: mac, etherType: fc.constantFrom(0x88cc, 0x8847, 0x9000, 0x0600) }),
    payload,
  }),
);

function topology() {
  const s = twoSubnets();
  const c = s.t.chain();
  s.t.accept(c, { matchReturnFlow: true });
  s.t.rule(c, RA.RULE_ACTION_REJECT, { nwProto: 6, tpDst: { start: 1, end: 1000 } });
  s.t.accept(c, { ipAddrGroupSrc: s.t.ipGroup(["10.0.1.0/24"]).id });
  s.vm2.outboundFilterId = c.id;
  const snat = s.t.chain();
  s.t.rule(
    snat,
    RA.RULE_ACTION_SNAT,
    { outPortIds: [s.up.id] },
    { natTargets: [{ ipStart: "203.0.113.2", ipEnd: "203.0.113.2", portStart: 1024, portEnd: 65535 }] },
  );
  s.r.outboundFilterId = snat.id;
  return { s, view: new TopologyView(s.t.objects) };
}

test("fuzz: encode(parse(x)) round-trips for valid packets", () => {
  fc.assert(
    fc.property(specArb, (spec) => {
      const bytes = encodePacket(spec);
      const p = parsePacket(bytes);
      assert.equal(p.error, null);
      assert.equal(checksumError(p), null);
      assert.deepEqual(encodePacket(describePacket(p)), bytes);
    }),
    { numRuns: 2000, seed: 6 },
  );
});

test("fuzz: random bytes and mutated valid frames never make the parser or simulator throw", () => {
  const { s, view } = topology();
  const ctx = newSimContext("h1");
  const ingresses = [
    { portId: s.vm1.id },
    { portId: s.vm2.id },
    { portId: s.up.id },
    { tunnelKey: s.vm2.tunnelKey },
    { tunnelKey: 0x100005 },
  ];
  const mutated = fc
    .tuple(specArb, fc.array(fc.tuple(fc.nat(), u8), { maxLength: 6 }), fc.nat())
    .map(([spec, flips, cut]) => {
      // Aim frames at the router sometimes so deeper paths get exercised.
      if (spec.ip4 && cut % 2 === 0)
        spec.eth = {
          src: Number.parseInt(VM1_MAC.replaceAll(":", ""), 16),
          dst: Number.parseInt(RA_MAC.replaceAll(":", ""), 16),
        };
      const b = encodePacket(spec);
      for (const [i, v] of flips) b[i % b.length] = v;
      return cut % 3 === 0 ? b.subarray(0, cut % (b.length + 1)) : b;
    });
  fc.assert(
    fc.property(
      fc.oneof(fc.uint8Array({ maxLength: 200 }), mutated),
      fc.nat(ingresses.length - 1),
      (frame, i) => {
        const p = parsePacket(frame);
        assert.ok(p.error === null || typeof p.error === "string");
        const r = simulate(view, frame, ingresses[i]!, ctx);
        assert.ok(Array.isArray(r.actions));
        if (p.error) assert.equal(r.cacheable, false);
        ctx.now += 1;
      },
    ),
    { numRuns: 3000, seed: 7 },
  );
});
