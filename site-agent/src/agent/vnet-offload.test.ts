import assert from "node:assert/strict";
import { test } from "node:test";
import { checksumsValid, tcpFrame, udpFrame } from "./testing/frames.js";
import { finishOffloads, VNET_HDR_LEN } from "./vnet-offload.js";

const base = {
  srcMac: "02:00:00:00:00:01",
  dstMac: "02:00:00:00:00:02",
  srcIp: "10.0.0.1",
  dstIp: "10.0.0.2",
};

function vnet(
  frame: Buffer,
  h: { flags?: number; gso?: number; gsoSize?: number; start?: number; off?: number },
): Buffer {
  const hdr = Buffer.alloc(VNET_HDR_LEN);
  hdr[0] = h.flags ?? 0;
  hdr[1] = h.gso ?? 0;
  hdr.writeUInt16LE(h.gsoSize ?? 0, 4);
  hdr.writeUInt16LE(h.start ?? 0, 6);
  hdr.writeUInt16LE(h.off ?? 0, 8);
  return Buffer.concat([hdr, frame]);
}

test("a TSO super-frame is cut into MSS segments with valid checksums and advancing sequence numbers", () => {
  const payload = Buffer.from(Array.from({ length: 3500 }, (_, i) => i & 0xff));
  const big = tcpFrame({ ...base, sport: 40000, dport: 5201, flags: 0x18, payload });
  big.writeUInt16BE(0, 50); // what the VM leaves in a partial checksum does not matter
  const r = finishOffloads(vnet(big, { flags: 1, gso: 1, gsoSize: 1448, start: 34, off: 16 }));
  assert.ok("frames" in r);
  assert.deepEqual(
    r.frames.map((f) => f.length - 54),
    [1448, 1448, 604],
  );
  for (const [i, f] of r.frames.entries()) {
    assert.ok(checksumsValid(f), `segment ${i} checksums`);
    assert.equal(f.readUInt32BE(38), 1000 + i * 1448);
    assert.equal((f[47]! & 0x08) !== 0, i === 2, "PSH only on the last segment");
  }
  assert.deepEqual(Buffer.concat(r.frames.map((f) => f.subarray(54))), payload);
});

test("a partial checksum is completed; plain frames pass through; nonsense is dropped with a reason", () => {
  const f = udpFrame({ ...base, sport: 1, dport: 2 });
  const good = f.readUInt16BE(40);
  // Partial: the field holds the (uncomplemented) pseudo-header sum.
  let s = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + (f.length - 34);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  const partial = Buffer.from(f);
  partial.writeUInt16BE(s, 40);
  const r = finishOffloads(vnet(partial, { flags: 1, start: 34, off: 6 }));
  assert.ok("frames" in r);
  assert.equal(r.frames[0]!.readUInt16BE(40), good);
  const plain = finishOffloads(vnet(f, {}));
  assert.ok("frames" in plain && plain.frames[0]!.equals(f));
  assert.deepEqual(finishOffloads(Buffer.alloc(12)), { drop: "malformed_frame" });
  assert.deepEqual(finishOffloads(vnet(f, { gso: 3, gsoSize: 100 })), { drop: "gso_ufo_unsupported" });
  assert.deepEqual(finishOffloads(vnet(f, { flags: 1, start: 2000, off: 6 })), { drop: "malformed_offload" });
});
