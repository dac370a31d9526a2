// Interop with the Linux kernel's VXLAN: a kernel VXLAN device in its own namespace acts as a
// hardware VTEP for a network (the network's global key as its VNI), reached as a remote site by an
// agent in the gateway role. A VM namespace on the agent pings the kernel device's address: ARP and
// ICMP cross between the agent's userspace VXLAN and the kernel's, both ways.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { after, before, describe, test } from "node:test";
import { silentLogger, topologypb } from "@isthmus/schema";
import { TopologyBuilder } from "../sim/index.js";
import { AfPacketPort, afPacketAvailable } from "./afpacket-port.js";
import { EdgeAgent } from "./edge-agent.js";
import { EngineSimulator } from "./sim-adapter.js";
import { NetnsLab, rootSkipReason, sh, type Vm } from "./testing/netns.js";
import { UserspaceDatapath } from "./userspace-datapath.js";

const skip = rootSkipReason(["ip", "ping"]) ?? (afPacketAvailable() ? undefined : "native addon not built");
if (skip) console.log(`# skipping kernel VXLAN interop test: ${skip}`);

const GLOBAL_KEY = 0x100042;

describe("a Linux kernel VXLAN device exchanges frames with an agent", { skip }, () => {
  const lab = new NetnsLab("kx");
  let agent: EdgeAgent;
  let dp: UserspaceDatapath;
  let vm: Vm;
  let kernelNs = "";
  // A /30 per test process keeps parallel runs apart.
  const subnet = 16 + (process.pid % 200);
  const agentIp = `172.31.${subnet}.1`;
  const kernelIp = `172.31.${subnet}.2`;

  before(async () => {
    const probe = dgram.createSocket("udp4");
    await new Promise<void>((r) => probe.bind(0, "127.0.0.1", () => r()));
    const port = probe.address().port;
    await new Promise<void>((r) => probe.close(() => r()));

    // Underlay: a veth from this namespace (agent side) to the kernel VTEP's namespace.
    kernelNs = lab.addNamespace();
    const ul = lab.name("u");
    sh("ip", ["link", "add", ul, "type", "veth", "peer", "name", "ul0", "netns", kernelNs]);
    lab.trackLink(ul);
    sh("ip", ["addr", "add", `${agentIp}/30`, "dev", ul]);
    sh("ip", ["link", "set", ul, "up"]);
    sh("ip", ["-n", kernelNs, "addr", "add", `${kernelIp}/30`, "dev", "ul0"]);
    sh("ip", ["-n", kernelNs, "link", "set", "ul0", "up"]);
    sh("ip", [
      "-n",
      kernelNs,
      "link",
      "add",
      "vx0",
      "type",
      "vxlan",
      "id",
      String(GLOBAL_KEY),
      "remote",
      agentIp,
      "local",
      kernelIp,
      "dstport",
      String(port),
      "dev",
      "ul0",
    ]);
    sh("ip", ["-n", kernelNs, "link", "set", "vx0", "address", "02:00:00:00:09:09", "mtu", "1450", "up"]);
    sh("ip", ["-n", kernelNs, "addr", "add", "10.99.0.9/24", "dev", "vx0"]);

    vm = lab.addVm("02:00:00:00:09:01", "10.99.0.1/24");
    const t = new TopologyBuilder();
    const gw = t.host("gw", agentIp, topologypb.HostRole.HOST_ROLE_GATEWAY);
    gw.tunnelPort = port;
    const net = t.bridge({ name: "stretched", tunnelKey: GLOBAL_KEY });
    t.vmPort(net, gw, vm.mac, ["10.99.0.1"], { interfaceName: vm.hostIf });
    // Remote-site ports belong to the gateway host that tunnels to that site.
    const remote = t.port(net.id, topologypb.PortType.PORT_TYPE_REMOTE_SITE, {
      remoteSite: "kernel-vtep",
      hostId: gw.id,
    });
    t.remoteGateway("kernel-vtep", kernelIp, port);
    t.macEntry(net, "02:00:00:00:09:09", remote);

    dp = new UserspaceDatapath({ tunnelIp: agentIp, tunnelPort: port, log: silentLogger() });
    await dp.start();
    agent = new EdgeAgent({
      hostId: gw.id,
      role: "gateway",
      datapath: dp,
      simulator: new EngineSimulator({ hostId: gw.id }),
      log: silentLogger(),
      openPort: (name) => new AfPacketPort(name),
    });
    agent.applySnapshot({ revision: 1, objects: t.objects });
  });

  after(async () => {
    await agent?.stop();
    lab.cleanup();
  });

  test("the VM pings the kernel VXLAN device's address and back", async () => {
    const r = await lab.exec(vm.ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.99.0.9"]);
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}\ndrops: ${JSON.stringify([...dp.stats().drops])}`);
    const back = await lab.exec(kernelNs, ["ping", "-c", "2", "-i", "0.2", "-W", "2", vm.ip]);
    assert.equal(back.code, 0, back.stdout + back.stderr);
    const t = dp.stats().tunnels.get(`${kernelIp}:${dp.tunnelPort}`);
    assert.ok(t && t.txPackets > 0, "the agent sent VXLAN to the kernel VTEP");
    assert.ok(
      [...dp.stats().tunnels.values()].some((x) => x.rxPackets > 0),
      "and received from it",
    );
  });

  test("a burst of same-size frames (one GSO send from the agent) reaches the kernel device whole", async () => {
    // -l sends the echo requests back to back: the agent reads them in one batch and writes
    // them to the kernel VTEP as one run; every one must come back.
    const r = await lab.exec(vm.ns, [
      "ping",
      "-c",
      "40",
      "-l",
      "40",
      "-i",
      "0.2",
      "-W",
      "3",
      "-q",
      "10.99.0.9",
    ]);
    assert.match(r.stdout, /40 packets transmitted, 40 received/, r.stdout + r.stderr);
  });
});
