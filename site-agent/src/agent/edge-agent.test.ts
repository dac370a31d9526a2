import assert from "node:assert/strict";
import dgram from "node:dgram";
import { after, before, test } from "node:test";
import { silentLogger, type topologypb } from "@isthmus/schema";
import { EdgeAgent } from "./edge-agent.js";
import { MemoryPort } from "./memory-port.js";
import {
  bridge,
  FakeSimulator,
  host,
  objs,
  routerLink,
  snapshot,
  uuid,
  vmPort,
} from "./testing/fake-simulator.js";
import { udpFrame } from "./testing/frames.js";
import { UserspaceDatapath } from "./userspace-datapath.js";

// Two agents on loopback (127.0.0.2 and 127.0.0.3), in-memory VM ports:
//   bridge1: vmA1 (host A), vmB1 (host B); bridge2: vmB2 (host B); router joins bridge1 and bridge2.
const hA = host("a", "127.0.0.2", 0);
const hB = host("b", "127.0.0.3", 0);
const b1 = bridge("net1");
const b2 = bridge("net2");
const routerId = uuid(3);
const vmA1 = vmPort(b1, hA, "tapA1", "02:00:00:00:0a:01", "10.0.0.1", 0x11);
const vmB1 = vmPort(b1, hB, "tapB1", "02:00:00:00:0b:01", "10.0.0.2", 0x12);
const vmB2 = vmPort(b2, hB, "tapB2", "02:00:00:00:0b:02", "10.0.1.2", 0x13);
const [r1, br1] = routerLink(routerId, b1, "02:00:00:00:ff:01", "10.0.0.254/24");
const [r2, br2] = routerLink(routerId, b2, "02:00:00:00:ff:02", "10.0.1.254/24");

interface Node {
  agent: EdgeAgent;
  dp: UserspaceDatapath;
  sim: FakeSimulator;
  ports: Map<string, MemoryPort>;
}
const nodes: Node[] = [];

async function start(h: topologypb.Host): Promise<Node> {
  const dp = new UserspaceDatapath({ tunnelIp: h.tunnelIp, tunnelPort: 0, log: silentLogger() });
  await dp.start();
  h.tunnelPort = dp.tunnelPort;
  const sim = new FakeSimulator();
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
  const n = { agent, dp, sim, ports };
  nodes.push(n);
  return n;
}

let A: Node;
let B: Node;
const topo = () =>
  snapshot(1, objs({ hosts: [hA, hB], bridges: [b1, b2], ports: [vmA1, vmB1, vmB2, r1, br1, r2, br2] }));

before(async () => {
  A = await start(hA);
  B = await start(hB);
  A.agent.applySnapshot(topo());
  B.agent.applySnapshot(topo());
});
after(async () => {
  for (const n of nodes) await n.agent.stop();
});

const fromA1 = { srcMac: vmA1.mac, srcIp: "10.0.0.1" };

test("ports assigned to each host are bound", () => {
  assert.deepEqual([...A.ports.keys()], ["tapA1"]);
  assert.deepEqual([...B.ports.keys()].sort(), ["tapB1", "tapB2"]);
});

test("a VM reaches a VM on the same network on another agent; the second packet hits the flow table", async () => {
  const pa = A.ports.get("tapA1")!;
  const pb = B.ports.get("tapB1")!;
  const frame = udpFrame({ ...fromA1, dstMac: vmB1.mac, dstIp: "10.0.0.2", sport: 5000, dport: 6000 });
  pa.inject(frame);
  await pb.waitFor(1);
  assert.deepEqual(pb.received[0], frame);
  const s1 = A.dp.stats();
  assert.equal(A.sim.calls, 1);
  assert.equal(s1.installs, 1);
  pa.inject(udpFrame({ ...fromA1, dstMac: vmB1.mac, dstIp: "10.0.0.2", sport: 5000, dport: 6000 }));
  await pb.waitFor(2);
  const s2 = A.dp.stats();
  assert.equal(A.sim.calls, 1, "second packet must not be simulated");
  assert.equal(s2.flowHits, s1.flowHits + 1);
  assert.equal(B.sim.calls, 0, "intra-site key is delivered without simulating");
  assert.equal(B.dp.stats().ports.get(B.agent.boundPorts().get(vmB1.id)!)!.txPackets, 2);
  const tunnel = A.dp.stats().tunnels.get(`127.0.0.3:${hB.tunnelPort}`);
  assert.equal(tunnel?.txPackets, 2);
});

test("a VM reaches a VM on another network across the router (MACs rewritten, TTL decremented)", async () => {
  const pb2 = B.ports.get("tapB2")!;
  A.ports
    .get("tapA1")!
    .inject(udpFrame({ ...fromA1, dstMac: r1.mac, dstIp: "10.0.1.2", sport: 1, dport: 2, ttl: 64 }));
  await pb2.waitFor(1);
  const got = pb2.received[0]!;
  assert.equal(got.subarray(0, 6).toString("hex"), vmB2.mac.replaceAll(":", ""));
  assert.equal(got.subarray(6, 12).toString("hex"), r2.mac.replaceAll(":", ""));
  assert.equal(got[22], 63);
});

