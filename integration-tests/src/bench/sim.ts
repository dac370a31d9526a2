// `npm run bench -- sim`: first-packet simulations per second per core on the path the issue fixes
// (VM → bridge → router → bridge → VM with anti-spoofing and an N-rule stateful security group),
// for N = 10, 20, 100, 1000; the agent's flow-table hit path (key extraction, exact-cache lookup)
// beside it; and bytes allocated per simulation. Single-threaded, so one core. Writes
// results/sim.json (with the load average at the time) and its section of docs/benchmarks.md.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { GCProfiler } from "node:v8";
import { topologypb } from "@isthmus/schema";
import {
  eth,
  extractKey,
  FlowTable,
  InMemoryNatBlockRegistry,
  KEY_SIZE,
  maskFromFields,
  maskToFields,
  type SimContext,
  SimState,
  simulate,
  TopologyBuilder,
  TopologyView,
} from "@isthmus/site-agent";

const RA = topologypb.RuleAction;
const VM1_MAC = "02:00:00:00:01:01";
const VM2_MAC = "02:00:00:00:02:01";
const RA_MAC = "02:00:00:00:01:fe";
const RB_MAC = "02:00:00:00:02:fe";
const FLOWS = 16384;

/** The fixed path with an SG of `rules` rules on vm2 (the matching rule last before the drop). */
export function buildPath(rules: number) {
  const t = new TopologyBuilder();
  const h1 = t.host("h1", "192.168.0.1");
  const bA = t.bridge();
  const bB = t.bridge();
  const r = t.router();
  const members = t.ipGroup(["10.0.1.0/24"]);
  const spoof = t.chain("vm1-in");
  t.rule(spoof, RA.RULE_ACTION_DROP, { ethSrc: VM1_MAC, invEthSrc: true });
  t.rule(spoof, RA.RULE_ACTION_DROP, { etherType: 0x0800, nwSrc: "10.0.1.1/32", invNwSrc: true });
  const sg = t.chain("vm2-sg");
  t.accept(sg, { matchReturnFlow: true });
  for (let i = 0; i < rules - 3; i++) {
    t.accept(sg, { nwProto: 6, tpDst: { start: 10000 + i, end: 10000 + i }, ipAddrGroupSrc: members.id });
  }
  t.accept(sg, { nwProto: 6, tpDst: { start: 22, end: 22 }, ipAddrGroupSrc: members.id });
  t.dropRule(sg);
  const vm1 = t.vmPort(bA, h1, VM1_MAC, ["10.0.1.1"], { inboundFilterId: spoof.id });
  const vm2 = t.vmPort(bB, h1, VM2_MAC, ["10.0.2.1"], { outboundFilterId: sg.id });
  const ifA = t.routerInterface(r, bA, RA_MAC, "10.0.1.254/24");
  const ifB = t.routerInterface(r, bB, RB_MAC, "10.0.2.254/24");
  t.route(r, "10.0.1.0/24", ifA.routerPort);
  t.route(r, "10.0.2.0/24", ifB.routerPort);
  return { view: new TopologyView(t.objects), vm1, vm2 };
}

function frames(n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    out.push(
      eth(VM1_MAC, RA_MAC)
        .ip4("10.0.1.1", "10.0.2.1")
        .tcp(1024 + (i % 60000), 22)
        .build(),
    );
  }
  return out;
}

function newContext(): SimContext {
  const state = new SimState(new InMemoryNatBlockRegistry().forHost("h1"), { conntrackEntries: FLOWS * 2 });
  return { now: 1, hostId: "h1", state };
}

function cpuNs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
}

/**
 * Bytes allocated in `fn`: live growth of the JS heap plus everything the collector reclaimed
 * meanwhile, plus typed-array storage allocated outside the heap (the conntrack table keeps its
 * entries there). `fn` calls `sample` now and then: the rises of external storage between samples
 * are summed, so storage freed meanwhile (tables of earlier rounds) does not hide new storage.
 */
