// `npm run bench -- raft`: a 3-node raft-ts group (key-value state machine, gRPC transport, WAL with
// fsync, one process per node) against a 3-member etcd cluster (Debian's etcd-server, its own data
// dirs, fsync on) on the same machine, in one run. Closed-loop clients put 256-byte values over
// HTTP/JSON (raft-ts: the test node's /put; etcd: its gRPC gateway /v3/kv/put) to the leader, at
// 1, 16, 64 and 256 concurrent clients; reports committed writes/s, p50/p99 latency and ratios.
// Both clusters run for the whole benchmark and each level is measured in interleaved repetitions
// (raft-ts then etcd, etcd then raft-ts, ...), medians reported with every repetition listed, so
// load drifting on a shared machine falls on both systems alike.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Agent } from "node:http";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { fixedPort } from "../harness/ports.js";
import { httpJson, RaftKvCluster } from "../harness/raft-cluster.js";

export interface RaftBenchOptions {
  quick: boolean;
  /** Where the JSON goes; integration-tests/bench/results/raft.json by default. */
  resultsFile?: string;
  /** The markdown file whose raft section is rewritten; docs/benchmarks.md by default. */
  docsFile?: string;
  /** Client counts to measure; 1, 16, 64, 256 by default. */
  concurrency?: number[];
}

export interface BenchRow {
  system: "raft-ts" | "etcd";
  clients: number;
  writes: number;
  errors: number;
  seconds: number;
  writesPerSec: number;
  p50Ms: number;
  p99Ms: number;
}

/** One measured repetition of a level: both systems, in the order they ran. */
export interface BenchRepetition {
  clients: number;
  first: BenchRow["system"];
  raftTs: BenchRow;
  etcd: BenchRow;
  ratio: number;
}

const VALUE_BYTES = 256;
const KEYS = 1000;
const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..", "..");

/** True when the etcd server binary is on PATH. */
export function etcdInstalled(): boolean {
  return spawnSync("etcd", ["--version"], { stdio: "ignore" }).status === 0;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Runs `clients` closed loops of `put` for warmup + measure seconds; counts only the measured window. */
async function load(
  clients: number,
  warmupMs: number,
  measureMs: number,
  put: (i: number) => Promise<boolean>,
): Promise<{ writes: number; errors: number; latencies: number[]; seconds: number }> {
  const start = performance.now();
  const measureFrom = start + warmupMs;
  const end = measureFrom + measureMs;
  const latencies: number[] = [];
  let errors = 0;
  let seq = 0;
  const loop = async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      let ok = false;
      try {
        ok = await put(seq++);
      } catch {
        ok = false;
      }
      const t1 = performance.now();
      if (t0 >= measureFrom && t1 <= end) {
        if (ok) latencies.push(t1 - t0);
        else errors++;
      }
      if (!ok) await new Promise((r) => setTimeout(r, 5));
    }
  };
  await Promise.all(Array.from({ length: clients }, loop));
  return { writes: latencies.length, errors, latencies, seconds: measureMs / 1000 };
}

/**
 * Unmeasured load before a system's first level: 16 closed loops for `ms`. Both systems get the
 * same, so neither the first measured level nor the load generator (one Node process serving
 * both systems in turn) runs with code V8 has not optimized yet while the other system's does.
 */
async function prime(ms: number, put: (i: number) => Promise<boolean>): Promise<void> {
  if (ms > 0) await load(16, 0, ms, put);
}

function row(system: BenchRow["system"], clients: number, r: Awaited<ReturnType<typeof load>>): BenchRow {
  const sorted = r.latencies.sort((a, b) => a - b);
  return {
    system,
    clients,
    writes: r.writes,
    errors: r.errors,
    seconds: r.seconds,
    writesPerSec: Math.round(r.writes / r.seconds),
    p50Ms: Number(percentile(sorted, 50).toFixed(2)),
    p99Ms: Number(percentile(sorted, 99).toFixed(2)),
  };
}

interface EtcdMember {
  name: string;
  clientPort: number;
  peerPort: number;
  dir: string;
  proc?: ChildProcess;
  log: string[];
}

class EtcdCluster {
  readonly members: EtcdMember[] = [];
  readonly agent = new Agent({ keepAlive: true, maxSockets: 512 });
  private readonly base = mkdtempSync(join(tmpdir(), "etcd-bench-"));

