// Root tests of the kernel datapath wired into the agent: two "hosts" (network namespaces joined by
// an underlay veth), each with an EdgeAgent driving a KernelDatapath in that namespace, the real
// simulation engine, and VMs (namespaces on veths). Mirrors the userspace namespace tests (ping,
// TCP, routing, a security group) and adds what only the kernel path must show: after the first
// packet the agent sees no more packets of a flow, a rule change deletes exactly the map entries of
// the flows it affects, idle flows leave the map, and nothing is left behind on stop.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { silentLogger, topologypb } from "@isthmus/schema";
import { TopologyBuilder } from "../../sim/index.js";
import { afPacketAvailable } from "../afpacket-port.js";
import { EdgeAgent } from "../edge-agent.js";
import { EngineSimulator } from "../sim-adapter.js";
import { NetnsLab, rootSkipReason, sh, type Vm } from "../testing/netns.js";
import { bpfMapAddonAvailable } from "./bpf-map.js";
import { KernelDatapath } from "./kernel-datapath.js";
import { linkInfo } from "./netns-exec.js";
import { kernelDatapathUnavailable } from "./tc-programs.js";

const skip =
  rootSkipReason(["ip", "ping", "nc", "tc", "bpftool", "nsenter", "sysctl"]) ??
  (process.env.CI
    ? undefined
    : (kernelDatapathUnavailable() ??
      (bpfMapAddonAvailable() && afPacketAvailable() ? undefined : "native addons not built")));
if (skip) console.log(`# skipping kernel datapath agent tests: ${skip}`);

const RA = topologypb.RuleAction;
const IDLE_MS = 2500;

