// Root tests: a VM reaches an external host through a router uplink with SNAT, on each datapath.
// The VM's agent simulates the connection, allocates a port from a leased block and sends the NAT
// binding as flow state to the gateway that owns the uplink; the gateway delivers the translated
// packet out of the uplink's interface and reverse-translates the reply. The external host is a
// namespace behind a veth the gateway binds; `nc -v` there names the source the world sees.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { silentLogger, topologypb } from "@isthmus/schema";
import { InMemoryNatBlockRegistry, TopologyBuilder } from "../sim/index.js";
import { AfPacketPort, afPacketAvailable } from "./afpacket-port.js";
import type { Datapath, PortIO } from "./datapath.js";
import { EdgeAgent } from "./edge-agent.js";
import { bpfMapAddonAvailable } from "./kernel/bpf-map.js";
import { KernelDatapath } from "./kernel/kernel-datapath.js";
import { kernelDatapathUnavailable } from "./kernel/tc-programs.js";
import { EngineSimulator } from "./sim-adapter.js";
import { NetnsLab, rootSkipReason, sh, type Vm } from "./testing/netns.js";
import { UserspaceDatapath } from "./userspace-datapath.js";

const RA = topologypb.RuleAction;
const NAT_IP = "203.0.113.2";
const EXT_IP = "203.0.113.1";

const userspaceSkip =
  rootSkipReason(["ip", "ping", "nc"]) ?? (afPacketAvailable() ? undefined : "native addon not built");
const kernelSkip =
  rootSkipReason(["ip", "ping", "nc", "tc", "bpftool", "nsenter"]) ??
  (process.env.CI
    ? undefined
    : (kernelDatapathUnavailable() ??
      (bpfMapAddonAvailable() && afPacketAvailable() ? undefined : "native addons not built")));
if (userspaceSkip) console.log(`# skipping SNAT uplink tests (userspace): ${userspaceSkip}`);
if (kernelSkip) console.log(`# skipping SNAT uplink tests (kernel): ${kernelSkip}`);

interface Node {
  agent: EdgeAgent;
  dp: Datapath;
  ns?: string;
}

function snatTopology(prefix: number, vm: Vm, ext: Vm, tunnel: [string, string]) {
  const t = new TopologyBuilder();
  const hostA = t.host("host-a", tunnel[0]);
  const gw = t.host("gw", tunnel[1], topologypb.HostRole.HOST_ROLE_GATEWAY);
  const net = t.bridge({ name: "net" });
  const r = t.router({ name: "r" });
  t.vmPort(net, hostA, vm.mac, [vm.ip], { interfaceName: vm.hostIf });
  const inside = t.routerInterface(r, net, "02:00:00:00:9f:01", `10.${prefix}.1.254/24`);
  const up = t.uplink(r, gw, "02:00:00:00:9f:02", `${NAT_IP}/24`, { interfaceName: ext.hostIf });
  t.route(r, `10.${prefix}.1.0/24`, inside.routerPort);
  t.route(r, "203.0.113.0/24", up);
  const out = t.chain("r-out");
  t.rule(
    out,
    RA.RULE_ACTION_SNAT,
    { outPortIds: [up.id], nwSrc: `10.${prefix}.0.0/16` },
    { natTargets: [{ ipStart: NAT_IP, ipEnd: NAT_IP, portStart: 1024, portEnd: 65535 }] },
  );
  const inb = t.chain("r-in");
  t.rule(inb, RA.RULE_ACTION_REVERSE_SNAT, { inPortIds: [up.id], nwDst: `${NAT_IP}/32` });
  r.outboundFilterId = out.id;
  r.inboundFilterId = inb.id;
  return { t, hostA, gw };
}

/** An agent with the real simulation engine, its SNAT blocks from the shared registry. */
function engineAgent(
  hostId: string,
  role: "host" | "gateway",
  dp: Datapath,
  registry: InMemoryNatBlockRegistry,
  openPort: (name: string) => PortIO,
): Node {
  const simulator = new EngineSimulator({ hostId, natLeases: registry.forHost(hostId) });
  return {
    agent: new EdgeAgent({ hostId, role, datapath: dp, simulator, log: silentLogger(), openPort }),
    dp,
  };
}