test("a topology change invalidates exactly the flows tagged with what changed", async () => {
  const before = A.dp.dumpFlows();
  assert.equal(before.length, 2);
  const routed = before.find((f) => f.tags.includes(`device:${routerId}`))!;
  const callsBefore = A.sim.calls;
  // vmB1 moves to a new tunnel key: only the flow towards it depended on it.
  A.agent.applyChange({ revision: 2, upserts: [{ port: { ...vmB1, tunnelKey: 0x22 } }], deletes: [] });
  const afterFlows = A.dp.dumpFlows();
  assert.deepEqual(
    afterFlows.map((f) => f.id),
    [routed.id],
  );
  B.agent.applyChange({ revision: 2, upserts: [{ port: { ...vmB1, tunnelKey: 0x22 } }], deletes: [] });
  const pb = B.ports.get("tapB1")!;
  const n = pb.received.length;
  A.ports
    .get("tapA1")!
    .inject(udpFrame({ ...fromA1, dstMac: vmB1.mac, dstIp: "10.0.0.2", sport: 5000, dport: 6000 }));
  await pb.waitFor(n + 1);
  assert.equal(A.sim.calls, callsBefore + 1, "the invalidated flow was recomputed");
  assert.ok(A.dp.dumpFlows().some((f) => f.actions.includes("key=0x22")));
});

test("a frame with a spoofed source MAC is dropped and counted, and the drop is cached", async () => {
  const pa = A.ports.get("tapA1")!;
  const calls = A.sim.calls;
  for (let i = 0; i < 3; i++) {
    pa.inject(
      udpFrame({
        srcMac: "02:66:66:66:66:66",
        srcIp: "10.0.0.1",
        dstMac: vmB1.mac,
        dstIp: "10.0.0.2",
        sport: 1,
        dport: 2,
      }),
    );
  }
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(A.dp.stats().drops.get("spoofed_mac"), 3);
  assert.equal(A.sim.calls, calls, "spoofed frames never reach the simulator");
});

test("garbage and truncated VXLAN on the tunnel port are dropped and counted; forwarding continues", async () => {
  const s = dgram.createSocket("udp4");
  const send = (b: Buffer) => new Promise<void>((r) => s.send(b, hB.tunnelPort, "127.0.0.3", () => r()));
  await send(Buffer.concat([Buffer.from([0x00]), Buffer.from("not vxlan at all")]));
  await send(Buffer.from("08000000000012", "hex"));
  await send(Buffer.concat([Buffer.from("0800000000001200", "hex"), Buffer.alloc(5)]));
  await send(Buffer.concat([Buffer.from("0800000000777700", "hex"), Buffer.alloc(60)])); // unknown key
  await send(Buffer.concat([Buffer.from("08000000ffffff00", "hex"), Buffer.from([0xff, 0xff, 0xff])])); // bad flow state
  s.close();
  await new Promise((r) => setTimeout(r, 50));
  const d = B.dp.stats().drops;
  assert.equal(d.get("vxlan_no_vni_flag"), 1);
  assert.equal(d.get("vxlan_truncated"), 2);
  assert.equal(d.get("vxlan_unknown_key"), 1);
  assert.equal(d.get("flow_state_malformed"), 1);
  const pb = B.ports.get("tapB1")!;
  const n = pb.received.length;
  A.ports
    .get("tapA1")!
    .inject(udpFrame({ ...fromA1, dstMac: vmB1.mac, dstIp: "10.0.0.2", sport: 5000, dport: 6000 }));
  await pb.waitFor(n + 1);
});

test("flow state reaches the egress host before the packet, and is refreshed by later packets", async () => {
  A.sim.stateful = true;
  A.dp.flush(); // the L2 flows cached above would otherwise answer without simulating
  const pa = A.ports.get("tapA1")!;
  const pb = B.ports.get("tapB1")!;
  let stateWhenDelivered = -1;
  const origSend = pb.send.bind(pb);
  pb.send = (frames) => {
    if (stateWhenDelivered < 0) stateWhenDelivered = B.sim.flowState.size;
    return origSend(frames);
  };
  const n = pb.received.length;
  pa.inject(udpFrame({ ...fromA1, dstMac: vmB1.mac, dstIp: "10.0.0.2", sport: 7777, dport: 53 }));
  await pb.waitFor(n + 1);
  assert.equal(stateWhenDelivered, 1, "state installed at B before the data packet arrived");
  const entry = B.sim.flowState.all()[0]!;
  assert.equal(entry.conntrack?.key, "fake|17|10.0.0.1|7777|10.0.0.2|53");
  assert.ok(B.sim.flowState.has(`ct:${entry.conntrack?.key}`, performance.now()));
  // Lose the state at B, then a later packet after the refresh interval restores it.
  B.sim.flowState.expire(Number.MAX_SAFE_INTEGER);
  assert.equal(B.sim.flowState.size, 0);
  const refreshed = A.agent.handler.stats.flowStateRefreshes;
  await new Promise((r) => setTimeout(r, 1050));
  pa.inject(udpFrame({ ...fromA1, dstMac: vmB1.mac, dstIp: "10.0.0.2", sport: 7777, dport: 53 }));
  await pb.waitFor(n + 2);
  assert.equal(A.agent.handler.stats.flowStateRefreshes, refreshed + 1);
  assert.equal(B.sim.flowState.size, 1);
  A.sim.stateful = false;
});
