// Starts and controls a group of raft-kv-node processes on loopback (fixed ports per node, so a
// killed node comes back at the same address), plus a keep-alive HTTP/JSON client for them.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { Agent, request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fixedPort } from "./ports.js";

import type { NodeConfig } from "./raft-kv-node.js";

export const RAFT_KV_NODE = fileURLToPath(new URL("./raft-kv-node.js", import.meta.url));

export interface HttpResult {
  status: number;
  json: Record<string, unknown>;
}

/** Plain HTTP/1.1 JSON over a keep-alive agent; rejects only on transport errors or timeouts. */
export function httpJson(
  agent: Agent,
  port: number,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 10_000,
): Promise<HttpResult> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method,
        path,
        agent,
        headers: payload ? { "content-type": "application/json", "content-length": payload.length } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json: Record<string, unknown> = {};
          try {
            json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
          } catch {
            json = { raw: text };
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
        res.on("error", reject);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path} on port ${port} timed out`)));
    req.on("error", reject);
    if (payload) req.write(payload);
    req.end();
  });
}

export interface ClusterNode {
  id: string;
  raftPort: number;
  httpPort: number;
  dataDir: string;
  proc?: ChildProcess;
  /** stderr and non-JSON stdout of the current process, for failure messages. */
  output: string[];
}

export interface RaftKvClusterOptions {
  size?: number;
  tickMs?: number;
  electionTicks?: number;
  snapshotEvery?: number;
  /** RaftNode's inlineSyncMaxEntries for every node (its default when unset). */
  inlineSyncMaxEntries?: number;
  /** RaftNode's leaderInlineSync for every node (its default when unset). */
  leaderInlineSync?: boolean;
  /** ISTHMUS_LOG_LEVEL for the node processes; "warn" by default to keep output small. */
  logLevel?: string;
  /** Extra node flags for every node process (e.g. `--cpu-prof` to profile the benchmark). */
  nodeArgs?: string[];
}

export class RaftKvCluster {
  readonly nodes: ClusterNode[] = [];
  readonly agent = new Agent({ keepAlive: true, maxSockets: 512 });
  private readonly baseDir: string;

  private constructor(private readonly opts: RaftKvClusterOptions) {
    this.baseDir = mkdtempSync(join(tmpdir(), "raft-kv-cluster-"));
  }

  static async start(opts: RaftKvClusterOptions = {}): Promise<RaftKvCluster> {
    const c = new RaftKvCluster(opts);
    const size = opts.size ?? 3;
    for (let k = 1; k <= size; k++) {
      const dataDir = join(c.baseDir, `n${k}`);
      mkdirSync(dataDir);
      c.nodes.push({
        id: `n${k}`,
        raftPort: await fixedPort(),
        httpPort: await fixedPort(),
        dataDir,
        output: [],
      });
    }
    try {
      await Promise.all(c.nodes.map((n) => c.startNode(n.id)));
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  node(id: string): ClusterNode {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** Starts (or restarts) a node's process; resolves when it serves HTTP. */
  startNode(id: string): Promise<void> {
    const n = this.node(id);
    const config: NodeConfig = {
      id: n.id,
      dataDir: n.dataDir,
      raftListen: `127.0.0.1:${n.raftPort}`,
      httpListen: `127.0.0.1:${n.httpPort}`,
      peers: Object.fromEntries(this.nodes.map((x) => [x.id, `127.0.0.1:${x.raftPort}`])),
      tickMs: this.opts.tickMs,
      electionTicks: this.opts.electionTicks,
      snapshotEvery: this.opts.snapshotEvery,
      inlineSyncMaxEntries: this.opts.inlineSyncMaxEntries,
      leaderInlineSync: this.opts.leaderInlineSync,
    };
    const args = [...(this.opts.nodeArgs ?? []), RAFT_KV_NODE, JSON.stringify(config)];
    const proc = spawn(process.execPath, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ISTHMUS_LOG_LEVEL: this.opts.logLevel ?? "warn" },
    });
    n.proc = proc;
    n.output = [];
    return new Promise<void>((resolve, reject) => {
      let buf = "";
      const timer = setTimeout(
        () => reject(new Error(`${id} did not start in 45 s:\n${n.output.join("\n")}`)),
        45_000,
      );
      proc.stdout!.on("data", (d: Buffer) => {
        buf += d.toString();
        let nl = buf.indexOf("\n");
        while (nl >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          nl = buf.indexOf("\n");
          if (line.includes('"ready":true')) {
            clearTimeout(timer);
            resolve();
          } else if (n.output.length < 200) n.output.push(line);
        }
      });
      proc.stderr!.on("data", (d: Buffer) => {
        if (n.output.length < 200) n.output.push(d.toString());
      });
      proc.once("exit", (code, signal) => {
        clearTimeout(timer);
        if (n.proc === proc) n.proc = undefined;
        reject(
          new Error(`${id} exited (code ${code}, signal ${signal}) before serving:\n${n.output.join("\n")}`),
        );
      });
    });
  }

  /** kill -9: no shutdown hooks, unsynced writes may be lost, exactly like a power cut of the process. */
  async kill(id: string): Promise<void> {
    const n = this.node(id);
    const proc = n.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    proc.kill("SIGKILL");
    await exited;
    n.proc = undefined;
  }

  running(): ClusterNode[] {
    return this.nodes.filter((n) => n.proc && n.proc.exitCode === null);
  }

  status(n: ClusterNode): Promise<HttpResult> {
    return httpJson(this.agent, n.httpPort, "GET", "/status", undefined, 2000);
  }

  /** Waits until the running nodes agree on one leader; returns it. */
  async waitLeader(timeoutMs = 15_000): Promise<ClusterNode> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      const seen = await Promise.all(
        this.running().map((n) =>
          this.status(n).then(
            (r) => ({ n, role: r.json.role as string, leader: r.json.leader as string }),
            () => undefined,
          ),
        ),
      );
      const leaders = seen.filter((s) => s?.role === "leader");
      if (leaders.length === 1 && seen.every((s) => s && s.leader === leaders[0]!.n.id)) return leaders[0]!.n;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no agreed leader within ${timeoutMs} ms`);
  }

  put(n: ClusterNode, k: string, v: string, timeoutMs = 10_000): Promise<HttpResult> {
    return httpJson(this.agent, n.httpPort, "POST", "/put", { k, v }, timeoutMs);
  }

  /** SIGTERM every running node (clean shutdown), then removes all data. */
  async stop(): Promise<void> {
    await Promise.all(
      this.running().map(async (n) => {
        const proc = n.proc!;
        const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(t);
      }),
    );
    this.agent.destroy();
    rmSync(this.baseDir, { recursive: true, force: true });
  }
}
