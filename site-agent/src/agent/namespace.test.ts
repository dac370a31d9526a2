// Root tests: VMs are network namespaces whose eth0 is one end of a veth pair; two agents in this
// process bind the other ends through AF_PACKET and tunnel between 127.0.0.2 and 127.0.0.3.
// Real tools (ping, nc, tshark) check forwarding, TCP, the wire format and spoofing protection.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { silentLogger, type topologypb } from "@isthmus/schema";
import { AfPacketPort, afPacketAvailable } from "./afpacket-port.js";
import { EdgeAgent } from "./edge-agent.js";
import { bridge, FakeSimulator, host, objs, snapshot, vmPort } from "./testing/fake-simulator.js";
import { NetnsLab, rootSkipReason, type Vm } from "./testing/netns.js";
import { UserspaceDatapath } from "./userspace-datapath.js";

const skip =
  rootSkipReason(["ip", "ping", "nc", "tcpdump", "tshark"]) ??
  (afPacketAvailable() ? undefined : "native addon not built");
if (skip) console.log(`# skipping namespace datapath tests: ${skip}`);

describe("userspace datapath between network namespaces", { skip }, () => {
  const lab = new NetnsLab("ns");
  const agents: { agent: EdgeAgent; dp: UserspaceDatapath }[] = [];
  let vm1: Vm;
  let vm2: Vm;
  const hA = host("a", "127.0.0.2", 0);
  const hB = host("b", "127.0.0.3", 0);
  const net = bridge("net");
  let p2: topologypb.Port;

  before(async () => {
    vm1 = lab.addVm("02:00:00:00:01:01", "10.77.0.1/24");
    vm2 = lab.addVm("02:00:00:00:01:02", "10.77.0.2/24");
    const p1 = vmPort(net, hA, vm1.hostIf, vm1.mac, "10.77.0.1", 0x101);
    p2 = vmPort(net, hB, vm2.hostIf, vm2.mac, "10.77.0.2", 0x102);
    for (const h of [hA, hB]) {
      const dp = new UserspaceDatapath({ tunnelIp: h.tunnelIp, tunnelPort: 0, log: silentLogger() });
      await dp.start();
      h.tunnelPort = dp.tunnelPort;
      const agent = new EdgeAgent({
        hostId: h.id,
        role: "host",
        datapath: dp,
        simulator: new FakeSimulator(),
        log: silentLogger(),
        openPort: (name) => new AfPacketPort(name),
      });
      agents.push({ agent, dp });
    }
    for (const { agent } of agents) {
      agent.applySnapshot(snapshot(1, objs({ hosts: [hA, hB], bridges: [net], ports: [p1, p2] })));
    }
  });

  after(async () => {
    for (const { agent } of agents) await agent.stop();
    lab.cleanup();
  });

  test("ping between VMs on two agents", async () => {
    const r = await lab.exec(vm1.ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", vm2.ip]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /3 received/);
    assert.ok(agents[0]!.dp.stats().flowHits > 0, "later packets hit the flow table");
  });

  test("a TCP transfer (nc) arrives complete", async () => {
    const size = 3_000_000;
    const server = lab.exec(vm2.ns, ["sh", "-c", "nc -l 5001 | wc -c"], 30_000);
    await lab.listening(vm2.ns, 5001);
    const client = await lab.exec(
      vm1.ns,
      ["sh", "-c", `head -c ${size} /dev/zero | nc -N -w 5 ${vm2.ip} 5001`],
      30_000,
    );
    assert.equal(client.code, 0, client.stderr);
    const s = await server;
    assert.equal(Number(s.stdout.trim()), size);
  });

  test("a capture on the underlay decodes as VXLAN with the destination port's VNI", async () => {
    const portB = hB.tunnelPort;
    const pcap = lab.tempFile("underlay.pcap");
    // tcpdump starts capturing quickly; tshark then decodes the file (it is slow to start live).
    const cap = lab.spawnRoot([
      "tcpdump",
      "-i",
      "lo",
      "-U",
      "-c",
      "3",
      "-w",
      pcap,
      "udp",
      "dst",
      "port",
      String(portB),
    ]);
    await cap.ready;
    await lab.exec(vm1.ns, ["ping", "-c", "3", "-i", "0.2", "-W", "1", vm2.ip]);
    await cap.done;
    const decoded = await lab.exec("", [
      "tshark",
      "-r",
      pcap,
      "-d",
      `udp.port==${portB},vxlan`,
      "-T",
      "fields",
      "-e",
      "vxlan.vni",
      "-e",
      "eth.src",
    ]);
    const lines = decoded.stdout
      .trim()
      .split("\n")
      .filter((l) => l.includes("\t"));
    assert.ok(lines.length >= 1, `tshark decoded no VXLAN packets: ${decoded.stdout} ${decoded.stderr}`);
    for (const l of lines) {
      const [vni, src] = l.split("\t");
      assert.equal(Number(vni), p2.tunnelKey, l);
      // Loopback adds an all-zero outer Ethernet header; the inner one is the VM's frame.
      assert.equal(src?.split(",").at(-1), vm1.mac);
    }
  });

  test("frames with a spoofed source MAC are dropped and counted; the VM recovers with its own MAC", async () => {
    const dpA = agents[0]!.dp;
    const before = dpA.stats().drops.get("spoofed_mac") ?? 0;
    await lab.exec(vm1.ns, ["ip", "link", "set", "eth0", "address", "02:66:66:66:66:66"]);
    const r = await lab.exec(vm1.ns, ["ping", "-c", "2", "-i", "0.2", "-W", "1", vm2.ip]);
    assert.notEqual(r.code, 0, "spoofed frames must not get through");
    assert.ok((dpA.stats().drops.get("spoofed_mac") ?? 0) > before);
    await lab.exec(vm1.ns, ["ip", "link", "set", "eth0", "address", vm1.mac]);
    await lab.exec(vm1.ns, ["ip", "neigh", "flush", "all"]);
    const ok = await lab.exec(vm1.ns, ["ping", "-c", "2", "-i", "0.2", "-W", "2", vm2.ip]);
    assert.equal(ok.code, 0, ok.stdout);
  });
});