/** The checks both datapaths must pass; `nodes()` is [VM host, gateway]. */
function snatTests(lab: NetnsLab, vm: () => Vm, ext: () => Vm, nodes: () => Node[], kernel = false) {
  test("ping from the VM to the external host is SNATed out of the uplink and the reply comes back", async () => {
    const r = await lab.exec(vm().ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", EXT_IP]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // The echo identifier is translated like a port (from the host's leased block) and back.
    const [host, gateway] = nodes();
    const out = host!.dp.dumpFlows().filter((f) => f.actions.includes(`set(ip_src=${NAT_IP})`));
    assert.ok(
      out.some((f) => f.actions.includes("set(icmp_id=")),
      out.map((f) => f.actions).join("\n"),
    );
    const back = gateway!.dp.dumpFlows().filter((f) => f.actions.includes(`set(ip_dst=${vm().ip})`));
    assert.ok(
      back.some((f) => f.actions.includes("set(icmp_id=")),
      back.map((f) => f.actions).join("\n"),
    );
  });

  test("a TCP connection reaches the external host from the NAT address and a leased port", async () => {
    const size = 300_000;
    // The server's stderr (where -v names the peer) is what the test reads; the data is counted.
    const server = lab.exec(ext().ns, ["sh", "-c", "timeout 20 nc -n -v -l 8080 2>&1 >/dev/null"], 30_000);
    await lab.listening(ext().ns, 8080);
    const client = await lab.exec(
      vm().ns,
      ["sh", "-c", `head -c ${size} /dev/zero | nc -N -w 5 ${EXT_IP} 8080`],
      30_000,
    );
    assert.equal(client.code, 0, client.stderr);
    const seen = (await server).stdout;
    // OpenBSD nc: "Connection received on 203.0.113.2 40123"
    const m = /Connection received on (\S+) (\d+)/.exec(seen);
    assert.ok(m, `the server names its peer: ${seen}`);
    assert.equal(m[1], NAT_IP, "the external host sees the NAT address, not the VM's");
    assert.ok(Number(m[2]) >= 1024, `source port ${m[2]} is from the SNAT range`);
    const [host, gateway] = nodes();
    const snat = host!.dp.dumpFlows().filter((f) => f.actions.includes(`set(ip_src=${NAT_IP})`));
    assert.ok(snat.length >= 1, "the VM's host installed the SNAT flow");
    const back = gateway!.dp.dumpFlows().filter((f) => f.actions.includes(`set(ip_dst=${vm().ip})`));
    assert.ok(back.length >= 1, "the gateway installed the reverse-SNAT flow for the replies");
    if (kernel) {
      // The ping test's flows rewrite the echo identifier, which the programs do not: userspace.
      for (const f of [...snat, ...back])
        assert.equal(
          f.path,
          f.actions.includes("set(icmp_id=") ? "userspace" : "kernel",
          `${f.actions} is forwarded by the right path`,
        );
      assert.ok(
        snat.some((f) => f.path === "kernel") && back.some((f) => f.path === "kernel"),
        "the TCP connection's flows are in the kernel",
      );
    }
  });
  test("UDP datagrams reach the external host from the NAT address, and its answer comes back", async () => {
    // The server answers the first datagram's sender and quits after it (-W 1).
    const server = lab.exec(
      ext().ns,
      ["sh", "-c", "echo pong | timeout 10 nc -n -v -u -l -W 1 9090 2>&1"],
      20_000,
    );
    await lab.listening(ext().ns, 9090, "udp");
    const client = await lab.exec(
      vm().ns,
      ["sh", "-c", `echo ping | timeout 5 nc -n -u -w 2 ${EXT_IP} 9090`],
      20_000,
    );
    const seen = (await server).stdout;
    assert.match(seen, /ping/, `the datagram arrived: ${seen}`);
    const m = /Connection received on (\S+) (\d+)/.exec(seen);
    assert.ok(m, `the server names its peer: ${seen}`);
    assert.equal(m[1], NAT_IP);
    assert.match(
      client.stdout,
      /pong/,
      `the answer came back through reverse SNAT: ${client.stdout} ${client.stderr}`,
    );
  });
}

describe("SNAT through a router uplink: userspace datapath", { skip: userspaceSkip }, () => {
  const lab = new NetnsLab("su");
  const nodes: Node[] = [];
  let vm: Vm;
  let ext: Vm;

  before(async () => {
    vm = lab.addVm("02:00:00:00:91:01", "10.83.1.1/24", "10.83.1.254");
    ext = lab.addVm("02:00:00:00:91:fe", `${EXT_IP}/24`);
    const { t, hostA, gw } = snatTopology(83, vm, ext, ["127.0.0.2", "127.0.0.3"]);
    const registry = new InMemoryNatBlockRegistry();
    for (const [h, role] of [
      [hostA, "host"],
      [gw, "gateway"],
    ] as const) {
      const dp = new UserspaceDatapath({ tunnelIp: h.tunnelIp, tunnelPort: 0, log: silentLogger() });
      await dp.start();
      h.tunnelPort = dp.tunnelPort;
      nodes.push(engineAgent(h.id, role, dp, registry, (name): PortIO => new AfPacketPort(name)));
    }
    for (const n of nodes) n.agent.applySnapshot({ revision: 1, objects: t.objects });
    for (const n of nodes) assert.equal(n.agent.boundPorts().size, 1, "each agent binds its one port");
  });

  after(async () => {
    for (const n of nodes) await n.agent.stop();
    lab.cleanup();
  });

  snatTests(
    lab,
    () => vm,
    () => ext,
    () => nodes,
  );
});

describe("SNAT through a router uplink: kernel datapath", { skip: kernelSkip }, () => {
  const lab = new NetnsLab("sk");
  const nodes: Node[] = [];
  let vm: Vm;
  let ext: Vm;
  let scratch: string;

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), "isthmus-sk-"));
    const hA = lab.addNamespace();
    const hG = lab.addNamespace();
    sh("ip", ["-n", hA, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", hG]);
    vm = lab.addVm("02:00:00:00:92:01", "10.84.1.1/24", "10.84.1.254");
    ext = lab.addVm("02:00:00:00:92:fe", `${EXT_IP}/24`);
    for (const [i, [ns, v]] of [
      [hA, vm],
      [hG, ext],
    ].entries() as IterableIterator<[number, [string, Vm]]>) {
      sh("ip", ["-n", ns, "addr", "add", `192.168.84.${i + 1}/24`, "dev", "ul0"]);
      sh("ip", ["-n", ns, "link", "set", "ul0", "up"]);
      sh("ip", ["link", "set", v.hostIf, "netns", ns]);
      sh("ip", ["-n", ns, "link", "set", v.hostIf, "up"]);
    }
    const { t, hostA, gw } = snatTopology(84, vm, ext, ["192.168.84.1", "192.168.84.2"]);
    const registry = new InMemoryNatBlockRegistry();
    const tag = (process.pid % 46656).toString(36);
    for (const [i, [h, role, ns]] of (
      [
        [hostA, "host", hA],
        [gw, "gateway", hG],
      ] as const
    ).entries()) {
      const dp = new KernelDatapath({
        tunnelIp: h.tunnelIp,
        tunnelPort: 4789,
        name: `sk${tag}${i}`,
        bpffs: join(scratch, `bpffs${i}`),
        stateDir: scratch,
        netns: `/run/netns/${ns}`,
        log: silentLogger(),
      });
      await dp.start();
      nodes.push({ ...engineAgent(h.id, role, dp, registry, (name) => dp.openPort(name)), ns });
    }
    for (const n of nodes) n.agent.applySnapshot({ revision: 1, objects: t.objects });
    for (const n of nodes) assert.equal(n.agent.boundPorts().size, 1, "each agent binds its one port");
  });

  after(async () => {
    for (const n of nodes) await n.agent.stop();
    lab.cleanup();
    if (scratch && existsSync(scratch)) rmSync(scratch, { recursive: true, force: true });
  });

  snatTests(
    lab,
    () => vm,
    () => ext,
    () => nodes,
    true,
  );
});
