// The kernel fast path's side of `npm run bench -- datapath`: two "hosts" (namespaces joined by a
// veth underlay), each an `isthmus agent --datapath kernel` process (as deployed: one agent per
// host, its devices and programs in the host namespace through `agent.kernel.netns`), two VMs on
// them behind a stateful security group (so every new connection is simulated). The caller measures
// TCP / small-packet / RTT on the VMs, interleaved with the Linux bridge; this module adds flow
// setup over new flows, one at a time: from the program's miss on the first packet (stamped in the
// upcall header) to the kernel entry written, and the agent's share of it (from reading the frame),
// read from the agent's admin endpoint (`/flow-setup`).
import { writeFileSync } from "node:fs";
import { type topologypb as TopologyPb, topologypb } from "@isthmus/schema";
import { agentTesting, kernelDatapathSupport, TopologyBuilder } from "@isthmus/site-agent";
import { type AgentProc, hostAgentArgs, spawnAgent } from "../harness/agent-process.js";

const { FakeTopologyServer } = agentTesting;
type Lab = InstanceType<typeof agentTesting.NetnsLab>;
type Vm = ReturnType<Lab["addVm"]>;

export interface Latency {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface FlowSetupResult extends Latency {
  samples: number;
  /** The sending agent's upcalls since it started, and how many came up the ring buffer. */
  upcallPaths?: UpcallPaths;
  /** Frame read by the agent → entry written (the agent's share). */
  agent: Latency;
  /** Each stage's own latency (FlowSetupProfile's SETUP_STAGES) and GC overlap. */
  stages: Record<string, Latency>;
  /** *wake* split by the ring reader's stamps (busy, thread, reader, call; absent on the veth). */
  wakeParts?: Record<string, Latency>;
  gc: Latency;
  /** GC pauses from the first setup to the last, in or between them: how many, and their latency. */
  gcPauses: { count: number } & Latency;
  /** How many of the setups' misses were read by busy polling (no wake-up of the agent's thread). */
  polledSetups?: number;
  /** What busy polling did and cost while the flows were opened (both agents; absent without the
   * counters). */
  busyPoll?: BusyPollCost;
  /** The slowest 1 % of setups (by miss → written, at least 3): each stage's mean over them, the
   * GC overlap mean, and how many overlapped a GC. Says where the tail goes. */
  tail: {
    samples: number;
    meanMs: number;
    stagesMeanMs: Record<string, number>;
    wakePartsMeanMs?: Record<string, number>;
    gcMeanMs: number;
    withGc: number;
    /** How many of them were read by busy polling. */
    polled?: number;
    /** GC that overlapped miss → read (the frame waiting while the thread collected), mean. */
    gcWakeMeanMs: number;
    /** The agent's counter read-back that overlapped miss → written, mean. */
    syncMeanMs: number;
  };
}

/** One agent's upcall ring reader counters (UpcallRingStats in site-agent). */
interface RingCounters {
  busyPollUs: number;
  pollWindows: number;
  pollMs: number;
  recordsPolled: number;
  recordsWoken: number;
  pollPreempted?: number;
}

/** Busy polling over one measurement: the window, and per agent what changed during the flows. */
export interface BusyPollCost {
  windowUs: number;
  /** Wall time of the measured flows (ms). */
  wallMs: number;
  /** Sending agent, then receiving agent: time polling, windows opened, misses read by polling
   * and after a wake-up, and the process's CPU time (ms) during the flows. */
  agents: {
    pollMs: number;
    windows: number;
    /** Windows ended because the agent's thread lost its CPU while polling. */
    preempted: number;
    polled: number;
    woken: number;
    cpuMs: number;
  }[];
}

export interface SetupReport {
  total: number;
  polled?: number[];
  upcallRing?: RingCounters;
  cpuMs?: number;
  fromMiss: number[];
  fromRead: number[];
  stages: Record<string, number[]>;
  wakeParts?: Record<string, number[]>;
  gcMs: number[];
  gcWakeMs?: number[];
  syncMs?: number[];
  gcPauses: number[];
  upcallPaths?: UpcallPaths;
}

/** How the sending agent's misses reached it so far (KernelDatapath.upcallPaths). */
export interface UpcallPaths {
  ringEnabled: boolean;
  upcalls: number;
  ring: number;
  ringFull: number;
}

const mean = (xs: number[]) => (xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length);

/** Percentiles of each part of the agent's flow-setup profile, and what the slowest setups spent. */
export function setupResult(s: SetupReport): FlowSetupResult {
  const order = s.fromMiss.map((_, i) => i).sort((x, y) => s.fromMiss[y]! - s.fromMiss[x]!);
  const slow = order.slice(0, Math.max(3, Math.ceil(order.length / 100)));
  const at = (xs: number[]) => slow.map((i) => xs[i]!).filter(Number.isFinite);
  // Only the ring's frames carry the reader's stamps (NaN, null in JSON, otherwise).
  const wakeParts = s.wakeParts
    ? Object.entries(s.wakeParts).filter(([, v]) => v.some(Number.isFinite))
    : undefined;
  const polled = s.polled;
  return {
    samples: s.fromMiss.length,
    ...(polled ? { polledSetups: polled.filter((p) => p === 1).length } : {}),
    ...(s.upcallPaths ? { upcallPaths: s.upcallPaths } : {}),
    ...latency(s.fromMiss),
    agent: latency(s.fromRead),
    stages: Object.fromEntries(Object.entries(s.stages).map(([k, v]) => [k, latency(v)])),
    ...(wakeParts
      ? { wakeParts: Object.fromEntries(wakeParts.map(([k, v]) => [k, latency(v.filter(Number.isFinite))])) }
      : {}),
    gc: latency(s.gcMs),
    gcPauses: { count: s.gcPauses.length, ...latency(s.gcPauses) },
    tail: {
      samples: slow.length,
      meanMs: mean(at(s.fromMiss)),
      stagesMeanMs: Object.fromEntries(Object.entries(s.stages).map(([k, v]) => [k, mean(at(v))])),
      ...(wakeParts
        ? { wakePartsMeanMs: Object.fromEntries(wakeParts.map(([k, v]) => [k, mean(at(v))])) }
        : {}),
      gcMeanMs: mean(at(s.gcMs)),
      withGc: at(s.gcMs).filter((g) => g > 0).length,
      ...(polled ? { polled: at(polled).filter((p) => p === 1).length } : {}),
      gcWakeMeanMs: mean(at(s.gcWakeMs ?? [])),
      syncMeanMs: mean(at(s.syncMs ?? [])),
    },
  };
}

export function latency(samples: number[]): Latency {
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

/** Two agent processes on the kernel path with a VM each, up until `stop()`. */
export interface KernelPathLab {
  a: Vm;
  b: Vm;
  /** The sending agent first. */
  agents: AgentProc[];
  /** The sending agent's upcalls and kernel-forwarded packets so far (from its metrics). */
  counters(): Promise<{ upcalls: number; kernelHits: number }>;
  /** Opens `n` new UDP flows one after another from a to b; the sending agent's setup latencies. */
  flowSetup(n: number): Promise<FlowSetupResult>;
  stop(): Promise<void>;
}

function metric(text: string, line: RegExp): number {
  const m = line.exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

/**
 * `nodeArgs`: extra node flags for the agent processes (a probe's --trace-gc); `kernelConfig`:
 * extra `agent.kernel` settings for both agents (a probe's `upcallRing: false`), and
 * `senderKernelConfig` for the sending agent only (on top of them).
 */
export async function startKernelPath(
  lab: Lab,
  nodeArgs: string[] = [],
  kernelConfig: Record<string, string | number | boolean> = {},
  senderKernelConfig: Record<string, string | number | boolean> = {},
): Promise<KernelPathLab> {
  const sh = (ns: string, args: string[]) => lab.exec(ns, args);
  const hA = lab.addNamespace();
  const hB = lab.addNamespace();
  await sh("", ["ip", "-n", hA, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", hB]);
  const t = new TopologyBuilder();
  const hostA = t.host("kbench-a", "172.30.98.1");
  const hostB = t.host("kbench-b", "172.30.98.2");
  for (const h of [hostA, hostB]) h.tunnelPort = 4789;
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
  const placement: [TopologyPb.Host, string, Vm][] = [
    [hostA, hA, a],
    [hostB, hB, b],
  ];
  for (const [h, ns, vm] of placement) {
    await sh("", ["ip", "-n", ns, "addr", "add", `${h.tunnelIp}/24`, "dev", "ul0"]);
    await sh("", ["ip", "-n", ns, "link", "set", "ul0", "up"]);
    await sh("", ["ip", "link", "set", vm.hostIf, "netns", ns]);
    await sh("", ["ip", "-n", ns, "link", "set", vm.hostIf, "up"]);
    await sh(vm.ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
  }
  const server = new FakeTopologyServer(t.objects, 1);
  const controller = await server.start();
  const agents: AgentProc[] = [];
  const stop = async () => {
    for (const ag of agents) await ag.stop();
    await server.stop();
  };
  try {
    for (const [h, ns] of placement) {
      const config = lab.tempFile(`${h.name}.yaml`);
      const own = h === hostA ? { ...kernelConfig, ...senderKernelConfig } : kernelConfig;
      // The measurement opens many flows in a row; the default limiter (2000/s per port) is for
      // bursts from a misbehaving VM, not this.
      writeFileSync(
        config,
        [
          "agent:",
          "  kernel:",
          `    netns: /run/netns/${ns}`,
          `    bpffs: ${lab.tempFile(`bpffs-${h.name}`)}`,
          `    stateDir: ${lab.tempFile("state")}`,
          "    upcallsPerSecond: 100000",
          "    upcallBurst: 4096",
          ...Object.entries(own).map(([k, v]) => `    ${k}: ${v}`),
          "",
        ].join("\n"),
      );
      agents.push(
        await spawnAgent(
          ["--config", config, ...hostAgentArgs(h, controller, 4789), "--datapath", "kernel"],
          60_000,
          nodeArgs,
        ),
      );
    }
    for (let i = 0; i < 20; i++) {
      if ((await lab.exec(a.ns, ["ping", "-c", "1", "-W", "1", b.ip])).code === 0) break;
    }
  } catch (err) {
    await stop();
    throw err;
  }
  const sender = agents[0]!;
  // Source ports of the flow-setup datagrams; each call takes fresh ones (new connections).
  let nextPort = 20000;
  const admin = async (path: string, agent = sender) =>
    (await (await fetch(`http://127.0.0.1:${agent.adminPort}${path}`)).json()) as SetupReport;
  // Each agent's ring counters and CPU time (the receiver's report is only read for those).
  const costs = async (): Promise<SetupReport[]> => [
    await admin("/flow-setup?since=0"),
    await admin(`/flow-setup?since=${Number.MAX_SAFE_INTEGER}`, agents[1]!),
  ];
  return {
    a,
    b,
    agents,
    async counters() {
      const text = await (await fetch(`http://127.0.0.1:${sender.metricsPort}/metrics`)).text();
      return {
        upcalls: metric(text, /^isthmus_agent_upcalls_total (\d+)/m),
        kernelHits: metric(text, /^isthmus_agent_flow_lookups_total\{result="hit"\} (\d+)/m),
      };
    },
    async flowSetup(n) {
      if (nextPort + n > 65535) throw new Error(`flow setup: no ${n} fresh source ports left`);
      const first = nextPort;
      nextPort += n;
      const before = await costs();
      const mark = before[0]!.total;
      const t0 = performance.now();
      // UDP datagrams from distinct source ports, each its own connection, one after another
      // 2 ms apart (not a burst: a burst would queue first packets behind each other and measure
      // the queue, not the setup of one flow).
      const script = `
        const dgram = require("node:dgram");
        let i = 0;
        const next = () => {
          if (i >= ${n}) return;
          const s = dgram.createSocket("udp4");
          s.bind(${first} + i++, () => s.send(Buffer.alloc(32), 9, "${b.ip}", () => { s.close(); setTimeout(next, 2); }));
        };
        next();`;
      await lab.exec(a.ns, [process.execPath, "-e", script], 120_000);
      await new Promise((r) => setTimeout(r, 300));
      const wallMs = performance.now() - t0;
      const report = await admin(`/flow-setup?since=${mark}`);
      const after = [report, ...(await costs()).slice(1)];
      const cost = busyPollCost(before, after, wallMs);
      return { ...setupResult(report), ...(cost ? { busyPoll: cost } : {}) };
    },
    stop,
  };
}

/** What the agents' ring counters and CPU time moved by between two reads (undefined when the
 * agents report no ring counters: the veth, or an agent without them). */
export function busyPollCost(
  before: SetupReport[],
  after: SetupReport[],
  wallMs: number,
): BusyPollCost | undefined {
  if (!before.every((r) => r.upcallRing) || !after.every((r) => r.upcallRing)) return undefined;
  return {
    windowUs: after[0]!.upcallRing!.busyPollUs,
    wallMs,
    agents: after.map((a, i) => {
      const x = a.upcallRing!;
      const b = before[i]!.upcallRing!;
      return {
        pollMs: x.pollMs - b.pollMs,
        windows: x.pollWindows - b.pollWindows,
        preempted: (x.pollPreempted ?? 0) - (b.pollPreempted ?? 0),
        polled: x.recordsPolled - b.recordsPolled,
        woken: x.recordsWoken - b.recordsWoken,
        cpuMs: (a.cpuMs ?? Number.NaN) - (before[i]!.cpuMs ?? Number.NaN),
      };
    }),
  };
}

/** One way of running the agents in the focused flow-setup probe. */
export interface FlowSetupVariant {
  /** `ring` (the default upcall ring buffer) or `veth` (`agent.kernel.upcallRing: false`). */
  upcall: "ring" | "veth";
  /** `agent.kernel.upcallBusyPollUs` (0 = off, the default), for both agents or the sender only. */
  busyPollUs: number;
  busyPollSenderOnly: boolean;
  /** `agent.kernel.upcallBusyPollRealtime` for the agents that poll (0 = off). */
  busyPollRealtime: number;
  /** Extra node flags for both agents (e.g. young-generation sizes). */
  nodeArgs: string[];
}

/**
 * Parses BENCH_DATAPATH_FLOW_SETUP: variants separated by `;`, each `ring` or `veth` optionally
 * followed by `poll=<µs>` (busy polling of the ring on both agents) or `poll-sender=<µs>` (on the
 * sending agent only: as if the receiving host had CPUs of its own), `rt=<priority>` (they poll at
 * that SCHED_FIFO priority), and node flags (`ring;ring poll=5000;ring poll-sender=5000 rt=1;veth;ring
 * --max-semi-space-size=16`).
 */
export function parseFlowSetupVariants(text: string): FlowSetupVariant[] {
  return text
    .split(";")
    .map((v) => v.trim().split(/\s+/))
    .filter((w) => w[0] !== "")
    .map(([upcall, ...rest]) => {
      if (upcall !== "ring" && upcall !== "veth") {
        throw new Error(`BENCH_DATAPATH_FLOW_SETUP: variant ${JSON.stringify(upcall)} must be ring or veth`);
      }
      let busyPollUs = 0;
      let busyPollSenderOnly = false;
      let busyPollRealtime = 0;
      const nodeArgs: string[] = [];
      for (const w of rest) {
        const rt = /^rt=(.*)$/.exec(w);
        if (rt) {
          busyPollRealtime = Number(rt[1]);
          if (!Number.isInteger(busyPollRealtime) || busyPollRealtime < 1 || busyPollRealtime > 99) {
            throw new Error(`BENCH_DATAPATH_FLOW_SETUP: ${JSON.stringify(w)}: rt= takes a priority 1-99`);
          }
          continue;
        }
        const m = /^poll(-sender)?=(.*)$/.exec(w);
        if (!m) {
          nodeArgs.push(w);
          continue;
        }
        busyPollSenderOnly = m[1] !== undefined;
        busyPollUs = Number(m[2]);
        if (!Number.isInteger(busyPollUs) || busyPollUs < 0) {
          throw new Error(`BENCH_DATAPATH_FLOW_SETUP: ${JSON.stringify(w)}: poll= takes whole µs ≥ 0`);
        }
        if (upcall === "veth" && busyPollUs > 0) {
          throw new Error(`BENCH_DATAPATH_FLOW_SETUP: ${JSON.stringify(w)}: busy polling needs the ring`);
        }
      }
      if (busyPollRealtime > 0 && busyPollUs === 0) {
        throw new Error(`BENCH_DATAPATH_FLOW_SETUP: rt= needs poll= or poll-sender=`);
      }
      return { upcall, busyPollUs, busyPollSenderOnly, busyPollRealtime, nodeArgs };
    });
}

/** The `agent.kernel` settings of a variant: for both agents, and for the sender only. */
export function variantKernelConfig(v: FlowSetupVariant): {
  both: Record<string, number | boolean>;
  sender: Record<string, number | boolean>;
} {
  const poll: Record<string, number> =
    v.busyPollUs > 0
      ? {
          upcallBusyPollUs: v.busyPollUs,
          ...(v.busyPollRealtime > 0 ? { upcallBusyPollRealtime: v.busyPollRealtime } : {}),
        }
      : {};
  return {
    both: { ...(v.upcall === "veth" ? { upcallRing: false } : {}), ...(v.busyPollSenderOnly ? {} : poll) },
    sender: v.busyPollSenderOnly ? poll : {},
  };
}

/** A variant's name in output: `ring`, `ring poll=5000`, `veth --flag`. */
export function variantName(v: FlowSetupVariant): string {
  const poll =
    v.busyPollUs > 0
      ? [
          `poll${v.busyPollSenderOnly ? "-sender" : ""}=${v.busyPollUs}`,
          ...(v.busyPollRealtime > 0 ? [`rt=${v.busyPollRealtime}`] : []),
        ]
      : [];
  return [v.upcall, ...poll, ...v.nodeArgs].join(" ");
}

export interface FlowSetupProbeRun {
  variant: string;
  round: number;
  /** Load average (1 min) when the measured flows started and when they ended. */
  load1: [number, number];
  result: FlowSetupResult;
}

/**
 * The flow-setup measurement alone, without the throughput runs: for each round, each variant on a
 * fresh pair of agents (order alternating between rounds, so neither always runs first): `warmup`
 * flows, then `flows` measured ones. For comparing ways up (ring / veth) and agent flags by
 * interleaved runs on a shared machine. `idleMs`: a pause between the warm-up and the measured flows.
 */
export async function flowSetupProbe(
  lab: Lab,
  variants: FlowSetupVariant[],
  rounds: number,
  flows: number,
  warmup: number,
  loadavg: () => number[],
  onRun: (r: FlowSetupProbeRun) => void = () => {},
  idleMs = 0,
): Promise<FlowSetupProbeRun[]> {
  const runs: FlowSetupProbeRun[] = [];
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? variants : [...variants].reverse();
    for (const v of order) {
      const cfg = variantKernelConfig(v);
      const k = await startKernelPath(lab, v.nodeArgs, cfg.both, cfg.sender);
      try {
        await k.flowSetup(warmup);
        // An agent idle for a while (as between the full bench's throughput runs, where the
        // agents see almost no upcalls) lets V8 shrink its young generation before the flows come.
        if (idleMs > 0) await new Promise((r) => setTimeout(r, idleMs));
        const l0 = loadavg()[0] ?? 0;
        const result = await k.flowSetup(flows);
        const run = {
          variant: variantName(v),
          round,
          load1: [l0, loadavg()[0] ?? 0] as [number, number],
          result,
        };
        runs.push(run);
        onRun(run);
      } finally {
        await k.stop();
      }
    }
  }
  return runs;
}
