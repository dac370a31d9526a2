import assert from "node:assert/strict";
import { test } from "node:test";
import { VNET_HDR_LEN } from "../vnet-offload.js";
import { parseUpcall, UPCALL_ETHERTYPE, UPCALL_HDR_LEN, withReinjectTrailer } from "./upcall-frame.js";

test("an upcall header (struct upcall_hdr) yields its port, tunnel, reason and miss time; the frame follows", () => {
  const frame = Buffer.alloc(60, 0xab);
  const buf = Buffer.alloc(VNET_HDR_LEN + UPCALL_HDR_LEN + frame.length);
  const h = VNET_HDR_LEN;
  buf.writeUInt16BE(UPCALL_ETHERTYPE, h + 12);
  buf.writeUInt32LE(0, h + 16); // from the tunnel
  buf.writeUInt32LE(0x123456, h + 20);
  buf.writeUInt32LE(0xac1e6201, h + 24); // 172.30.98.1, host order
  buf.writeUInt16LE(1, h + 30);
  buf.writeBigUInt64LE(987654321012345n, h + 32);
  frame.copy(buf, h + UPCALL_HDR_LEN);
  const r = parseUpcall(buf);
  assert.ok(!("drop" in r), "parsed");
  assert.deepEqual(r.meta, {
    portNo: 0,
    tunId: 0x123456,
    remote: "172.30.98.1",
    reason: 1,
    missNs: 987654321012345n,
  });
  assert.deepEqual(r.vnetFrame.subarray(VNET_HDR_LEN), frame);
  assert.deepEqual(parseUpcall(buf.subarray(0, 20)), { drop: "upcall_truncated" });
});

test("the re-inject trailer names the tunnel remote in host byte order; a bad address is refused", () => {
  const out = withReinjectTrailer(Buffer.alloc(14), {
    kind: "tunnel",
    vxlanIfindex: 7,
    vni: 0x100001,
    remote: "172.30.98.2",
  });
  assert.equal(out.length, 14 + 20);
  assert.equal(out.readUInt32LE(14), 2);
  assert.equal(out.readUInt32LE(18), 7);
  assert.equal(out.readUInt32LE(22), 0x100001);
  assert.equal(out.readUInt32LE(26), 0xac1e6202);
  for (const bad of ["1.2.3", "1.2.3.256", "a.b.c.d", "1..2.3", "1.2.3.4."]) {
    assert.throws(
      () => withReinjectTrailer(Buffer.alloc(14), { kind: "tunnel", vxlanIfindex: 7, vni: 1, remote: bad }),
      /bad IPv4/,
      bad,
    );
  }
});
