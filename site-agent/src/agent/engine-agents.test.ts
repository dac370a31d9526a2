// Two agents with the real simulation engine (src/sim) and in-memory VM ports on loopback
// (127.0.0.4 and 127.0.0.5): L2 on one network, routing across a router, and a stateful security
// group whose return traffic is allowed at the other host only because flow state was pushed there.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { silentLogger, topologypb } from "@isthmus/schema";
import { TopologyBuilder } from "../sim/index.js";
import { EdgeAgent } from "./edge-agent.js";
import { MemoryPort } from "./memory-port.js";
import { EngineSimulator, toGroups } from "./sim-adapter.js";
import { tcpFrame, udpFrame } from "./testing/frames.js";
import { UserspaceDatapath } from "./userspace-datapath.js";

/** Polls `cond` until it holds; throws naming `what` after `ms`. */
async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !cond(); ) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const RA = topologypb.RuleAction;

test("engine actions become output groups; a rewrite after an output starts a new group", () => {
  const g = toGroups([
    { kind: "output", portId: "p1" },
    { kind: "set", ethDst: 0x020000000001 },
    { kind: "decTtl", by: 1 },
    { kind: "encap", tunnelKey: 7, remoteIp: "10.0.0.9", remotePort: 4789, hostId: "h" },
  ]);
  assert.equal(g.groups.length, 2);
  assert.deepEqual(g.groups[0], { rewrites: {}, outputs: [{ kind: "port", portId: "p1" }] });
  assert.equal(g.groups[1]!.rewrites.setEthDst?.toString("hex"), "020000000001");
  assert.equal(g.groups[1]!.rewrites.decTtl, 1);
  assert.deepEqual(toGroups([{ kind: "drop", reason: "no route" }]), {
    groups: [{ rewrites: {}, outputs: [] }],
    dropReason: "no route",
  });
});

const t = new TopologyBuilder();
const hA = t.host("host-a", "127.0.0.4");
const hB = t.host("host-b", "127.0.0.5");
const net1 = t.bridge({ name: "net1" });
const net2 = t.bridge({ name: "net2" });
const router = t.router({ name: "r" });
const vmA = t.vmPort(net1, hA, "02:00:00:00:0a:01", ["10.1.0.1"], { interfaceName: "vmA" });
const vmB = t.vmPort(net1, hB, "02:00:00:00:0b:01", ["10.1.0.2"], { interfaceName: "vmB" });
const vmC = t.vmPort(net2, hB, "02:00:00:00:0c:01", ["10.2.0.3"], { interfaceName: "vmC" });
const if1 = t.routerInterface(router, net1, "02:00:00:00:ff:01", "10.1.0.254/24");
const if2 = t.routerInterface(router, net2, "02:00:00:00:ff:02", "10.2.0.254/24");
t.route(router, "10.1.0.0/24", if1.routerPort);
t.route(router, "10.2.0.0/24", if2.routerPort);
t.arpEntry(net2, "10.2.0.3", vmC.mac);
t.arpEntry(net1, "10.1.0.1", vmA.mac);
// vmB's security group: nothing in except TCP 5001; out only replies (stateful).
const sgIn = t.chain("sg-in");
t.rule(sgIn, RA.RULE_ACTION_ACCEPT, { matchReturnFlow: true });
t.rule(sgIn, RA.RULE_ACTION_ACCEPT, { etherType: 0x0800, nwProto: 6, tpDst: { start: 5001, end: 5001 } });
t.rule(sgIn, RA.RULE_ACTION_ACCEPT, { etherType: 0x0806 });
t.dropRule(sgIn);
const sgOut = t.chain("sg-out");
t.rule(sgOut, RA.RULE_ACTION_ACCEPT, { matchReturnFlow: true });
t.rule(sgOut, RA.RULE_ACTION_ACCEPT, { etherType: 0x0806 });
t.dropRule(sgOut);
vmB.outboundFilterId = sgIn.id; // towards the VM
vmB.inboundFilterId = sgOut.id; // from the VM

interface Node {
  agent: EdgeAgent;
  dp: UserspaceDatapath;
  sim: EngineSimulator;
  ports: Map<string, MemoryPort>;
}
const nodes: Node[] = [];
let A: Node;
let B: Node;

before(async () => {
  for (const h of [hA, hB]) {
    const dp = new UserspaceDatapath({ tunnelIp: h.tunnelIp, tunnelPort: 0, log: silentLogger() });
    await dp.start();
    h.tunnelPort = dp.tunnelPort;
    const sim = new EngineSimulator({ hostId: h.id });
    const ports = new Map<string, MemoryPort>();
    const agent = new EdgeAgent({
      hostId: h.id,
      role: "host",
      datapath: dp,
      simulator: sim,
      log: silentLogger(),
      openPort: (name) => {
        const p = new MemoryPort(name);
        ports.set(name, p);
        return p;
      },
    });
    nodes.push({ agent, dp, sim, ports });
  }
  [A, B] = nodes as [Node, Node];
  for (const n of nodes) n.agent.applySnapshot({ revision: 1, objects: t.objects });
});
after(async () => {
  for (const n of nodes) await n.agent.stop();
});

