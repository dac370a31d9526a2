import assert from "node:assert/strict";
import { test } from "node:test";
import { extractKey, KEY_SIZE, maskFromFields } from "./flow-key.js";
import { DEFAULT_FLOW_LIMITS, FlowTable } from "./flow-table.js";
import { udpFrame } from "./testing/frames.js";

function keyOf(frame: Buffer, inPort = 1): Buffer {
  const k = Buffer.alloc(KEY_SIZE);
  assert.ok(extractKey(frame, inPort, 0, k));
  return k;
}

const A = { srcMac: "02:00:00:00:00:01", dstMac: "02:00:00:00:00:02", srcIp: "10.0.0.1", dstIp: "10.0.0.2" };
const l2 = maskFromFields(["inPort", "ethDst"]);
const out = { outputs: [{ kind: "port" as const, portNo: 2 }] };

test("a megaflow matches every key equal under its mask; the exact cache serves repeats", () => {
  const t = new FlowTable();
  const k1 = keyOf(udpFrame({ ...A, sport: 1000, dport: 53 }));
  const k2 = keyOf(udpFrame({ ...A, sport: 2000, dport: 80 }));
  assert.equal(t.lookup(k1, 60, 0), undefined);
  const f = t.install({ match: k1, mask: l2, actions: out, tags: ["bridge-1"] }, 0);
  assert.ok(f);
  assert.equal(t.lookup(k2, 60, 1)?.id, f.id); // same dst MAC, different ports: still a hit
  assert.equal(t.lookup(k2, 60, 2)?.id, f.id);
  assert.equal(t.stats.megaflowHits, 1);
  assert.equal(t.stats.exactHits, 1);
  assert.equal(f.packets, 2);
  assert.equal(f.bytes, 120);
  assert.equal(t.lookup(keyOf(udpFrame({ ...A, sport: 1, dport: 2 }), 7), 60, 3), undefined); // other port
});

test("invalidation by tag removes exactly the tagged flows, including their exact-cache entries", () => {
  const t = new FlowTable();
  const k1 = keyOf(udpFrame({ ...A, sport: 1, dport: 2 }));
  const k2 = keyOf(udpFrame({ ...A, dstMac: "02:00:00:00:00:03", sport: 1, dport: 2 }));
  t.install({ match: k1, mask: l2, actions: out, tags: ["bridge-1", "port-2"] }, 0);
  t.install({ match: k2, mask: l2, actions: out, tags: ["bridge-1", "port-3"] }, 0);
  assert.ok(t.lookup(k1, 1, 0));
  assert.ok(t.lookup(k1, 1, 0)); // now in the exact cache
  assert.equal(t.invalidate(["port-2"]), 1);
  assert.equal(t.lookup(k1, 1, 0), undefined);
  assert.ok(t.lookup(k2, 1, 0));
  assert.equal(t.invalidate(["bridge-1"]), 1);
  assert.equal(t.size, 0);
  assert.equal(t.maskCount, 0);
});

test("idle and hard expiry, and the flow bound refuses installs until room is made", () => {
  const t = new FlowTable({ ...DEFAULT_FLOW_LIMITS, maxFlows: 2, idleTimeoutMs: 100, hardTimeoutMs: 1000 });
  const keys = [1, 2, 3].map((i) =>
    keyOf(udpFrame({ ...A, dstMac: `02:00:00:00:00:1${i}`, sport: 1, dport: 2 })),
  );
  assert.ok(t.install({ match: keys[0]!, mask: l2, actions: out, tags: [] }, 0));
  assert.ok(t.install({ match: keys[1]!, mask: l2, actions: out, tags: [] }, 0));
  assert.equal(t.install({ match: keys[2]!, mask: l2, actions: out, tags: [] }, 0), undefined);
  assert.equal(t.stats.refusedFull, 1);
  for (let now = 50; now <= 950; now += 50) t.lookup(keys[0]!, 1, now); // keeps flow 0 busy
  assert.equal(t.expire(960), 1); // flow 1 idle
  assert.equal(t.stats.removed.idle, 1);
  assert.ok(t.install({ match: keys[2]!, mask: l2, actions: out, tags: [] }, 960));
  t.lookup(keys[0]!, 1, 990);
  t.lookup(keys[2]!, 1, 990);
  assert.equal(t.expire(1000), 1); // flow 0 reached its hard timeout although busy
  assert.equal(t.stats.removed.hard, 1);
});

test("a mask with more fields is a separate megaflow; the first matching mask wins", () => {
  const t = new FlowTable();
  const k = keyOf(udpFrame({ ...A, sport: 1, dport: 2 }));
  const fine = maskFromFields(["inPort", "ethDst", "ipDst", "tpDst"]);
  t.install({ match: k, mask: fine, actions: out, tags: [] }, 0);
  assert.equal(t.maskCount, 1);
  assert.equal(t.lookup(keyOf(udpFrame({ ...A, sport: 1, dport: 3 })), 1, 0), undefined);
  assert.ok(t.lookup(keyOf(udpFrame({ ...A, sport: 9, dport: 2 })), 1, 0));
});

