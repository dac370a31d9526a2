// Prints the per-stage view of a focused flow-setup run
// (`BENCH_DATAPATH_FLOW_SETUP=... npm run bench -- datapath` writes
// integration-tests/bench/results/datapath-flow-setup.json): for each run, p50/p99 from the miss
// and of the agent's share, each stage's p50/p99, what the slowest 1 % spent per stage, and with
// busy polling how many misses it caught and what it cost (time polling, CPU, per agent).
//   node scripts/flow-setup-summary.mjs [file.json]
import { readFileSync } from "node:fs";

const file =
  process.argv[2] ??
  new URL("../integration-tests/bench/results/datapath-flow-setup.json", import.meta.url).pathname;
const r = JSON.parse(readFileSync(file, "utf8"));
const f = (x) => (Number.isFinite(x) ? (x * 1000).toFixed(0) : "-");
console.log(
  `${r.date}: load ${r.loadAtStart.map((l) => l.toFixed(2)).join("/")} → ${r.loadAtEnd.map((l) => l.toFixed(2)).join("/")}; µs`,
);
for (const run of r.runs) {
  const s = run.result;
  const stages = Object.entries(s.stages)
    .map(([k, v]) => `${k} ${f(v.p50Ms)}/${f(v.p99Ms)}`)
    .join(", ");
  const parts = s.wakeParts
    ? `\n  wake parts p50/p99: ${Object.entries(s.wakeParts)
        .map(([k, v]) => `${k} ${f(v.p50Ms)}/${f(v.p99Ms)}`)
        .join(", ")}; slowest: ${Object.entries(s.tail.wakePartsMeanMs ?? {})
        .map(([k, v]) => `${k} ${f(v)}`)
        .join(", ")}`
    : "";
  const tail = Object.entries(s.tail.stagesMeanMs)
    .map(([k, v]) => `${k} ${f(v)}`)
    .join(", ");
  const b = s.busyPoll;
  const poll = b
    ? `\n  busy poll ${b.windowUs} µs over ${(b.wallMs / 1000).toFixed(1)} s: setups polled ${s.polledSetups} of ${s.samples} (slowest: ${s.tail.polled}); ` +
      b.agents
        .map(
          (a, i) =>
            `${i === 0 ? "sender" : "receiver"} polled ${a.pollMs.toFixed(0)} ms in ${a.windows} windows (${a.preempted ?? "?"} preempted), misses polled/woken ${a.polled}/${a.woken}, CPU ${a.cpuMs.toFixed(0)} ms`,
        )
        .join("; ")
    : "";
  console.log(
    `round ${run.round} ${run.variant} (load ${run.load1.map((l) => l.toFixed(1)).join("→")}): ` +
      `miss→written p50 ${f(s.p50Ms)} p99 ${f(s.p99Ms)} max ${f(s.maxMs)}; agent p50 ${f(s.agent.p50Ms)} p99 ${f(s.agent.p99Ms)}\n` +
      `  stages p50/p99: ${stages}\n  slowest ${s.tail.samples} (mean ${f(s.tail.meanMs)}): ${tail}; GC ${f(s.tail.gcMeanMs)}, GC before read ${f(s.tail.gcWakeMeanMs)}${parts}${poll}`,
  );
}
