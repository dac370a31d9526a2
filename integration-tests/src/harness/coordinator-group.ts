// A real coordinator group for multi-site tests: N `isthmus coordinator` processes forming one
// Raft group on loopback, each with its own data directory and the shared key directory. The
// whole group can be stopped (SIGTERM) and started again on the same ports and data (raft WAL).
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { credentials, Metadata } from "@grpc/grpc-js";
import { healthpb, NO_MEMORY_REDUCER_FLAG } from "@isthmus/schema";
import { benchLogStream, stopOnExit } from "./child-lifetime.js";
import { CLI } from "./cli.js";
import { fixedPort } from "./ports.js";

export class CoordinatorGroup {
  private readonly children = new Map<string, ChildProcess>();

  private constructor(
    private readonly peers: Record<string, string>,
    private readonly baseDir: string,
    private readonly keyDir: string,
    /** Each node's metrics endpoint (/metrics, /debug/pauses), when asked for. */
    readonly metricsAddresses: Record<string, string> = {},
  ) {}

  static async start(
    size: number,
    baseDir: string,
    keyDir: string,
    opts: { metrics?: boolean } = {},
  ): Promise<CoordinatorGroup> {
    const peers: Record<string, string> = {};
    const metrics: Record<string, string> = {};
    for (let i = 1; i <= size; i++) {
      peers[`c${i}`] = `127.0.0.1:${await fixedPort()}`;
      if (opts.metrics) metrics[`c${i}`] = `127.0.0.1:${await fixedPort()}`;
    }
    const g = new CoordinatorGroup(peers, baseDir, keyDir, metrics);
    await g.startAll();
    return g;
  }

  get addresses(): string[] {
    return Object.values(this.peers);
  }

  async startAll(): Promise<void> {
    const peerList = Object.entries(this.peers)
      .map(([id, a]) => `${id}=${a}`)
      .join(",");
    for (const [id, address] of Object.entries(this.peers)) {
      const child = spawn(
        process.execPath,
        [
          // As `isthmus coordinator` would re-execute itself (memory-reducer.ts), without the extra process.
          NO_MEMORY_REDUCER_FLAG,
          // ISTHMUS_BENCH_COORDINATOR_NODE_ARGS: node flags for every node (e.g. --cpu-prof), space-separated.
          ...(process.env.ISTHMUS_BENCH_COORDINATOR_NODE_ARGS?.split(" ").filter((a) => a !== "") ?? []),
          CLI,
          "coordinator",
          "--id",
          id,
          "--listen",
          address,
          "--peers",
          peerList,
          "--data-dir",
          join(this.baseDir, id),
          "--key-dir",
          this.keyDir,
          ...(this.metricsAddresses[id] ? ["--metrics-listen", this.metricsAddresses[id]] : []),
        ],
        // ISTHMUS_BENCH_LOG_DIR keeps each node's JSON log (appended across restarts).
        { stdio: ["ignore", process.env.ISTHMUS_BENCH_LOG_DIR ? "pipe" : "ignore", "inherit"] },
      );
      stopOnExit(child);
      const log = child.stdout ? benchLogStream(id) : undefined;
      if (log) child.stdout!.pipe(log);
      this.children.set(id, child);
    }
    await Promise.all(
      Object.entries(this.peers).map(([id, a]) => this.waitServing(a, this.children.get(id)!)),
    );
  }

  /** SIGTERM to every node; resolves when all have exited. */
  async stopAll(): Promise<void> {
    await Promise.all(
      [...this.children.values()].map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null) return resolve();
            c.once("exit", () => resolve());
            c.kill("SIGTERM");
            setTimeout(() => c.kill("SIGKILL"), 15_000).unref();
          }),
      ),
    );
    this.children.clear();
  }

  private async waitServing(address: string, child: ChildProcess): Promise<void> {
    const client = new healthpb.HealthServiceClient(address, credentials.createInsecure());
    const deadline = Date.now() + 60_000;
    try {
      while (Date.now() < deadline) {
        if (child.exitCode !== null)
          throw new Error(`coordinator at ${address} exited with ${child.exitCode}`);
        const ok = await new Promise<boolean>((resolve) =>
          client.check({ service: "" }, new Metadata(), { deadline: Date.now() + 500 }, (err, r) =>
            resolve(!err && r.status === healthpb.HealthCheckResponse_ServingStatus.SERVING_STATUS_SERVING),
          ),
        );
        if (ok) return;
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      client.close();
    }
    throw new Error(`coordinator at ${address} never became SERVING`);
  }
}