  static async start(): Promise<EtcdCluster> {
    const c = new EtcdCluster();
    for (let k = 1; k <= 3; k++) {
      const dir = join(c.base, `m${k}`);
      mkdirSync(dir);
      c.members.push({
        name: `m${k}`,
        clientPort: await fixedPort(),
        peerPort: await fixedPort(),
        dir,
        log: [],
      });
    }
    const initial = c.members.map((m) => `${m.name}=http://127.0.0.1:${m.peerPort}`).join(",");
    for (const m of c.members) {
      // Same timing as raft-ts's defaults (DESIGN §5); etcd fsyncs its WAL on every batch by default.
      m.proc = spawn(
        "etcd",
        [
          `--name=${m.name}`,
          `--data-dir=${m.dir}`,
          `--listen-client-urls=http://127.0.0.1:${m.clientPort}`,
          `--advertise-client-urls=http://127.0.0.1:${m.clientPort}`,
          `--listen-peer-urls=http://127.0.0.1:${m.peerPort}`,
          `--initial-advertise-peer-urls=http://127.0.0.1:${m.peerPort}`,
          `--initial-cluster=${initial}`,
          "--initial-cluster-state=new",
          "--initial-cluster-token=isthmus-bench",
          "--heartbeat-interval=100",
          "--election-timeout=1000",
          "--logger=zap",
          "--log-level=warn",
        ],
        { stdio: ["ignore", "ignore", "pipe"] },
      );
      m.proc.stderr!.on("data", (d: Buffer) => {
        if (m.log.length < 100) m.log.push(d.toString());
      });
    }
    try {
      await c.waitHealthy();
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  private async waitHealthy(): Promise<void> {
    const end = Date.now() + 30_000;
    while (Date.now() < end) {
      const ok = await Promise.all(
        this.members.map((m) =>
          httpJson(this.agent, m.clientPort, "GET", "/health", undefined, 1000).then(
            (r) => r.json.health === "true",
            () => false,
          ),
        ),
      );
      if (ok.every(Boolean)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(
      `etcd cluster not healthy in 30 s:\n${this.members.map((m) => m.log.join("")).join("\n")}`,
    );
  }

  /** The member that leads (from /v3/maintenance/status: its own id equals the leader id). */
  async leader(): Promise<EtcdMember> {
    const end = Date.now() + 15_000;
    while (Date.now() < end) {
      for (const m of this.members) {
        const r = await httpJson(this.agent, m.clientPort, "POST", "/v3/maintenance/status", {}, 2000).catch(
          () => undefined,
        );
        const header = r?.json.header as { member_id?: string } | undefined;
        if (header?.member_id && header.member_id === r?.json.leader) return m;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("etcd has no leader");
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.members.map(async (m) => {
        const p = m.proc;
        if (!p || p.exitCode !== null) return;
        const exited = new Promise<void>((resolve) => p.once("exit", () => resolve()));
        p.kill("SIGTERM");
        const t = setTimeout(() => p.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(t);
      }),
    );
    this.agent.destroy();
    rmSync(this.base, { recursive: true, force: true });
  }
}

interface SystemUnderTest {
  put: (i: number) => Promise<boolean>;
  stop: () => Promise<void>;
}

async function startRaftTs(): Promise<SystemUnderTest> {
  // RAFT_BENCH_PROFILE_DIR=dir writes a V8 CPU profile of every node process there (node --cpu-prof).
  const profDir = process.env.RAFT_BENCH_PROFILE_DIR;
  const nodeArgs = profDir ? ["--cpu-prof", `--cpu-prof-dir=${profDir}`] : [];
  // RAFT_BENCH_INLINE_SYNC_MAX_ENTRIES=0 turns off the followers' blocking fsync of a lone
  // append (RaftNode's inlineSyncMaxEntries), to compare both ways on the same machine.
  const inline = process.env.RAFT_BENCH_INLINE_SYNC_MAX_ENTRIES;
  // RAFT_BENCH_LEADER_INLINE_SYNC=1 has the leader sync a lone write on its own thread (leaderInlineSync).
  const leaderInline = process.env.RAFT_BENCH_LEADER_INLINE_SYNC;
  const cluster = await RaftKvCluster.start({
    snapshotEvery: 10_000,
    nodeArgs,
    inlineSyncMaxEntries: inline === undefined || inline === "" ? undefined : Number(inline),
    leaderInlineSync: leaderInline === undefined || leaderInline === "" ? undefined : leaderInline !== "0",
  });
  try {
    let leader = await cluster.waitLeader();
    const value = randomBytes(VALUE_BYTES).toString("base64").slice(0, VALUE_BYTES);
    // Writes go to the leader. When leadership moves (on a loaded machine an election can fire
    // mid-run) the refusal names the new leader and the clients follow it, as an etcd member
    // forwards a put to its leader; the refused write counts as an error.
    const put = async (i: number) => {
      const r = await cluster.put(leader, `bench-${i % KEYS}`, value);
      if (r.status === 200) return true;
      const next = cluster.nodes.find((n) => n.id === r.json.leader);
      if (next) leader = next;
      return false;
    };
    return { put, stop: () => cluster.stop() };
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}

async function startEtcd(): Promise<SystemUnderTest> {
  const etcd = await EtcdCluster.start();
  try {
    const leader = await etcd.leader();
    const value = randomBytes(VALUE_BYTES).toString("base64");
    const keys = Array.from({ length: KEYS }, (_, k) => Buffer.from(`bench-${k}`).toString("base64"));
    const put = async (i: number) => {
      const res = await httpJson(etcd.agent, leader.clientPort, "POST", "/v3/kv/put", {
        key: keys[i % KEYS],
        value,
      });
      return res.status === 200;
    };
    return { put, stop: () => etcd.stop() };
  } catch (err) {
    await etcd.stop();
    throw err;
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The level's row for one system: medians over its repetitions (writes and errors summed). */
function medianRow(runs: BenchRow[]): BenchRow {
  const r0 = runs[0]!;
  return {
    system: r0.system,
    clients: r0.clients,
    writes: runs.reduce((a, r) => a + r.writes, 0),
    errors: runs.reduce((a, r) => a + r.errors, 0),
    seconds: runs.reduce((a, r) => a + r.seconds, 0),
    writesPerSec: Math.round(median(runs.map((r) => r.writesPerSec))),
    p50Ms: Number(median(runs.map((r) => r.p50Ms)).toFixed(2)),
    p99Ms: Number(median(runs.map((r) => r.p99Ms)).toFixed(2)),
  };
}

/**
 * Every level in `reps` interleaved repetitions: raft-ts first in even ones, etcd first in odd
 * ones, the page cache flushed (sync(1)) before each measured run so neither meets the other's
 * write-back in its fsyncs.
 */
async function measureInterleaved(
  raft: SystemUnderTest,
  etcd: SystemUnderTest,
  levels: number[],
  reps: number,
  warmupMs: number,
  measureMs: number,
): Promise<BenchRepetition[]> {
  const out: BenchRepetition[] = [];
  for (const clients of levels) {
    for (let k = 0; k < reps; k++) {
      const order: Array<["raft-ts" | "etcd", SystemUnderTest]> = [
        ["raft-ts", raft],
        ["etcd", etcd],
      ];
      if (k % 2 === 1) order.reverse();
      const got: Partial<Record<BenchRow["system"], BenchRow>> = {};
      for (const [name, sys] of order) {
        spawnSync("sync", { stdio: "ignore" });
        got[name] = row(name, clients, await load(clients, warmupMs, measureMs, sys.put));
      }
      const a = got["raft-ts"]!;
      const b = got.etcd!;
      out.push({ clients, first: order[0]![0], raftTs: a, etcd: b, ratio: ratio(a, b) });
      console.log(
        `  clients=${clients} repetition ${k + 1}/${reps}: raft-ts ${a.writesPerSec} writes/s, etcd ${b.writesPerSec} (${order[0]![0]} first), ratio ${ratio(a, b)}`,
      );
    }
  }
  return out;
}

function ratio(a: BenchRow, b: BenchRow): number {
  return Number((a.writesPerSec / b.writesPerSec).toFixed(3));
}

function etcdVersion(): string {
  const out = spawnSync("etcd", ["--version"], { encoding: "utf8" }).stdout ?? "";
  return /etcd Version: (\S+)/.exec(out)?.[1] ?? "unknown";
}

function markdown(rows: BenchRow[], reps: BenchRepetition[], meta: Record<string, string | number>): string {
  const lines = [
    "## raft: raft-ts vs etcd (3 nodes, fsync, 256-byte puts)",
    "",
    `Measured ${meta.date} on ${meta.cpus} × ${meta.cpu}, ${meta.mode} mode (each level ${meta.repetitions} interleaved repetitions of ${meta.measureSeconds} s after ` +
      `${meta.warmupSeconds} s warm-up, raft-ts and etcd alternating which goes first, medians below; each system first gets ${meta.primeSeconds} s of unmeasured load at 16 clients), etcd ${meta.etcd}, 1-minute load average ${meta.loadAverage}. Both systems: 3 members as separate processes on ` +
      "loopback, heartbeat 100 ms, election 1 s, WAL fsync before acknowledging; clients are closed loops " +
      "sending HTTP/JSON puts to the leader (raft-ts: the test node's `/put`; etcd: its gRPC gateway " +
      "`/v3/kv/put`) over 1 000 keys. Throughput ratio > 1 and latency ratio < 1 favour raft-ts.",
    "",
    "| clients | raft-ts writes/s | etcd writes/s | ratio | raft-ts p50 ms | etcd p50 ms | raft-ts p99 ms | etcd p99 ms | p99 ratio |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  const clients = [...new Set(rows.map((r) => r.clients))];
  for (const c of clients) {
    const a = rows.find((r) => r.system === "raft-ts" && r.clients === c)!;
    const b = rows.find((r) => r.system === "etcd" && r.clients === c)!;
    lines.push(
      `| ${c} | ${a.writesPerSec} | ${b.writesPerSec} | ${(a.writesPerSec / b.writesPerSec).toFixed(2)} | ` +
        `${a.p50Ms} | ${b.p50Ms} | ${a.p99Ms} | ${b.p99Ms} | ${(a.p99Ms / b.p99Ms).toFixed(2)} |`,
    );
  }
  lines.push("", "Every repetition (raft-ts / etcd writes/s, ratio; * = raft-ts ran first):", "");
  for (const c of clients) {
    const each = reps
      .filter((r) => r.clients === c)
      .map(
        (r) =>
          `${r.raftTs.writesPerSec} / ${r.etcd.writesPerSec} (${r.ratio.toFixed(2)})${r.first === "raft-ts" ? "*" : ""}`,
      );
    lines.push(`- ${c} clients: ${each.join(", ")}`);
  }
  lines.push(
    "",
    "Reproduce: `npm run bench -- raft` (or `-- raft --quick`). The machine was shared with other " +
      "work while measuring, so treat single numbers as indicative and compare the ratios.",
  );
  return lines.join("\n");
}

const START = "<!-- bench:raft:start -->";
const END = "<!-- bench:raft:end -->";

function writeDocs(file: string, section: string): void {
  const text = existsSync(file) ? readFileSync(file, "utf8") : "# Benchmarks\n";
  const block = `${START}\n${section}\n${END}`;
  const i = text.indexOf(START);
  const j = text.indexOf(END);
  const next =
    i >= 0 && j > i
      ? text.slice(0, i) + block + text.slice(j + END.length)
      : `${text.trimEnd()}\n\n${block}\n`;
  writeFileSync(file, next);
}

export async function run(opts: RaftBenchOptions): Promise<void> {
  if (!etcdInstalled()) {
    throw new Error("raft bench: etcd is not installed (apt-get install -y etcd-server etcd-client)");
  }
  const levels = opts.concurrency ?? [1, 16, 64, 256];
  // RAFT_BENCH_REPS / RAFT_BENCH_MEASURE_SECONDS override the repetitions per level and their length.
  const reps = Number(process.env.RAFT_BENCH_REPS || (opts.quick ? 2 : 5));
  const measureMs = 1000 * Number(process.env.RAFT_BENCH_MEASURE_SECONDS || (opts.quick ? 1 : 4));
  const warmupMs = opts.quick ? 300 : 1000;
  // RAFT_BENCH_PRIME_SECONDS overrides the unmeasured load each system gets before the first level.
  const primeMs = 1000 * Number(process.env.RAFT_BENCH_PRIME_SECONDS || (opts.quick ? 0.3 : 15));
  if (!Number.isSafeInteger(reps) || reps < 1)
    throw new Error("raft bench: RAFT_BENCH_REPS must be a positive integer");
  if (!(primeMs >= 0)) throw new Error("raft bench: RAFT_BENCH_PRIME_SECONDS must be a non-negative number");
  if (!(measureMs > 0)) throw new Error("raft bench: RAFT_BENCH_MEASURE_SECONDS must be a positive number");
  console.log(
    `raft bench: ${opts.quick ? "quick" : "full"} mode, clients ${levels.join(", ")}, ${reps} interleaved repetitions of ${measureMs / 1000} s per level`,
  );
  const loadBefore = loadavg()[0]!;
  // `npm run bench` builds first: flush its write-back before either system starts.
  spawnSync("sync", { stdio: "ignore" });
  const raft = await startRaftTs();
  let repetitions: BenchRepetition[];
  try {
    const etcd = await startEtcd();
    try {
      await prime(primeMs, raft.put);
      await prime(primeMs, etcd.put);
      repetitions = await measureInterleaved(raft, etcd, levels, reps, warmupMs, measureMs);
    } finally {
      await etcd.stop();
    }
  } finally {
    await raft.stop();
  }
  const raftRows = levels.map((c) =>
    medianRow(repetitions.filter((r) => r.clients === c).map((r) => r.raftTs)),
  );
  const etcdRows = levels.map((c) =>
    medianRow(repetitions.filter((r) => r.clients === c).map((r) => r.etcd)),
  );
  const rows = [...raftRows, ...etcdRows];
  const meta = {
    date: new Date().toISOString().slice(0, 16).replace("T", " "),
    cpus: cpus().length,
    cpu: cpus()[0]?.model.trim() ?? "unknown CPU",
    mode: opts.quick ? "quick" : "full",
    repetitions: reps,
    measureSeconds: measureMs / 1000,
    warmupSeconds: warmupMs / 1000,
    primeSeconds: primeMs / 1000,
    etcd: etcdVersion(),
    node: process.version,
    raftTsInlineSyncMaxEntries: process.env.RAFT_BENCH_INLINE_SYNC_MAX_ENTRIES || "1 (default)",
    raftTsLeaderInlineSync: process.env.RAFT_BENCH_LEADER_INLINE_SYNC || "0 (default)",
    loadAverage: `${loadBefore.toFixed(1)} before, ${loadavg()[0]!.toFixed(1)} after`,
  };
  const ratios = levels.map((c) => {
    const a = raftRows.find((r) => r.clients === c)!;
    const b = etcdRows.find((r) => r.clients === c)!;
    const each = repetitions.filter((r) => r.clients === c).map((r) => r.ratio);
    return {
      clients: c,
      throughput: Number((a.writesPerSec / b.writesPerSec).toFixed(3)),
      p50: Number((a.p50Ms / b.p50Ms).toFixed(3)),
      p99: Number((a.p99Ms / b.p99Ms).toFixed(3)),
      /** Throughput ratio of each repetition, lowest and highest. */
      throughputMin: Math.min(...each),
      throughputMax: Math.max(...each),
    };
  });
  for (const r of rows) {
    console.log(
      `${r.system.padEnd(8)} clients=${String(r.clients).padStart(3)}  ${String(r.writesPerSec).padStart(6)} writes/s  ` +
        `p50 ${r.p50Ms} ms  p99 ${r.p99Ms} ms  errors ${r.errors}`,
    );
  }
  for (const q of ratios) {
    console.log(
      `ratio raft-ts/etcd clients=${q.clients}: throughput ${q.throughput} (repetitions ${q.throughputMin}–${q.throughputMax}), p50 ${q.p50}, p99 ${q.p99}`,
    );
  }
  const resultsFile = opts.resultsFile ?? join(repo, "integration-tests", "bench", "results", "raft.json");
  mkdirSync(dirname(resultsFile), { recursive: true });
  writeFileSync(
    resultsFile,
    `${JSON.stringify({ benchmark: "raft", meta, rows, ratios, repetitions }, null, 2)}\n`,
  );
  writeDocs(opts.docsFile ?? join(repo, "docs", "benchmarks.md"), markdown(rows, repetitions, meta));
  console.log(`raft bench: wrote ${resultsFile}`);
}
