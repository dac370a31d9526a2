// The kernel fast path's side of `npm run bench -- datapath`: two "hosts" (namespaces joined by a
// veth underlay), each an EdgeAgent with a KernelDatapath (TC eBPF + external VXLAN) and the real
// simulation engine in this process, two VMs on them behind a stateful security group (so every
// new connection is simulated). Measures the same TCP / small-packet / RTT numbers as the other
// paths, plus flow setup over new flows, one at a time: from the program's miss on the first packet
// (stamped in the upcall header) to the kernel entry written, and the agent's share of it (from
// reading the frame off the upcall device).
import { silentLogger, topologypb } from "@isthmus/schema";
import {
  type agentTesting,
  EdgeAgent,
  EngineSimulator,
  KernelDatapath,
  kernelDatapathSupport,
  TopologyBuilder,
} from "@isthmus/site-agent";
import type { PathResult } from "./datapath.js";

type Lab = InstanceType<typeof agentTesting.NetnsLab>;
type Vm = ReturnType<Lab["addVm"]>;

export interface KernelPathResult extends PathResult {
  /** Kernel miss → entry written; `agent`: frame read by the agent → entry written. */
  flowSetup: Latency & { samples: number; agent: Latency };
  /** Packets of the measured traffic the agents saw (upcalls) vs what the kernel forwarded. */
  upcalls: number;
  kernelHits: number;
}

interface Latency {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

function latency(samples: number[]): Latency {
  const sorted = [...samples].sort((x, y) => x - y);
  return {
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: sorted.at(-1) ?? Number.NaN,
  };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** Why the kernel path cannot be measured here, or undefined. */
export function kernelPathSkipReason(): string | undefined {
  return kernelDatapathSupport({ bpffs: "/sys/fs/bpf", tunnelPort: 4789 });
}

export async function measureKernelPath(
  lab: Lab,
  seconds: number,
  newFlows: number,
  measure: (lab: Lab, a: Vm, b: Vm, seconds: number) => Promise<PathResult>,
): Promise<KernelPathResult> {
  const sh = (ns: string, args: string[]) => lab.exec(ns, args);
  const hA = lab.addNamespace();
  const hB = lab.addNamespace();
  await sh("", ["ip", "-n", hA, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", hB]);
  const t = new TopologyBuilder();
  const hostA = t.host("kbench-a", "172.30.98.1");
  const hostB = t.host("kbench-b", "172.30.98.2");
  const net = t.bridge({ name: "kbench" });
  const a = lab.addVm("02:00:00:00:0c:01", "10.68.0.1/24");
  const b = lab.addVm("02:00:00:00:0c:02", "10.68.0.2/24");
  t.vmPort(net, hostA, a.mac, ["10.68.0.1"], { interfaceName: a.hostIf });
  const pb = t.vmPort(net, hostB, b.mac, ["10.68.0.2"], { interfaceName: b.hostIf });
  // A stateful group on b: every new connection is simulated (conntrack), replies are returns.
  const RA = topologypb.RuleAction;
  const sgIn = t.chain("sg-in");
  t.rule(sgIn, RA.RULE_ACTION_ACCEPT, { matchReturnFlow: true });
  t.rule(sgIn, RA.RULE_ACTION_ACCEPT);
  pb.outboundFilterId = sgIn.id;
  const placement: [string, Vm, string][] = [
    [hA, a, "172.30.98.1"],
    [hB, b, "172.30.98.2"],
  ];
  for (const [ns, vm, ip] of placement) {
    await sh("", ["ip", "-n", ns, "addr", "add", `${ip}/24`, "dev", "ul0"]);
    await sh("", ["ip", "-n", ns, "link", "set", "ul0", "up"]);
    await sh("", ["ip", "link", "set", vm.hostIf, "netns", ns]);
    await sh("", ["ip", "-n", ns, "link", "set", vm.hostIf, "up"]);
    await sh(vm.ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
  }
  const nodes: { dp: KernelDatapath; agent: EdgeAgent }[] = [];
  const scratch = lab.tempFile("kernel-bench");
  try {
    for (const [i, [ns, , ip]] of placement.entries()) {
      const h = i === 0 ? hostA : hostB;
      const dp = new KernelDatapath({
        tunnelIp: ip,
        tunnelPort: 4789,
        name: `kb${(process.pid % 1296).toString(36)}${i}`,
        stateDir: scratch,
        netns: `/run/netns/${ns}`,
        // The measurement opens many flows at once; the default limiter would drop some.
        upcallRate: { perSecond: 100_000, burst: 4096 },
        log: silentLogger(),
      });
      await dp.start();
      const agent = new EdgeAgent({
        hostId: h.id,
        role: "host",
        datapath: dp,
        simulator: new EngineSimulator({ hostId: h.id }),
        log: silentLogger(),
        openPort: (name) => dp.openPort(name),
      });
      nodes.push({ dp, agent });
    }
    for (const n of nodes) n.agent.applySnapshot({ revision: 1, objects: t.objects });
    for (let i = 0; i < 20; i++) {
      if ((await lab.exec(a.ns, ["ping", "-c", "1", "-W", "1", b.ip])).code === 0) break;
    }
    const dpA = nodes[0]!.dp;
    const up0 = dpA.stats().upcalls;
    const hits0 = dpA.kernelStats()[0]!;
    const path = await measure(lab, a, b, seconds);
    const upcalls = dpA.stats().upcalls - up0;
    const kernelHits = Number(dpA.kernelStats()[0]! - hits0);
    // New flows: UDP datagrams from distinct source ports, each its own connection, one after
    // another 2 ms apart (not a burst: a burst would queue first packets behind each other and
    // measure the queue, not the setup of one flow).
    const mark = dpA.flowSetup().total;
    const sender = `
      const dgram = require("node:dgram");
      let i = 0;
      const next = () => {
        if (i >= ${newFlows}) return;
        const s = dgram.createSocket("udp4");
        s.bind(30000 + i++, () => s.send(Buffer.alloc(32), 9, "${b.ip}", () => { s.close(); setTimeout(next, 2); }));
      };
      next();`;
    await lab.exec(a.ns, [process.execPath, "-e", sender], 60_000);
    await new Promise((r) => setTimeout(r, 300));
    const setup = dpA.flowSetup(mark);
    return {
      ...path,
      upcalls,
      kernelHits,
      flowSetup: {
        samples: setup.fromMiss.length,
        ...latency(setup.fromMiss),
        agent: latency(setup.fromRead),
      },
    };
  } finally {
    for (const n of nodes) await n.agent.stop();
  }
}
