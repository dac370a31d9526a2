#!/usr/bin/env node
// `npm run sim`: runs many seeded raft-ts simulations and prints one summary line, or replays one
// seed with a trace. Exits non-zero when any seed violates an invariant or linearizability.

import { Command, InvalidArgumentError } from "commander";
import { runSimulation, type SimResult } from "./simulation.js";

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new InvalidArgumentError(`expected a non-negative integer, got "${v}"`);
  return n;
}

const program = new Command()
  .name("raft-sim")
  .description(
    "Deterministic simulation of raft-ts: faults, crash-restarts, membership changes, linearizability",
  )
  .option("--seeds <n>", "number of seeds to run", positiveInt, 1000)
  .option("--first <s>", "first seed of the range", positiveInt, 1)
  .option("--seed <s>", "replay exactly this seed with a trace", positiveInt)
  .option("--duration <ms>", "simulated ms of client load and faults per seed", positiveInt)
  .option("--messages", "with --seed: also trace every delivered message", false)
  .parse();

const opts = program.opts<{
  seeds: number;
  first: number;
  seed?: number;
  duration?: number;
  messages: boolean;
}>();

function describeStats(r: SimResult): string {
  const s = r.stats;
  return `operations=${r.operations} faults=${r.faults} elections=${s.elections} committed=${s.committed} writes=${s.writesOk} reads=${s.readsOk} crashes=${s.crashes} partitions=${s.partitions} confChanges=${s.confChanges} snapshots=${s.snapshotsSent} messages=${s.messages} linearizability=${r.linearizability}`;
}

if (opts.seed !== undefined) {
  const r = runSimulation({
    seed: opts.seed,
    ...(opts.duration !== undefined ? { durationMs: opts.duration } : {}),
    trace: (line) => console.log(line),
    traceMessages: opts.messages,
  });
  console.log(`seed ${r.seed}: ${describeStats(r)} violations=${r.violations.length}`);
  for (const v of r.violations) console.log(`violation: ${v}`);
  process.exit(r.violations.length > 0 ? 1 : 0);
}

const started = performance.now();
let operations = 0;
let faults = 0;
let violations = 0;
let inconclusive = 0;
const failed: number[] = [];
for (let seed = opts.first; seed < opts.first + opts.seeds; seed++) {
  const r = runSimulation({ seed, ...(opts.duration !== undefined ? { durationMs: opts.duration } : {}) });
  operations += r.operations;
  faults += r.faults;
  if (r.linearizability === "unknown") inconclusive++;
  if (r.violations.length > 0) {
    violations += r.violations.length;
    failed.push(seed);
    console.error(`seed ${seed} FAILED: ${r.violations[0]}`);
    console.error(`  replay with: npm run sim -- --seed ${seed}`);
  }
}
const secs = ((performance.now() - started) / 1000).toFixed(1);
console.log(
  `raft sim: seeds=${opts.seeds} operations=${operations} faults=${faults} violations=${violations}` +
    (inconclusive > 0 ? ` inconclusive=${inconclusive}` : "") +
    (failed.length > 0 ? ` failed-seeds=${failed.join(",")}` : "") +
    ` (${secs}s)`,
);
process.exit(violations > 0 ? 1 : 0);
