// Measures this machine's wake-up floor for the kernel datapath's *wake* stage (miss → the agent
// running): builds scripts/wake-floor.c with cc into a temporary directory and runs it in rounds,
// configurations interleaved: the BPF ring buffer with the receiver wherever the scheduler puts it,
// on the sender's CPU and on the other (idle) CPU, and a UDP socket; the receiver at the agent's
// priority (nice -10, 100 us slice) and, with --plain, also at nice 0 with the kernel's default
// slice; and a receiver that busy-polls the ring (never sleeps) anywhere and on the other CPU, as
// the agent does inside a busy-poll window (--upcall-busy-poll-us). Root is needed for the ring (a BPF program and map) and for a negative nice value.
// A timing run: take the benchmark lock, and quote it with the load it printed:
//   flock /tmp/isthmus-bench.lock node scripts/wake-floor.mjs [--samples 3000] [--rounds 2]
//     [--period-us 2000] [--plain]
// Prints one line per run and a JSON summary (all samples' percentiles per configuration, load
// average before and after).
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v <= 0) throw new Error(`wake-floor: ${name} needs a positive integer`);
  return v;
}
const samples = arg("--samples", 3000);
const rounds = arg("--rounds", 2);
const periodUs = arg("--period-us", 2000);
const plain = process.argv.includes("--plain");
if (samples * periodUs * rounds * (plain ? 8 : 6) > 7 * 60e6) {
  throw new Error("wake-floor: that would hold the benchmark lock for more than 7 minutes");
}

const src = join(dirname(fileURLToPath(import.meta.url)), "wake-floor.c");
const dir = mkdtempSync(join(tmpdir(), "isthmus-wake-floor-"));
const load = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(" / ");
try {
  const bin = join(dir, "wake-floor");
  execFileSync("cc", ["-O2", "-Wall", "-o", bin, src], { stdio: "inherit" });
  const configs = [
    { mode: "ring", nice: -10, sliceUs: 100, place: "any" },
    { mode: "ring", nice: -10, sliceUs: 100, place: "same" },
    { mode: "ring", nice: -10, sliceUs: 100, place: "cross" },
    { mode: "udp", nice: -10, sliceUs: 100, place: "any" },
    { mode: "poll", nice: -10, sliceUs: 100, place: "any" },
    { mode: "poll", nice: -10, sliceUs: 100, place: "cross" },
    ...(plain
      ? [
          { mode: "ring", nice: 0, sliceUs: 0, place: "any" },
          { mode: "udp", nice: 0, sliceUs: 0, place: "any" },
        ]
      : []),
  ];
  const loadBefore = load();
  const runs = [];
  for (let r = 0; r < rounds; r++) {
    // Alternate which goes first, so a change of load during a round does not favour one.
    const order = r % 2 === 0 ? configs : [...configs].reverse();
    for (const c of order) {
      const out = execFileSync(
        bin,
        [c.mode, String(samples), String(periodUs), String(c.nice), String(c.sliceUs), c.place],
        { encoding: "utf8", timeout: (samples * periodUs) / 1000 + 30_000 },
      );
      const res = { round: r, load: load(), ...JSON.parse(out) };
      runs.push(res);
      const a = res.all;
      console.log(
        `round ${r} ${c.mode.padEnd(4)} ${c.place.padEnd(5)} nice ${String(c.nice).padStart(3)} slice ${String(c.sliceUs).padStart(3)} us: ` +
          `p50 ${a.p50Us} us, p90 ${a.p90Us}, p99 ${a.p99Us}, p99.9 ${a.p999Us}, max ${a.maxUs} ` +
          `(woken on the sender's CPU ${res.senderCpu.n} of ${a.n}; load ${res.load})`,
      );
    }
  }
  console.log(JSON.stringify({ samples, rounds, periodUs, loadBefore, loadAfter: load(), runs }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