test("the exact cache is bounded, serves repeats without the megaflow search, and forgets removed flows", () => {
  const t = new FlowTable({ ...DEFAULT_FLOW_LIMITS, maxExactEntries: 64 });
  const keys = Array.from({ length: 300 }, (_, i) =>
    keyOf(udpFrame({ ...A, sport: 1000 + i, dport: 53 + (i % 7) }), 1 + (i % 3)),
  );
  const wide = maskFromFields(["inPort"]);
  const flows = [1, 2, 3].map((p) =>
    t.install({ match: keys[p - 1]!, mask: wide, actions: out, tags: [`p${p}`] }, 0),
  );
  for (const k of keys) assert.ok(t.lookup(k, 1, 1)); // first sight: megaflow hit, then cached
  assert.ok(t.exactSize <= 64, `exact cache holds ${t.exactSize} > 64`);
  assert.ok(t.exactSize > 16, "the cache is used");
  const megaflow = t.stats.megaflowHits;
  // The last 4 keys are cached (a set of 4 ways evicts only after 4 newer entries): looking them
  // up again does not search the megaflows.
  for (const k of keys.slice(-4)) assert.ok(t.lookup(k, 1, 2));
  assert.equal(t.stats.megaflowHits, megaflow);
  assert.equal(t.stats.exactHits, 4);
  // A removed flow is never served from the cache, and its entries give way.
  t.invalidate(["p1"]);
  for (const [i, k] of keys.entries()) {
    const f = t.lookup(k, 1, 3);
    if (i % 3 === 0) assert.equal(f, undefined);
    else assert.equal(f?.id, flows[i % 3]!.id);
  }
  t.clear();
  assert.equal(t.exactSize, 0);
  assert.equal(t.lookup(keys[1]!, 1, 4), undefined);
});

test("tags held by one flow, then by two, then by one again: invalidation and flowsWithTag stay exact", () => {
  const t = new FlowTable();
  const k1 = keyOf(udpFrame({ ...A, sport: 1, dport: 2 }));
  const k2 = keyOf(udpFrame({ ...A, dstMac: "02:00:00:00:00:03", sport: 1, dport: 2 }));
  const k3 = keyOf(udpFrame({ ...A, dstMac: "02:00:00:00:00:04", sport: 1, dport: 2 }));
  const f1 = t.install({ match: k1, mask: l2, actions: out, tags: ["ct:1", "shared", "shared"] }, 0);
  assert.deepEqual(f1?.tags, ["ct:1", "shared"], "repeats removed");
  const f2 = t.install({ match: k2, mask: l2, actions: out, tags: ["ct:2", "shared"] }, 0);
  const f3 = t.install({ match: k3, mask: l2, actions: out, tags: ["ct:3", "shared"] }, 0);
  assert.deepEqual(t.flowsWithTag("ct:1"), [f1]);
  assert.deepEqual(new Set(t.flowsWithTag("shared")), new Set([f1, f2, f3]));
  assert.equal(t.invalidate(["ct:2"]), 1);
  assert.deepEqual(new Set(t.flowsWithTag("shared")), new Set([f1, f3]));
  t.remove(f3!, "deleted");
  assert.deepEqual(t.flowsWithTag("shared"), [f1], "back to one flow");
  assert.equal(t.invalidate(["shared"]), 1);
  assert.equal(t.size, 0);
  assert.deepEqual(t.flowsWithTag("ct:1"), []);
});

test("a mask Buffer reused with other bytes goes to the bucket of its bytes, not of its identity", () => {
  const t = new FlowTable();
  const mask = Buffer.from(maskFromFields(["inPort", "ethDst"]));
  const k1 = keyOf(udpFrame({ ...A, sport: 1, dport: 2 }));
  const f1 = t.install({ match: k1, mask, actions: out, tags: [] }, 0);
  maskFromFields(["inPort", "tpSrc"]).copy(mask);
  const f2 = t.install({ match: k1, mask, actions: out, tags: [] }, 0);
  assert.equal(t.maskCount, 2);
  assert.notEqual(f1?.mask.toString("hex"), f2?.mask.toString("hex"));
  // Same source port, other destination MAC: only the tpSrc megaflow covers it.
  const k2 = keyOf(udpFrame({ ...A, dstMac: "02:00:00:00:00:09", sport: 1, dport: 2 }));
  assert.equal(t.lookup(k2, 1, 0)?.id, f2?.id);
  t.remove(f1!, "deleted");
  t.remove(f2!, "deleted");
  assert.equal(t.maskCount, 0);
});

test("a tag carried by hundreds of flows (a swap-remove list) removes exactly them, whatever the order", () => {
  const t = new FlowTable();
  const exact = maskFromFields(["inPort", "ethDst", "ipSrc", "ipDst", "ipProto", "tpSrc", "tpDst"]);
  const flows = [];
  for (let sport = 1; sport <= 600; sport++) {
    const f = t.install(
      {
        match: keyOf(udpFrame({ ...A, sport, dport: 9 })),
        mask: exact,
        actions: out,
        tags: ["port-1", `ct:${sport}`, ...(sport % 2 === 0 ? ["even"] : [])],
      },
      0,
    );
    assert.ok(f);
    flows.push(f);
  }
  assert.equal(t.flowsWithTag("port-1").length, 600);
  // One flow goes on its own (from the middle of the shared lists); the shared tags forget it.
  assert.equal(t.invalidate(["ct:10"]), 1);
  assert.equal(t.flowsWithTag("port-1").length, 599);
  assert.equal(t.flowsWithTag("even").length, 299);
  assert.equal(t.invalidate(["even"]), 299);
  assert.equal(t.size, 300);
  assert.ok(
    t.flowsWithTag("port-1").every((f) => f.id % 2 === 1),
    "the odd ones are left",
  );
  assert.deepEqual(
    t.flows().map((f) => f.id),
    flows.filter((f) => !f.removed).map((f) => f.id),
    "dumps keep install order",
  );
  assert.equal(t.invalidate(["port-1"]), 300);
  assert.equal(t.size, 0);
  assert.equal(t.flowsWithTag("port-1").length, 0);
});
