// `npm run bench -- raft`: a 3-node raft-ts group (key-value state machine, gRPC transport, WAL with
// fsync, one process per node) against a 3-member etcd cluster (Debian's etcd-server, its own data
// dirs, fsync on) on the same machine, in one run. Closed-loop clients put 256-byte values over
// HTTP/JSON (raft-ts: the test node's /put; etcd: its gRPC gateway /v3/kv/put) to the leader, at
// 1, 16, 64 and 256 concurrent clients; reports committed writes/s, p50/p99 latency and ratios.
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

const VALUE_BYTES = 256;
/**
 * V8 flags for the raft-ts node processes, as a server's runtime would be tuned: a young
 * generation of 16 MiB growing to 64 MiB per semi-space (Node's default starts at 1 MiB) cuts
 * the stop-the-world scavenges several-fold (a node allocates tens of KB per write in HTTP,
 * gRPC and protobuf objects; each scavenge stalls whatever write is in flight). etcd runs with
 * Go's defaults.
 */
export const RAFT_NODE_FLAGS = ["--max-semi-space-size=64", "--min-semi-space-size=16"];
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

async function benchRaftTs(
  levels: number[],
  primeMs: number,
  warmupMs: number,
  measureMs: number,
): Promise<BenchRow[]> {
  // RAFT_BENCH_PROFILE_DIR=dir writes a V8 CPU profile of every node process there (node --cpu-prof).
  const profDir = process.env.RAFT_BENCH_PROFILE_DIR;
  const nodeArgs = [...RAFT_NODE_FLAGS, ...(profDir ? ["--cpu-prof", `--cpu-prof-dir=${profDir}`] : [])];
  const cluster = await RaftKvCluster.start({ snapshotEvery: 10_000, nodeArgs });
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
    await prime(primeMs, put);
    const rows: BenchRow[] = [];
    for (const clients of levels)
      rows.push(row("raft-ts", clients, await load(clients, warmupMs, measureMs, put)));
    return rows;
  } finally {
    await cluster.stop();
  }
}

async function benchEtcd(
  levels: number[],
  primeMs: number,
  warmupMs: number,
  measureMs: number,
): Promise<BenchRow[]> {
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
    await prime(primeMs, put);
    const rows: BenchRow[] = [];
    for (const clients of levels)
      rows.push(row("etcd", clients, await load(clients, warmupMs, measureMs, put)));
    return rows;
  } finally {
    await etcd.stop();
  }
}

function etcdVersion(): string {
  const out = spawnSync("etcd", ["--version"], { encoding: "utf8" }).stdout ?? "";
  return /etcd Version: (\S+)/.exec(out)?.[1] ?? "unknown";
}

function markdown(rows: BenchRow[], meta: Record<string, string | number>): string {
  const lines = [
    "## raft: raft-ts vs etcd (3 nodes, fsync, 256-byte puts)",
    "",
    `Measured ${meta.date} on ${meta.cpus} × ${meta.cpu}, ${meta.mode} mode (${meta.measureSeconds} s per level after ` +
      `${meta.warmupSeconds} s warm-up; each system first gets ${meta.primeSeconds} s of unmeasured load at 16 clients), etcd ${meta.etcd}, raft-ts nodes on Node ${meta.node} with \`${meta.raftTsNodeFlags}\`, 1-minute load average ${meta.loadAverage}. Both systems: 3 members as separate processes on ` +
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
  const warmupMs = opts.quick ? 300 : 2000;
  const measureMs = opts.quick ? 1200 : 10_000;
  const primeMs = opts.quick ? 300 : 3000;
  console.log(`raft bench: ${opts.quick ? "quick" : "full"} mode, clients ${levels.join(", ")}`);
  const loadBefore = loadavg()[0]!;
  // `npm run bench` builds first; each system starts with the page cache flushed (sync(1)), so
  // neither meets the other's or the build's write-back in its fsyncs.
  spawnSync("sync", { stdio: "ignore" });
  const raftRows = await benchRaftTs(levels, primeMs, warmupMs, measureMs);
  spawnSync("sync", { stdio: "ignore" });
  const etcdRows = await benchEtcd(levels, primeMs, warmupMs, measureMs);
  const rows = [...raftRows, ...etcdRows];
  const meta = {
    date: new Date().toISOString().slice(0, 16).replace("T", " "),
    cpus: cpus().length,
    cpu: cpus()[0]?.model.trim() ?? "unknown CPU",
    mode: opts.quick ? "quick" : "full",
    measureSeconds: measureMs / 1000,
    warmupSeconds: warmupMs / 1000,
    primeSeconds: primeMs / 1000,
    etcd: etcdVersion(),
    node: process.version,
    raftTsNodeFlags: RAFT_NODE_FLAGS.join(" "),
    loadAverage: `${loadBefore.toFixed(1)} before, ${loadavg()[0]!.toFixed(1)} after`,
  };
  const ratios = levels.map((c) => {
    const a = raftRows.find((r) => r.clients === c)!;
    const b = etcdRows.find((r) => r.clients === c)!;
    return {
      clients: c,
      throughput: Number((a.writesPerSec / b.writesPerSec).toFixed(3)),
      p50: Number((a.p50Ms / b.p50Ms).toFixed(3)),
      p99: Number((a.p99Ms / b.p99Ms).toFixed(3)),
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
      `ratio raft-ts/etcd clients=${q.clients}: throughput ${q.throughput}, p50 ${q.p50}, p99 ${q.p99}`,
    );
  }
  const resultsFile = opts.resultsFile ?? join(repo, "integration-tests", "bench", "results", "raft.json");
  mkdirSync(dirname(resultsFile), { recursive: true });
  writeFileSync(resultsFile, `${JSON.stringify({ benchmark: "raft", meta, rows, ratios }, null, 2)}\n`);
  writeDocs(opts.docsFile ?? join(repo, "docs", "benchmarks.md"), markdown(rows, meta));
  console.log(`raft bench: wrote ${resultsFile}`);
}