const a1 = { srcMac: vmA.mac, srcIp: "10.1.0.1" };

test("same network: TCP to an allowed port reaches the VM on the other agent; the next packet hits the flow", async () => {
  const pb = B.ports.get("vmB")!;
  A.ports
    .get("vmA")!
    .inject(tcpFrame({ ...a1, dstMac: vmB.mac, dstIp: "10.1.0.2", sport: 40000, dport: 5001 }));
  await pb.waitFor(1);
  const hits = A.dp.stats().flowHits;
  A.ports
    .get("vmA")!
    .inject(tcpFrame({ ...a1, dstMac: vmB.mac, dstIp: "10.1.0.2", sport: 40000, dport: 5001, flags: 0x10 }));
  await pb.waitFor(2);
  assert.equal(A.dp.stats().flowHits, hits + 1);
});

test("the security group drops what it should (TCP 22 in), counted by reason", async () => {
  const pb = B.ports.get("vmB")!;
  const n = pb.received.length;
  A.ports
    .get("vmA")!
    .inject(tcpFrame({ ...a1, dstMac: vmB.mac, dstIp: "10.1.0.2", sport: 40001, dport: 22 }));
  // The frame is simulated off the injecting call: wait until its fate is counted.
  await until("the drop counted", () => (A.dp.stats().drops.get("dropped_by_rule_in_chain") ?? 0) > 0);
  assert.equal(pb.received.length, n);
  assert.equal(A.dp.stats().drops.get("dropped_by_rule_in_chain"), 1);
  assert.ok(
    A.dp.dumpFlows().some((f) => f.actions.includes(`in chain ${sgIn.id}`)),
    "the flow dump names the rule",
  );
});

test("return traffic passes B's stateful egress only thanks to flow state pushed from A", async () => {
  // The forward SYN above committed conntrack at A and pushed it to B before the packet.
  assert.ok(B.sim.state.conntrack.size >= 1, "B holds A's conntrack entry");
  const pa = A.ports.get("vmA")!;
  const n = pa.received.length;
  B.ports.get("vmB")!.inject(
    tcpFrame({
      srcMac: vmB.mac,
      srcIp: "10.1.0.2",
      dstMac: vmA.mac,
      dstIp: "10.1.0.1",
      sport: 5001,
      dport: 40000,
      flags: 0x12,
    }),
  );
  await pa.waitFor(n + 1);
  // A new connection from vmB is not a reply: dropped by its egress chain.
  const dropped = () => B.dp.stats().drops.get("dropped_by_rule_in_chain") ?? 0;
  const droppedBefore = dropped();
  B.ports.get("vmB")!.inject(
    tcpFrame({
      srcMac: vmB.mac,
      srcIp: "10.1.0.2",
      dstMac: vmA.mac,
      dstIp: "10.1.0.1",
      sport: 5555,
      dport: 80,
    }),
  );
  await until("the drop counted at B", () => dropped() > droppedBefore);
  assert.equal(pa.received.length, n + 1);
});

test("across the router: MACs rewritten, TTL decremented, delivered on the other agent", async () => {
  const pc = B.ports.get("vmC")!;
  A.ports
    .get("vmA")!
    .inject(
      udpFrame({ ...a1, dstMac: if1.routerPort.mac, dstIp: "10.2.0.3", sport: 1000, dport: 2000, ttl: 64 }),
    );
  await pc.waitFor(1);
  const f = pc.received[0]!;
  assert.equal(f.subarray(0, 6).toString("hex"), vmC.mac.replaceAll(":", ""));
  assert.equal(f.subarray(6, 12).toString("hex"), if2.routerPort.mac.replaceAll(":", ""));
  assert.equal(f[22], 63);
});

test("a rule change invalidates the flows that evaluated it, and only those", async () => {
  const before = A.dp.dumpFlows();
  const routed = before.filter((f) => f.tags.includes(`device:${router.id}`)).map((f) => f.id);
  assert.ok(routed.length >= 1);
  const sgFlows = before.filter((f) => f.tags.some((x) => x.startsWith("chain:"))).map((f) => f.id);
  assert.ok(sgFlows.length >= 1);
  const dropAll = t.objects.find((o) => o.rule?.chainId === sgIn.id && o.rule.action === RA.RULE_ACTION_DROP)!
    .rule!;
  A.agent.applyChange({ revision: 2, upserts: [{ rule: { ...dropAll, position: 99 } }], deletes: [] });
  const left = A.dp.dumpFlows().map((f) => f.id);
  for (const id of sgFlows) assert.ok(!left.includes(id), `flow ${id} through the chain was invalidated`);
  for (const id of routed) assert.ok(left.includes(id), `routed flow ${id} did not depend on the rule`);
});
