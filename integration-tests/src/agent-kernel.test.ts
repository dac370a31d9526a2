// Two `isthmus agent --datapath kernel` processes, fed by an in-process TopologyService: each
// host's underlay address, VXLAN device and VM ports live in a network namespace of their own
// (`agent.kernel.netns`), the agents run beside the test and reach the controller on loopback.
// Ping and TCP between the VMs, a security group's drop, no upcalls for an established flow,
// `agent flows` naming the kernel path, and everything removed when the agents stop.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { agentTesting, kernelDatapathSupport, TopologyBuilder } from "@isthmus/site-agent";
import { type AgentProc, hostAgentArgs, spawnAgent } from "./harness/agent-process.js";
import { runCli } from "./harness/cli.js";
import { tcpAttempt, tcpTransfer } from "./harness/vm-tcp.js";

const { FakeTopologyServer, NetnsLab, rootSkipReason, sh } = agentTesting;
const RA = topologypb.RuleAction;
const skip =
  rootSkipReason(["ip", "ping", "nc", "tc", "bpftool", "nsenter"]) ??
  (process.env.CI ? undefined : kernelDatapathSupport({ bpffs: "/sys/fs/bpf", tunnelPort: 4789 }));
if (skip) console.log(`# skipping kernel agent process tests: ${skip}`);

