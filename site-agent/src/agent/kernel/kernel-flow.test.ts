// Which flows the kernel programs carry: a SNATed ping (its echo identifier rewritten) stays on the
// userspace path, which can rewrite it; the same flow without that rewrite goes to the kernel.
import assert from "node:assert/strict";
import { test } from "node:test";
import { eth } from "../../packets/packet-dsl.js";
import type { FlowActions } from "../flow-actions.js";
import { extractKey, KEY_SIZE, maskFromFields } from "../flow-key.js";
import { kernelFlowFor } from "./kernel-flow.js";

test("a flow rewriting an ICMP echo identifier stays in userspace, saying why", () => {
  const frame = Buffer.from(
    eth("02:00:00:00:00:01", "02:00:00:00:00:02").ip4("10.0.1.1", "198.51.100.7").icmpEcho(77, 1).build(),
  );
  const key = Buffer.alloc(KEY_SIZE);
  assert.ok(extractKey(frame, 1, 0, key));
  const mask = maskFromFields(["inPort", "ethType", "ipSrc", "ipDst", "ipProto", "icmpId"]);
  const ctx = { ifindexOfPort: () => 7, vxlanIfindex: 9, tunnelPort: 4789 };
  const out: FlowActions["outputs"] = [{ kind: "tunnel", key: 5, remoteIp: "192.168.0.9", remotePort: 4789 }];
  const natted: FlowActions = { setIpSrc: Buffer.from([203, 0, 113, 2]), setIcmpId: 1082, outputs: out };
  assert.deepEqual(kernelFlowFor(key, mask, natted, ctx), { userspace: "ICMP echo identifier rewrite" });
  const plain = kernelFlowFor(key, mask, { setIpSrc: natted.setIpSrc, outputs: out }, ctx);
  assert.ok("value" in plain, `without the identifier rewrite it is a kernel flow: ${JSON.stringify(plain)}`);
});
