// Prints the per-stage view of a focused flow-setup run
// (`BENCH_DATAPATH_FLOW_SETUP=... npm run bench -- datapath` writes
// integration-tests/bench/results/datapath-flow-setup.json): for each run, p50/p99 from the miss
// and of the agent's share, each stage's p50/p99, and what the slowest 1 % spent per stage.
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
  console.log(
    `round ${run.round} ${run.variant} (load ${run.load1.map((l) => l.toFixed(1)).join("→")}): ` +
      `miss→written p50 ${f(s.p50Ms)} p99 ${f(s.p99Ms)} max ${f(s.maxMs)}; agent p50 ${f(s.agent.p50Ms)} p99 ${f(s.agent.p99Ms)}\n` +
      `  stages p50/p99: ${stages}\n  slowest ${s.tail.samples} (mean ${f(s.tail.meanMs)}): ${tail}; GC ${f(s.tail.gcMeanMs)}, GC before read ${f(s.tail.gcWakeMeanMs)}${parts}`,
  );
}