async function until(what: string, cond: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function metric(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\d+)`, "m").exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

describe("isthmus agent --datapath kernel, two processes", { skip }, () => {
  const lab = new NetnsLab("ak");
  const t = new TopologyBuilder();
  let server: InstanceType<typeof FakeTopologyServer>;
  let dir = "";
  const agents = new Map<string, AgentProc>();
  const hA = t.host("kagent-a", "192.168.85.1");
  const hB = t.host("kagent-b", "192.168.85.2");
  const hostNs = new Map<string, string>();
  const net = t.bridge({ name: "net" });
  let vm1: ReturnType<InstanceType<typeof NetnsLab>["addVm"]>;
  let vm2: ReturnType<InstanceType<typeof NetnsLab>["addVm"]>;
  const sg = t.chain("sg-in");
  t.rule(sg, RA.RULE_ACTION_ACCEPT, { matchReturnFlow: true });
  t.rule(sg, RA.RULE_ACTION_ACCEPT, { etherType: 0x0806 });
  t.rule(sg, RA.RULE_ACTION_ACCEPT, { etherType: 0x0800, nwProto: 1 });
  t.rule(sg, RA.RULE_ACTION_ACCEPT, { etherType: 0x0800, nwProto: 6, tpDst: { start: 5001, end: 5001 } });
  t.dropRule(sg);

  const start = async (h: topologypb.Host, controller: string) => {
    const config = join(dir, `${h.name}.yaml`);
    writeFileSync(
      config,
      `agent:\n  kernel:\n    netns: /run/netns/${hostNs.get(h.id)}\n    bpffs: ${join(dir, `bpffs-${h.name}`)}\n    stateDir: ${dir}\n`,
    );
    const t0 = Date.now();
    const a = await spawnAgent(
      ["--config", config, ...hostAgentArgs(h, controller, 4789), "--datapath", "kernel"],
      60_000,
    );
    console.log(`# agent ${h.name} started in ${Date.now() - t0} ms`);
    agents.set(h.id, a);
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "isthmus-ak-"));
    const nsA = lab.addNamespace();
    const nsB = lab.addNamespace();
    hostNs.set(hA.id, nsA);
    hostNs.set(hB.id, nsB);
    sh("ip", ["-n", nsA, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", nsB]);
    vm1 = lab.addVm("02:00:00:00:85:01", "10.85.0.1/24");
    vm2 = lab.addVm("02:00:00:00:85:02", "10.85.0.2/24");
    for (const [i, [ns, vm]] of (
      [
        [nsA, vm1],
        [nsB, vm2],
      ] as const
    ).entries()) {
      sh("ip", ["-n", ns, "addr", "add", `192.168.85.${i + 1}/24`, "dev", "ul0"]);
      sh("ip", ["-n", ns, "link", "set", "ul0", "up"]);
      sh("ip", ["link", "set", vm.hostIf, "netns", ns]);
      sh("ip", ["-n", ns, "link", "set", vm.hostIf, "up"]);
      sh("ip", ["netns", "exec", vm.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    }
    t.vmPort(net, hA, vm1.mac, ["10.85.0.1"], { interfaceName: vm1.hostIf });
    t.vmPort(net, hB, vm2.mac, ["10.85.0.2"], { interfaceName: vm2.hostIf, outboundFilterId: sg.id });
    server = new FakeTopologyServer(t.objects, 1);
    const controller = await server.start();
    for (const h of [hA, hB]) await start(h, controller);
  });

  after(async () => {
    for (const a of agents.values()) await a.stop();
    await server?.stop();
    lab.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const ping = (count = 3) => lab.exec(vm1.ns, ["ping", "-c", String(count), "-i", "0.2", "-W", "1", vm2.ip]);
  const metrics = async (h: topologypb.Host) =>
    (await fetch(`http://127.0.0.1:${agents.get(h.id)!.metricsPort}/metrics`)).text();

  test("ping between VMs; once the flow is in the kernel, its packets cause no upcalls", async () => {
    let r = await ping(1);
    for (let i = 0; i < 20 && r.code !== 0; i++) r = await ping(1);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // One ping process is one flow each way (its echo id is in the conntrack key). Pin the
    // neighbour entries so a reachability probe (another flow) cannot fall into the count.
    for (const [vm, peer] of [
      [vm1, vm2],
      [vm2, vm1],
    ] as const) {
      sh("ip", [
        "netns",
        "exec",
        vm.ns,
        "ip",
        "neigh",
        "replace",
        peer.ip,
        "lladdr",
        peer.mac,
        "nud",
        "permanent",
        "dev",
        "eth0",
      ]);
    }
    const long = lab.exec(vm1.ns, ["ping", "-c", "30", "-i", "0.2", "-W", "2", vm2.ip], 30_000);
    // While the ping runs, a flow still handled by the agent would move the counter every 200 ms.
    let settled = Number.NaN;
    await until("the upcall counter to stand still while the ping runs", async () => {
      const a = metric(await metrics(hA), "isthmus_agent_upcalls_total");
      await new Promise((res) => setTimeout(res, 700));
      const b = metric(await metrics(hA), "isthmus_agent_upcalls_total");
      settled = b;
      return a === b && a > 0;
    });
    r = await long;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /30 received/);
    const after = metric(await metrics(hA), "isthmus_agent_upcalls_total");
    assert.equal(after, settled, "the rest of the ping never reached the agent");
  });

  test("TCP to the allowed port arrives complete; the security group blocks another port", async () => {
    const c1 = await tcpTransfer(lab, vm1, vm2, 5001, 2_000_000);
    assert.equal(c1.code, 0, c1.stderr);
    assert.equal(c1.received, 2_000_000);
    const c2 = await tcpAttempt(lab, vm1, vm2, 5002);
    assert.notEqual(c2, 0, "a connection to a port the group does not allow fails");
    // The sending host simulates the whole path, the receiving VM's filter included.
    const dropped = /isthmus_agent_drops_total\{reason="dropped_by_rule[^}]*\} [1-9]/;
    await until("the drop counted", async () => dropped.test(await metrics(hA))).catch(async (err) => {
      const lines = (await metrics(hA)).split("\n").filter((l) => l.includes("drop"));
      throw new Error(`${(err as Error).message}: ${lines.join("; ")}`);
    });
  });

  test("`isthmus agent flows` shows the flows on the kernel path with counters", async () => {
    await ping(3);
    const flows = await runCli(["agent", "flows", "--admin", `127.0.0.1:${agents.get(hA.id)!.adminPort}`]);
    assert.equal(flows.code, 0, flows.stderr);
    assert.match(flows.stdout, /tunnel\(key=0x[0-9a-f]+,192\.168\.85\.2:4789\)/);
    assert.match(flows.stdout, /kernel/);
  });

  test("SIGTERM removes each agent's devices, programs and pins in its namespace", async () => {
    for (const [id, a] of agents) {
      assert.equal(await a.stop(), 0, "clean exit on SIGTERM");
      const ns = `/run/netns/${hostNs.get(id)}`;
      const links = execFileSync("nsenter", [`--net=${ns}`, "ip", "-o", "link", "show"], {
        encoding: "utf8",
      });
      assert.doesNotMatch(links, /\bis[0-9a-f]{7}(u0|u1|vx)\b/, `no datapath device left in ${ns}`);
      const vmIf = id === hA.id ? vm1.hostIf : vm2.hostIf;
      const filters = execFileSync(
        "nsenter",
        [`--net=${ns}`, "tc", "filter", "show", "dev", vmIf, "ingress"],
        {
          encoding: "utf8",
        },
      );
      assert.doesNotMatch(filters, /bpf/, "no program left on the VM port");
    }
    agents.clear();
  });
});