async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("kernel datapath in the agent, between network namespaces", { skip }, () => {
  const lab = new NetnsLab("kn");
  const t = new TopologyBuilder();
  const hostA = t.host("host-a", "192.168.81.1");
  const hostB = t.host("host-b", "192.168.81.2");
  const net1 = t.bridge({ name: "net1" });
  const net2 = t.bridge({ name: "net2" });
  const router = t.router({ name: "r" });
  let vmA: Vm;
  let vmB: Vm;
  let vmC: Vm;
  let vmD: Vm;
  const macA = "02:00:00:00:8a:01";
  const macB = "02:00:00:00:8b:01";
  const macC = "02:00:00:00:8c:01";
  const macD = "02:00:00:00:8d:01";
  const FLOATING = "10.81.9.9";
  let sgIn: topologypb.Chain;
  const nodes: { ns: string; dp: KernelDatapath; agent: EdgeAgent; sim: EngineSimulator }[] = [];
  let scratch: string;

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), "isthmus-kn-"));
    const hA = lab.addNamespace();
    const hB = lab.addNamespace();
    sh("ip", ["-n", hA, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", hB]);
    vmA = lab.addVm(macA, "10.81.1.1/24", "10.81.1.254");
    vmB = lab.addVm(macB, "10.81.1.2/24", "10.81.1.254");
    vmC = lab.addVm(macC, "10.81.2.3/24", "10.81.2.254");
    vmD = lab.addVm(macD, "10.81.2.4/24", "10.81.2.254");
    for (const vm of [vmA, vmB, vmC, vmD]) {
      // No IPv6 chatter from the VMs: the upcall counter must only move for the traffic we send.
      sh("ip", ["netns", "exec", vm.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    }
    const placement: [string, Vm[]][] = [
      [hA, [vmA]],
      [hB, [vmB, vmC, vmD]],
    ];
    placement.forEach(([ns, vms], i) => {
      sh("ip", ["-n", ns, "addr", "add", `192.168.81.${i + 1}/24`, "dev", "ul0"]);
      sh("ip", ["-n", ns, "link", "set", "ul0", "up"]);
      for (const vm of vms) {
        sh("ip", ["link", "set", vm.hostIf, "netns", ns]);
        sh("ip", ["-n", ns, "link", "set", vm.hostIf, "up"]);
      }
    });
    const pA = t.vmPort(net1, hostA, macA, ["10.81.1.1"], { interfaceName: vmA.hostIf });
    const pB = t.vmPort(net1, hostB, macB, ["10.81.1.2"], { interfaceName: vmB.hostIf });
    t.vmPort(net2, hostB, macC, ["10.81.2.3"], { interfaceName: vmC.hostIf });
    t.vmPort(net2, hostB, macD, ["10.81.2.4"], { interfaceName: vmD.hostIf });
    const if1 = t.routerInterface(router, net1, "02:00:00:00:8f:01", "10.81.1.254/24");
    const if2 = t.routerInterface(router, net2, "02:00:00:00:8f:02", "10.81.2.254/24");
    t.route(router, "10.81.1.0/24", if1.routerPort);
    t.route(router, "10.81.2.0/24", if2.routerPort);
    // vmD's floating IP, seen from net1: stateless 1:1 NAT on the router (DNAT in, SNAT out).
    const rIn = t.chain("r-in");
    t.rule(
      rIn,
      RA.RULE_ACTION_DNAT,
      { inPortIds: [if1.routerPort.id], nwDst: `${FLOATING}/32` },
      { natTargets: [{ ipStart: "10.81.2.4", ipEnd: "10.81.2.4", portStart: 0, portEnd: 0 }] },
    );
    const rOut = t.chain("r-out");
    t.rule(
      rOut,
      RA.RULE_ACTION_SNAT,
      { outPortIds: [if1.routerPort.id], nwSrc: "10.81.2.4/32" },
      { natTargets: [{ ipStart: FLOATING, ipEnd: FLOATING, portStart: 0, portEnd: 0 }] },
    );
    router.inboundFilterId = rIn.id;
    router.outboundFilterId = rOut.id;
    // vmB's security group: in only TCP 5001, ICMP, ARP and replies; out only replies, ARP, ICMP.
    sgIn = t.chain("sg-in");
    t.rule(sgIn, RA.RULE_ACTION_ACCEPT, { matchReturnFlow: true });
    t.rule(sgIn, RA.RULE_ACTION_ACCEPT, { etherType: 0x0800, nwProto: 6, tpDst: { start: 5001, end: 5001 } });
    t.rule(sgIn, RA.RULE_ACTION_ACCEPT, { etherType: 0x0800, nwProto: 1 });
    t.rule(sgIn, RA.RULE_ACTION_ACCEPT, { etherType: 0x0806 });
    t.dropRule(sgIn);
    const sgOut = t.chain("sg-out");
    t.rule(sgOut, RA.RULE_ACTION_ACCEPT, { matchReturnFlow: true });
    t.rule(sgOut, RA.RULE_ACTION_ACCEPT, { etherType: 0x0806 });
    // Echo replies are also let out explicitly (this rule predates the ICMP conntrack fix); the
    // stateful return path is what the TCP test checks.
    t.rule(sgOut, RA.RULE_ACTION_ACCEPT, { etherType: 0x0800, nwProto: 1 });
    t.dropRule(sgOut);
    pB.outboundFilterId = sgIn.id;
    pB.inboundFilterId = sgOut.id;
    void pA;

    const tag = (process.pid % 46656).toString(36);
    for (const [i, [ns]] of placement.entries()) {
      const h = i === 0 ? hostA : hostB;
      const dp = new KernelDatapath({
        tunnelIp: h.tunnelIp,
        tunnelPort: 4789,
        name: `kn${tag}${i}`,
        bpffs: join(scratch, `bpffs${i}`),
        stateDir: scratch,
        netns: `/run/netns/${ns}`,
        flowLimits: { idleTimeoutMs: IDLE_MS },
        expiryIntervalMs: 250,
        log: silentLogger(),
      });
      await dp.start();
      const sim = new EngineSimulator({ hostId: h.id });
      const agent = new EdgeAgent({
        hostId: h.id,
        role: "host",
        datapath: dp,
        simulator: sim,
        log: silentLogger(),
        openPort: (name) => dp.openPort(name),
      });
      nodes.push({ ns, dp, agent, sim });
    }
    for (const n of nodes) n.agent.applySnapshot({ revision: 1, objects: t.objects });
    for (const n of nodes) assert.ok(n.agent.boundPorts().size >= 1, "VM ports bound");
  });

  after(async () => {
    const left: string[] = [];
    for (const n of nodes) {
      await n.agent.stop();
      for (const dev of Object.values(n.dp.devices)) if (linkInfo(`/run/netns/${n.ns}`, dev)) left.push(dev);
      if (existsSync(n.dp.pinDir)) left.push(n.dp.pinDir);
    }
    lab.cleanup();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
    assert.deepEqual(left, [], "stop removes the datapath's devices and pins");
  });

  test("ping between VMs on two agents; later packets never reach the agent", async () => {
    const [A, B] = [nodes[0]!, nodes[1]!];
    const r = await lab.exec(vmA.ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", vmB.ip]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // One ping process is one flow each way (its echo identifier is part of the conntrack key).
    // It runs longer than the idle timeout: hits read back from the map keep the flows alive.
    // The claim is about the established ICMP flow: pin both VMs' neighbour entries so a
    // reachability re-check (a unicast ARP probe, a new flow) cannot fall into the measurement
    // when a loaded machine stretches the test past the neighbour's reachable time.
    await lab.exec(vmA.ns, [
      "ip",
      "neigh",
      "replace",
      vmB.ip,
      "lladdr",
      macB,
      "nud",
      "permanent",
      "dev",
      "eth0",
    ]);
    await lab.exec(vmB.ns, [
      "ip",
      "neigh",
      "replace",
      vmA.ip,
      "lladdr",
      macA,
      "nud",
      "permanent",
      "dev",
      "eth0",
    ]);
    // Flow ids only grow: the new ping's flows are the ICMP flows installed after this point. (The
    // first ping's flows are still there for an idle timeout; on a loaded machine the new ping can
    // take longer than that to start, so a condition that any ICMP flow would meet could pass on
    // the old flows and measure the new ping's first-packet upcalls as if they were later packets.)
    const firstNew = [A, B].map((n) => Math.max(0, ...n.dp.dumpFlows().map((f) => f.id)) + 1);
    const newIcmp = (n: (typeof nodes)[number], i: number) =>
      n.dp.dumpFlows().filter((f) => f.id >= firstNew[i]! && f.match.ipProto === 1 && f.path === "kernel");
    const ping = lab.exec(vmA.ns, ["ping", "-c", "20", "-i", "0.2", "-W", "2", vmB.ip]);
    await until(
      "the new ping's flows in both kernels",
      () => [A, B].every((n, i) => newIcmp(n, i).some((f) => f.packets >= 2)),
      20_000,
    );
    // Packets the kernel forwarded are counted by the periodic read-back, a timer; a first packet
    // that went up the ring before the entry was written is read in the poll phase after it. One
    // more turn through the poll phase lets such an upcall be counted before the baseline is taken.
    await new Promise((res) => setTimeout(res, 300));
    const upA = A.dp.stats().upcalls;
    const upB = B.dp.stats().upcalls;
    const kA = A.dp.kernelStats();
    const more = await ping;
    assert.equal(more.code, 0, more.stdout + more.stderr);
    assert.match(more.stdout, /20 received/);
    assert.equal(A.dp.stats().upcalls, upA, "agent A saw no packet of the established flow");
    assert.equal(B.dp.stats().upcalls, upB, "agent B saw no packet of the established flow");
    const kA2 = A.dp.kernelStats();
    assert.ok(kA2[0]! - kA[0]! >= 10n, `kernel hits on A rose by ${kA2[0]! - kA[0]!}`);
    assert.equal(kA2[1], kA[1], "no upcall left A's VM port (only flow-state refreshes came from B)");
    const paths = A.dp.upcallPaths();
    assert.ok(
      paths.ringEnabled && paths.ring > 0,
      `the first packets came up the ring: ${JSON.stringify(paths)}`,
    );
    // Every echo request of the new ping passed A's kernel entry; the read-back (every 250 ms, later
    // on a loaded machine) brings the count into the flow.
    await until("the kernel's counters read back into the flow", () =>
      newIcmp(A, 0).some((f) => f.packets >= 20),
    ).catch(() => undefined);
    const icmp = newIcmp(A, 0);
    assert.ok(
      icmp.some((f) => f.packets >= 20),
      `counters are read back: ${icmp.map((f) => f.packets)}`,
    );
  });

  test("a 3 MB TCP transfer (nc) to an allowed port arrives complete", async () => {
    const size = 3_000_000;
    const server = lab.exec(vmB.ns, ["sh", "-c", "timeout 20 nc -l 5001 | wc -c"], 30_000);
    await lab.listening(vmB.ns, 5001);
    const client = await lab.exec(
      vmA.ns,
      ["sh", "-c", `head -c ${size} /dev/zero | nc -N -w 5 ${vmB.ip} 5001`],
      30_000,
    );
    assert.equal(client.code, 0, client.stderr);
    assert.equal(Number((await server).stdout.trim()), size);
    const tcp = nodes[0]!.dp.dumpFlows().filter((f) => f.match.ipProto === 6 && f.path === "kernel");
    assert.ok(tcp.length >= 1, "the TCP flow went to the kernel");
  });

  test("the security group blocks TCP 5002 (dropped, counted), stateful replies still pass", async () => {
    const A = nodes[0]!;
    // The listener gives up after a few seconds (nothing may reach it); the client is done by then.
    const server = lab.exec(vmB.ns, ["sh", "-c", "timeout 6 nc -l 5002 | wc -c"], 15_000);
    await lab.listening(vmB.ns, 5002);
    const client = await lab.exec(vmA.ns, ["sh", "-c", `echo hi | nc -N -w 1 ${vmB.ip} 5002`], 10_000);
    assert.notEqual(client.code, 0, "the connection must not be established");
    assert.equal(Number((await server).stdout.trim()), 0);
    assert.ok((A.dp.stats().drops.get("dropped_by_rule_in_chain") ?? 0) >= 1, "drop counted by reason");
  });

  test("across the router: the kernel rewrites MACs and decrements the TTL", async () => {
    const A = nodes[0]!;
    const r = await lab.exec(vmA.ns, ["ping", "-c", "4", "-i", "0.2", "-W", "2", vmC.ip]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /ttl=63/);
    const routed = A.dp
      .dumpFlows()
      .find((f) => f.tags.includes(`device:${router.id}`) && f.match.ipDst === vmC.ip && f.path === "kernel");
    assert.ok(routed, "the routed ICMP flow is in the kernel");
  });

  test("a floating IP (1:1 NAT on the router) is rewritten by the kernel, checksums intact", async () => {
    const [A, B] = [nodes[0]!, nodes[1]!];
    const ping = await lab.exec(vmA.ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", FLOATING]);
    assert.equal(ping.code, 0, ping.stdout + ping.stderr);
    assert.match(ping.stdout, new RegExp(`from ${FLOATING.replaceAll(".", "\\.")}`));
    const size = 1_000_000;
    const server = lab.exec(vmD.ns, ["sh", "-c", "timeout 20 nc -l 5003 | wc -c"], 30_000);
    await lab.listening(vmD.ns, 5003);
    const client = await lab.exec(
      vmA.ns,
      ["sh", "-c", `head -c ${size} /dev/zero | nc -N -w 5 ${FLOATING} 5003`],
      30_000,
    );
    assert.equal(client.code, 0, client.stderr);
    assert.equal(Number((await server).stdout.trim()), size, "TCP through DNAT/SNAT arrives complete");
    const dnat = A.dp.dumpFlows().filter((f) => f.actions.includes("set(ip_dst=10.81.2.4)"));
    const snat = B.dp.dumpFlows().filter((f) => f.actions.includes(`set(ip_src=${FLOATING})`));
    assert.ok(dnat.length >= 1 && dnat.every((f) => f.path === "kernel"), "DNAT flows are in A's kernel");
    assert.ok(snat.length >= 1 && snat.every((f) => f.path === "kernel"), "SNAT flows are in B's kernel");
    await until("the DNAT flows' kernel counters read back", () =>
      A.dp.dumpFlows().some((f) => f.actions.includes("set(ip_dst=10.81.2.4)") && f.packets > 10),
    );
  });

  test("a rule change deletes exactly the kernel entries of the flows through it", async () => {
    const A = nodes[0]!;
    // Both pings from one shell, at once: one after the other, starting the second in the
    // namespace can take longer on a loaded machine than the flows' 2.5 s idle timeout, and the
    // first ping's flows would be gone before they are looked at.
    const pings = `ping -c 2 -i 0.2 -W 2 ${vmB.ip} & ping -c 2 -i 0.2 -W 2 ${vmC.ip} & wait`;
    await lab.exec(vmA.ns, ["sh", "-c", pings]);
    const flows = A.dp.dumpFlows();
    const sg = flows.filter((f) => f.tags.includes(`chain:${sgIn.id}`) && f.path === "kernel");
    const rest = flows.filter((f) => !f.tags.includes(`chain:${sgIn.id}`) && f.path === "kernel");
    assert.ok(sg.length >= 1 && rest.length >= 1, "flows through the chain and flows not through it");
    const entriesBefore = A.dp.kernelMapKeyCount();
    const sgEntries = sg.reduce((n, f) => n + (f.kernelEntries ?? 0), 0);
    const icmpRule = t.objects.find((o) => o.rule?.chainId === sgIn.id && o.rule.condition?.nwProto === 1)!
      .rule!;
    A.agent.applyChange({
      revision: 2,
      upserts: [{ rule: { ...icmpRule, action: RA.RULE_ACTION_DROP } }],
      deletes: [],
    });
    const left = new Set(A.dp.dumpFlows().map((f) => f.id));
    for (const f of sg) assert.ok(!left.has(f.id), `flow ${f.id} through the chain was removed`);
    for (const f of rest) assert.ok(left.has(f.id), `flow ${f.id} not through the chain stays`);
    assert.equal(A.dp.kernelMapKeyCount(), entriesBefore - sgEntries, "the map lost exactly those entries");
    const r = await lab.exec(vmA.ns, ["ping", "-c", "1", "-W", "1", vmB.ip]);
    assert.notEqual(r.code, 0, "ICMP to vmB is now dropped");
    A.agent.applyChange({ revision: 3, upserts: [{ rule: icmpRule }], deletes: [] });
  });

  test("idle flows expire from the map once traffic stops", async () => {
    const A = nodes[0]!;
    await until("the map to empty after the idle timeout", () => A.dp.kernelMapKeyCount() === 0, IDLE_MS * 4);
    assert.equal(A.dp.kernelEntryCount(), 0);
  });

  test("a VM port whose MTU + 50 B does not fit the underlay is refused with the numbers", () => {
    const A = nodes[0]!;
    const ns = `/run/netns/${A.ns}`;
    const name = lab.name("m");
    sh("nsenter", [
      `--net=${ns}`,
      "ip",
      "link",
      "add",
      name,
      "mtu",
      "1500",
      "type",
      "veth",
      "peer",
      "name",
      `${name}p`,
    ]);
    try {
      assert.throws(
        () => A.dp.openPort(name),
        /MTU 1500 \+ 50 B of VXLAN exceeds the underlay ul0's MTU 1500/,
      );
    } finally {
      sh("nsenter", [`--net=${ns}`, "ip", "link", "del", name]);
    }
  });
});
