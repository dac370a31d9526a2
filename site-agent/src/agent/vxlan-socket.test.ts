import assert from "node:assert/strict";
import { test } from "node:test";
import { parseVxlan, vxlanHeader } from "./vxlan-socket.js";

test("VXLAN header: I flag and 24-bit VNI in network order (RFC 7348 §5)", () => {
  const h = vxlanHeader(0x123456);
  assert.equal(h.toString("hex"), "0800000012345600");
  const frame = Buffer.alloc(60, 7);
  const p = parseVxlan(Buffer.concat([h, frame]));
  assert.ok(p.ok);
  assert.equal(p.vni, 0x123456);
  assert.equal(p.frame.length, 60);
  assert.equal(vxlanHeader(0xffffff).toString("hex"), "08000000ffffff00"); // top bit set: no sign overflow
});

test("truncated or flagless VXLAN is rejected with a reason", () => {
  assert.deepEqual(parseVxlan(Buffer.from("0800", "hex")), { ok: false, reason: "vxlan_truncated" });
  assert.deepEqual(parseVxlan(Buffer.concat([vxlanHeader(5), Buffer.alloc(10)])), {
    ok: false,
    reason: "vxlan_truncated",
  });
  const noFlag = Buffer.concat([vxlanHeader(5), Buffer.alloc(60)]);
  noFlag[0] = 0;
  assert.deepEqual(parseVxlan(noFlag), { ok: false, reason: "vxlan_no_vni_flag" });
});
