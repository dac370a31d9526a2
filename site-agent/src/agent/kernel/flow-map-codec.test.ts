import assert from "node:assert/strict";
import { test } from "node:test";
import {
  decodeFlowStats,
  encodeFlowKey,
  encodeFlowValue,
  FLOW_KEY_SIZE,
  FLOW_VALUE_SIZE,
} from "./flow-map-codec.js";

test("flow key layout matches struct flow_key", () => {
  const k = encodeFlowKey({
    ifindex: 0x01020304,
    tunId: 5001,
    ethDst: "02:00:00:00:00:02",
    ethSrc: "02:00:00:00:00:01",
    ethertype: 0x0800,
    proto: 6,
    ipSrc: "10.0.0.1",
    ipDst: "10.0.0.2",
    sport: 40000,
    dport: 80,
    frag: 1,
    icmpId: 0x1234,
  });
  assert.equal(k.length, FLOW_KEY_SIZE);
  assert.equal(k.readUInt32LE(0), 0x01020304);
  assert.equal(k.readUInt32LE(4), 5001);
  assert.deepEqual([...k.subarray(8, 14)], [2, 0, 0, 0, 0, 2]);
  assert.deepEqual([...k.subarray(14, 20)], [2, 0, 0, 0, 0, 1]);
  assert.deepEqual([...k.subarray(20, 24)], [0x08, 0x00, 6, 1]);
  assert.deepEqual([...k.subarray(24, 32)], [10, 0, 0, 1, 10, 0, 0, 2]);
  assert.deepEqual([...k.subarray(32, 40)], [0x9c, 0x40, 0, 80, 0x12, 0x34, 0, 0]);
});

test("tunnel value carries the VNI and the remote in host byte order", () => {
  const v = encodeFlowValue({
    action: { kind: "tunnel", outIfindex: 7, vni: 0xabcdef, remote: "192.168.1.2" },
    setMacs: { dst: "02:00:00:00:00:09", src: "02:00:00:00:00:08" },
    decTtl: true,
    nat: { ipSrc: "203.0.113.2", tpSrc: 1024 },
  });
  assert.equal(v.length, FLOW_VALUE_SIZE);
  assert.equal(v.readUInt32LE(0), 2);
  assert.equal(v.readUInt32LE(4), 7);
  assert.equal(v.readUInt32LE(8), 1 | 2 | 8);
  assert.deepEqual([...v.subarray(64, 68)], [203, 0, 113, 2]);
  assert.equal(v.readUInt16BE(72), 1024);
  assert.equal(v[32], 1);
  assert.equal(v.readUInt32LE(12), 0xabcdef);
  assert.equal(v.readUInt32LE(16), 0xc0a80102);
  assert.equal(v[25], 9);
  assert.equal(v[31], 8);
  assert.deepEqual(decodeFlowStats(v), { packets: 0n, bytes: 0n, lastUsedNs: 0n });
});

test("bad input is refused with the offending value", () => {
  const base = { ifindex: 1, ethDst: "02:00:00:00:00:02", ethSrc: "02:00:00:00:00:01", ethertype: 0x0806 };
  assert.throws(() => encodeFlowKey({ ...base, ethDst: "02:00:00:00:02" }), /bad MAC 02:00:00:00:02/);
  assert.throws(() => encodeFlowKey({ ...base, ipSrc: "10.0.0.256" }), /bad IPv4 10.0.0.256/);
  assert.throws(
    () => encodeFlowValue({ action: { kind: "tunnel", outIfindex: 1, vni: 1 << 24, remote: "1.2.3.4" } }),
    /bad VNI/,
  );
  assert.throws(() => decodeFlowStats(Buffer.alloc(10)), /10 bytes/);
});
