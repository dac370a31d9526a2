import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { checksumError } from "../packets/checksum.js";
import { parsePacket } from "../packets/packet.js";
import { eth } from "../packets/packet-dsl.js";
import { applyRewrites, validateActions } from "./flow-actions.js";
import { checksumsValid, mac, tcpFrame, udpFrame } from "./testing/frames.js";

const base = {
  srcMac: "02:00:00:00:00:01",
  dstMac: "02:00:00:00:00:02",
  srcIp: "10.0.0.1",
  dstIp: "10.0.1.2",
};

test("routing rewrites set MACs and decrement TTL with a valid IPv4 checksum", () => {
  const f = udpFrame({ ...base, sport: 1, dport: 2, ttl: 5 });
  assert.ok(
    applyRewrites(f, {
      setEthSrc: mac("02:aa:00:00:00:01"),
      setEthDst: mac("02:bb:00:00:00:02"),
      decTtl: 1,
      outputs: [],
    }),
  );
  assert.equal(f.subarray(0, 6).toString("hex"), "02bb00000002");
  assert.equal(f.subarray(6, 12).toString("hex"), "02aa00000001");
  assert.equal(f[22], 4);
  assert.ok(checksumsValid(f));
  const dying = udpFrame({ ...base, sport: 1, dport: 2, ttl: 1 });
  assert.equal(applyRewrites(dying, { decTtl: 1, outputs: [] }), false);
});

test("NAT rewrites keep IP, TCP and UDP checksums valid for any addresses and ports", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }),
      fc.integer({ min: 1, max: 65535 }),
      fc.boolean(),
      fc.boolean(),
      (ip, port, tcp, source) => {
        const f = tcp
          ? tcpFrame({ ...base, sport: 40000, dport: 80, payload: Buffer.from("hello world") })
          : udpFrame({ ...base, sport: 40000, dport: 53 });
        const a = source
          ? { setIpSrc: Buffer.from(ip), setTpSrc: port, outputs: [] }
          : { setIpDst: Buffer.from(ip), setTpDst: port, outputs: [] };
        assert.ok(applyRewrites(f, a));
        assert.deepEqual([...f.subarray(source ? 26 : 30, source ? 30 : 34)], ip);
        assert.equal(f.readUInt16BE(source ? 34 : 36), port);
        assert.ok(checksumsValid(f));
      },
    ),
    { numRuns: 200 },
  );
});

test("a SNATed ping's identifier rewrite keeps the ICMP checksum valid", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }),
      fc.integer({ min: 0, max: 65535 }),
      fc.integer({ min: 0, max: 65535 }),
      fc.boolean(),
      (ip, id, newId, reply) => {
        const frame = Buffer.from(
          eth("02:00:00:00:00:01", "02:00:00:00:00:02")
            .ip4("10.0.0.1", "198.51.100.7")
            .icmpEcho(id, 3, reply)
            .build(),
        );
        const a = reply
          ? { setIpDst: Buffer.from(ip), setIcmpId: newId, outputs: [] }
          : { setIpSrc: Buffer.from(ip), setIcmpId: newId, outputs: [] };
        assert.ok(applyRewrites(frame, a));
        const p = parsePacket(frame);
        assert.equal(p.icmpId, newId);
        assert.equal(checksumError(p), null);
      },
    ),
    { numRuns: 200 },
  );
  // Not an ICMP packet: nothing to rewrite there.
  const f = udpFrame({ ...base, sport: 40000, dport: 53 });
  const before = Buffer.from(f);
  assert.ok(applyRewrites(f, { setIcmpId: 9, outputs: [] }));
  assert.deepEqual(f, before);
});

test("actions beyond the fixed struct's bounds are rejected with the limit named", () => {
  const outputs = Array.from({ length: 17 }, (_, i) => ({ kind: "port" as const, portNo: i + 1 }));
  assert.throws(() => validateActions({ outputs }), /MAX_OUTPUTS=16/);
  assert.throws(
    () => validateActions({ outputs: [], setEthSrc: Buffer.alloc(5) }),
    /setEthSrc must be 6 bytes/,
  );
});