function allocated(fn: (sample: () => void) => void): number {
  const prof = new GCProfiler();
  const before = process.memoryUsage().heapUsed;
  let external = 0;
  let last = process.memoryUsage().arrayBuffers;
  const sample = () => {
    const now = process.memoryUsage().arrayBuffers;
    if (now > last) external += now - last;
    last = now;
  };
  prof.start();
  fn(sample);
  sample();
  const after = process.memoryUsage().heapUsed;
  const res = prof.stop();
  let reclaimed = 0;
  for (const s of res?.statistics ?? [])
    reclaimed += s.beforeGC.heapStatistics.usedHeapSize - s.afterGC.heapStatistics.usedHeapSize;
  return after - before + reclaimed + external;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

interface Row {
  rules: number;
  simsPerSec: number;
  bestSimsPerSec: number;
  usPerSim: number;
  bytesPerSim: number;
  hitsPerSec: number;
  hitToSimRatio: number;
}

function measure(rules: number, quick: boolean): Row {
  const { view, vm1, vm2 } = buildPath(rules);
  const fs = frames(quick ? 2000 : FLOWS);
  const ingress = { portId: vm1.id };
  // Check the path really is the one described before timing it.
  const probe = simulate(view, fs[0]!, ingress, newContext());
  const out = probe.actions.at(-1);
  if (out?.kind !== "output" || out.portId !== vm2.id)
    throw new Error(`bench path broken: ${JSON.stringify(probe.actions)}`);

  const rounds = quick ? 1 : Math.max(3, Math.round(160 / rules));
  let ctx = newContext();
  // Indexed loops: a for-of iterator would count against the simulation's allocation.
  const n = fs.length;
  for (let i = 0; i < n; i++) simulate(view, fs[i]!, ingress, ctx); // warm-up
  // CPU time of this process, not wall time: the rate per core even on a busy machine. Each
  // round is timed alone and the median reported, so a burst of load elsewhere does not skew it.
  const simRates: number[] = [];
  for (let r = 0; r < rounds; r++) {
    ctx = newContext(); // every tuple is a new connection again
    const t0 = cpuNs();
    for (let i = 0; i < n; i++) simulate(view, fs[i]!, ingress, ctx);
    simRates.push(fs.length / ((cpuNs() - t0) / 1e9));
  }
  ctx = newContext();
  const bytes = allocated((sample) => {
    for (let i = 0; i < n; i++) {
      simulate(view, fs[i]!, ingress, ctx);
      if ((i & 255) === 255) sample();
    }
  });

  // Install every result in the agent's flow table (mask from the result), then look packets up
  // the way the userspace datapath does: extract the key into a reused buffer, one lookup.
  const table = new FlowTable({
    maxFlows: FLOWS * 2,
    maxExactEntries: FLOWS * 2,
    maxMasks: 256,
    idleTimeoutMs: 60_000,
    hardTimeoutMs: 0,
  });
  const key = Buffer.alloc(KEY_SIZE);
  const bufs = fs.map((f) => Buffer.from(f.buffer, f.byteOffset, f.byteLength));
  ctx = newContext();
  for (const b of bufs) {
    const r = simulate(view, b, ingress, ctx);
    extractKey(b, 1, 0, key);
    table.install(
      { match: key, mask: maskFromFields(maskToFields(r.mask)), actions: { outputs: [] }, tags: r.tags },
      1,
    );
  }
  let hits = 0;
  const hitRates: number[] = [];
  for (let r = 0; r < rounds + 1; r++) {
    const t1 = cpuNs();
    for (let k = 0; k < 4; k++) {
      for (const b of bufs) {
        extractKey(b, 1, 0, key);
        if (table.lookup(key, b.length, 2) !== undefined) hits++;
      }
    }
    // The first round fills the exact cache (megaflow hits); the rest are exact hits.
    if (r > 0) hitRates.push((4 * fs.length) / ((cpuNs() - t1) / 1e9));
  }
  if (hits !== (rounds + 1) * 4 * fs.length)
    throw new Error(`flow-hit path missed ${(rounds + 1) * 4 * fs.length - hits} lookups`);
  const simsPerSec = Math.round(median(simRates));
  const hitsPerSec = Math.round(median(hitRates));
  return {
    rules,
    simsPerSec,
    usPerSim: Number((1e6 / simsPerSec).toFixed(2)),
    bestSimsPerSec: Math.round(Math.max(...simRates)),
    bytesPerSim: Math.round(bytes / fs.length),
    hitsPerSec,
    hitToSimRatio: Number((hitsPerSec / simsPerSec).toFixed(2)),
  };
}

const GOAL = 250_000;
/** MidoNet's own load harness: 20–26k new flows per second per host (cited, not measured here). */
const MIDONET_CITED = 26_000;

export async function run(opts: { quick: boolean }): Promise<{ rows: Row[] }> {
  const sizes = opts.quick ? [20] : [10, 20, 100, 1000];
  const rows = sizes.map((n) => measure(n, opts.quick));
  const twenty = rows.find((r) => r.rules === 20)!;
  const result = {
    bench: "sim",
    date: new Date().toISOString(),
    quick: opts.quick,
    node: process.version,
    cpu: cpus()[0]?.model ?? "unknown",
    /** `uptime`'s 1/5/15-minute load averages when the run ended (the machine may be shared). */
    loadAverage: loadavg().map((x) => Number(x.toFixed(2))),
    path: "VM → bridge (anti-spoof, 2 rules) → router → bridge → VM (stateful SG of N rules, match last)",
    rows,
    goalSimsPerSec: GOAL,
    ratioToGoal: Number((twenty.simsPerSec / GOAL).toFixed(2)),
    ratioToMidonetCited: Number((twenty.simsPerSec / MIDONET_CITED).toFixed(1)),
  };
  for (const r of rows) {
    console.log(
      `sim N=${r.rules}: ${r.simsPerSec.toLocaleString()} first-packet sims/s (${r.usPerSim} µs, ${r.bytesPerSim} B allocated), ` +
        `${r.hitsPerSec.toLocaleString()} flow hits/s (${r.hitToSimRatio}× a simulation)`,
    );
  }
  console.log(
    `N=20: ${result.ratioToGoal}× the ${GOAL.toLocaleString()}/s goal, ${result.ratioToMidonetCited}× MidoNet's cited ${MIDONET_CITED.toLocaleString()} new flows/s`,
  );
  if (opts.quick) return result;
  const root = fileURLToPath(new URL("../../../", import.meta.url));
  mkdirSync(`${root}integration-tests/bench/results`, { recursive: true });
  writeFileSync(`${root}integration-tests/bench/results/sim.json`, `${JSON.stringify(result, null, 2)}\n`);
  writeSection(`${root}docs/benchmarks.md`, result);
  return result;
}

export function writeSection(
  file: string,
  r: {
    date: string;
    cpu: string;
    node: string;
    loadAverage: number[];
    path: string;
    rows: Row[];
    ratioToGoal: number;
    ratioToMidonetCited: number;
  },
): void {
  const lines = [
    "## sim — packet simulation",
    "",
    `${r.date.slice(0, 10)}, ${r.cpu}, Node ${r.node}, load average ${r.loadAverage.join(" / ")} (1/5/15 min) at the end of the run, one core (rates are per CPU-second of the process, median of rounds; best round in parentheses). Path: ${r.path}. Every packet is a new`,
    "connection (first-packet simulation: parse, two chains, bridge, router, bridge, conntrack commit).",
    "The flow-hit column is the agent's userspace hit path for those flows, installed with the",
    "simulation's masks: extract the flow key into a reused buffer, one exact-cache lookup in the",
    "agent's FlowTable (site-agent/src/agent/flow-table.ts).",
    "",
    "| SG rules | first-packet sims/s | µs/sim | bytes allocated/sim | flow hits/s | hit ÷ sim |",
    "|---:|---:|---:|---:|---:|---:|",
    ...r.rows.map(
      (x) =>
        `| ${x.rules} | ${x.simsPerSec.toLocaleString("en-US")} (${x.bestSimsPerSec.toLocaleString("en-US")}) | ${x.usPerSim} | ${x.bytesPerSim} | ${x.hitsPerSec.toLocaleString("en-US")} | ${x.hitToSimRatio} |`,
    ),
    "",
    "Before the allocation, conntrack and rule-index work (2026-11-24 morning, idle machine): 174k / 142k /",
    "169k / 44k sims/s for 10 / 20 / 100 / 1000 rules, 3,354 bytes allocated per simulation; flow hits",
    "450–620k/s through a string-keyed Map. After it, before conntrack entries moved into typed arrays",
    "and keys were built from cached parts (same day, load 1.9): 179k sims/s at 20 rules (245k best",
    "round), 1,782 bytes per simulation — most of the spread between rounds was the collector copying",
    "each connection's entry object and key string.",
    "",
    "Bytes allocated count the JS heap (live growth plus what the collector reclaimed) and typed-array",
    "storage allocated outside it (the conntrack table), sampled every 256 simulations.",
    "",
    `With 20 rules: ${r.ratioToGoal}× the goal of 250,000 sims/s/core; ${r.ratioToMidonetCited}× the 26,000 new flows/s per host`,
    "MidoNet's own load harness reports (a cited figure, not run here: there is no in-process MidoNet to",
    "run side by side). Runs of rules on one protocol are indexed by (ether type, protocol, destination",
    "port), so the 1000-rule group costs about what the 20-rule one does.",
    "",
  ];
  const doc = readFileSync(file, "utf8");
  const section = `${SIM_START}\n${lines.join("\n").trimEnd()}\n${SIM_END}\n`;
  // The section sits between its own markers. An older file has only the heading: its section
  // ends at the next heading or the next section's marker, whichever comes first (ending at the
  // next heading alone swallowed the following section's start marker).
  let start = doc.indexOf(SIM_START);
  let end = start < 0 ? -1 : doc.indexOf(SIM_END, start);
  if (end >= 0) end += SIM_END.length + 1;
  else {
    start = doc.indexOf("## sim — packet simulation");
    const ends = ["\n## ", "\n<!--"].map((m) => doc.indexOf(m, start + 1)).filter((i) => i >= 0);
    end = ends.length > 0 ? Math.min(...ends) + 1 : doc.length;
  }
  if (start < 0) {
    writeFileSync(file, `${doc.trimEnd()}\n\n${section}`);
    return;
  }
  writeFileSync(file, doc.slice(0, start) + section + doc.slice(Math.min(end, doc.length)));
}

const SIM_START = "<!-- bench:sim:start -->";
const SIM_END = "<!-- bench:sim:end -->";
