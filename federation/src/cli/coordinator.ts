// `isthmus coordinator`: runs one node of the coordinator's Raft group until SIGTERM. Settings
// come from flags, ISTHMUS_COORDINATOR_* variables or a YAML file (--config). Plaintext gRPC is
// allowed only when this node and all its peers are on loopback, or with --insecure (warned).
import { readFileSync } from "node:fs";
import { credentials, ServerCredentials } from "@grpc/grpc-js";
import {
  chooseScavenger,
  closeServer,
  createLogger,
  isLoopbackAddress,
  loadConfig,
  logMemoryReducer,
  type MemoryReducerChoice,
  memoryReducerChoice,
  memoryReducerFlags,
  onShutdown,
  PauseRecorder,
  startMetricsServer,
} from "@isthmus/schema";
import { z } from "zod";
import { Coordinator } from "../coordinator/coordinator.js";
import { authFromKeyDir } from "../coordinator/key-dir-auth.js";
import { stopWhenSupervisorLeaves } from "./parent-watch.js";
import { reexecNode } from "./reexec.js";

const HostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "expected host:port, e.g. 127.0.0.1:7400");

const CoordinatorConfig = z.object({
  id: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, "expected a node id (letters, digits, '.', '_', '-')"),
  listen: HostPort.default("127.0.0.1:7400"),
  peers: z.string().optional(),
  dataDir: z.string().min(1, "is required"),
  keyDir: z.string().min(1, "is required (a key directory made by `isthmus bootstrap`)"),
  tlsCert: z.string().optional(),
  tlsKey: z.string().optional(),
  tlsCa: z.string().optional(),
  tlsClientAuth: z.boolean().default(false),
  insecure: z.boolean().default(false),
  join: z.boolean().default(false),
  tickMs: z.number().int().min(1).max(10_000).default(100),
  heartbeatTicks: z.number().int().min(1).default(1),
  electionTicks: z.number().int().min(2).default(10),
  snapshotEvery: z.number().int().min(0).default(10_000),
  /** Recent changes a watcher can be replayed; older positions get a snapshot. */
  journalLimit: z.number().int().min(1).max(1_000_000).default(10_000),
  /** Open Watch/WatchIntent streams per node. */
  maxWatchStreams: z.number().int().min(1).max(100_000).default(1_000),
  /** Messages queued for one slow watcher before it is cut (it resumes from its last index). */
  maxWatchBuffer: z.number().int().min(16).max(1_000_000).default(10_000),
  /** HTTP address for /metrics, /healthz and /debug/pauses; none unless given. */
  metricsListen: HostPort.optional(),
  /** GC pauses and event-loop stalls kept for /debug/pauses. */
  pauseRingSize: z.number().int().min(0).max(1_000_000).default(4_096),
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).optional(),
});
type CoordinatorConfig = z.infer<typeof CoordinatorConfig>;

export interface CoordinatorFlags {
  id?: string;
  listen?: string;
  peers?: string;
  dataDir?: string;
  keyDir?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsClientAuth?: boolean;
  insecure?: boolean;
  join?: boolean;
  metricsListen?: string;
  config?: string;
}

/** "n1=10.0.0.1:7400,n2=10.0.0.2:7400" → { n1: ..., n2: ... }; empty → just this node. */
export function parsePeers(
  text: string | undefined,
  id: string,
  listen: string,
  join = false,
): Record<string, string> {
  if (!text) {
    if (join) throw new Error("--join needs --peers naming the existing members");
    return { [id]: listen };
  }
  const out: Record<string, string> = {};
  for (const part of text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)) {
    const m = /^([A-Za-z0-9][A-Za-z0-9._-]{0,62})=((\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5})$/.exec(part);
    if (!m?.[1] || !m[2]) throw new Error(`--peers: "${part}" is not id=host:port`);
    if (out[m[1]]) throw new Error(`--peers: node "${m[1]}" listed twice`);
    out[m[1]] = m[2];
  }
  if (!out[id] && !join) throw new Error(`--peers must include this node ("${id}=${listen}")`);
  return out;
}

function read(what: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new Error(`cannot read ${what} ${file}: ${(err as Error).message}`);
  }
}

export async function runCoordinator(flags: CoordinatorFlags): Promise<number> {
  let reducer: MemoryReducerChoice;
  try {
    reducer = memoryReducerChoice(process.execArgv, process.env);
  } catch (err) {
    console.error(`isthmus coordinator: ${(err as Error).message}`);
    return 2;
  }
  if (!reducer.inEffect) return reexecNode(memoryReducerFlags(reducer), process.env);
  let config: CoordinatorConfig;
  let peers: Record<string, string>;
  try {
    config = loadConfig(CoordinatorConfig, {
      file: flags.config,
      env: process.env,
      envPrefix: "ISTHMUS_COORDINATOR_",
      overrides: {
        id: flags.id,
        listen: flags.listen,
        peers: flags.peers,
        dataDir: flags.dataDir,
        keyDir: flags.keyDir,
        tlsCert: flags.tlsCert,
        tlsKey: flags.tlsKey,
        tlsCa: flags.tlsCa,
        tlsClientAuth: flags.tlsClientAuth || undefined,
        insecure: flags.insecure || undefined,
        join: flags.join || undefined,
        metricsListen: flags.metricsListen,
      },
    });
    peers = parsePeers(config.peers, config.id, config.listen, config.join);
  } catch (err) {
    console.error(`isthmus coordinator: ${(err as Error).message}`);
    return 2;
  }
  const log = createLogger({
    name: "isthmus-coordinator",
    level: config.logLevel,
    base: { node: config.id },
  });
  try {
    chooseScavenger(log);
    logMemoryReducer(log, reducer);
  } catch (err) {
    console.error(`isthmus coordinator: ${(err as Error).message}`);
    return 2;
  }
  const tls = config.tlsCert !== undefined || config.tlsKey !== undefined;
  let serverCreds: ServerCredentials;
  let peerCreds: ReturnType<typeof credentials.createInsecure>;
  try {
    if (tls) {
      if (!config.tlsCert || !config.tlsKey) throw new Error("--tls-cert and --tls-key go together");
      const cert = read("TLS certificate", config.tlsCert);
      const key = read("TLS key", config.tlsKey);
      const ca = config.tlsCa ? read("TLS CA", config.tlsCa) : null;
      if (config.tlsClientAuth && !ca)
        throw new Error("--tls-client-auth needs --tls-ca to verify client certificates");
      serverCreds = ServerCredentials.createSsl(
        ca,
        [{ cert_chain: cert, private_key: key }],
        config.tlsClientAuth,
      );
      // Members present their own certificate to each other (mutual TLS between nodes).
      peerCreds = credentials.createSsl(ca, key, cert);
    } else {
      const remote = [config.listen, ...Object.values(peers)].filter((a) => !isLoopbackAddress(a));
      if (remote.length > 0 && !config.insecure) {
        throw new Error(
          `plaintext gRPC on non-loopback addresses (${remote.join(", ")}): give --tls-cert/--tls-key (and --tls-ca), or --insecure for testing`,
        );
      }
      if (remote.length > 0)
        log.warn(
          { addresses: remote },
          "running WITHOUT TLS on non-loopback addresses (--insecure): tokens and intent travel in clear text",
        );
      serverCreds = ServerCredentials.createInsecure();
      peerCreds = credentials.createInsecure();
    }
  } catch (err) {
    console.error(`isthmus coordinator: ${(err as Error).message}`);
    return 2;
  }
  let coordinator: Coordinator;
  try {
    const keyAuth = await authFromKeyDir(config.keyDir, log);
    coordinator = await Coordinator.start({
      id: config.id,
      listen: config.listen,
      peers,
      dataDir: config.dataDir,
      serverCredentials: serverCreds,
      peerCredentials: peerCreds,
      auth: keyAuth.auth,
      issuer: keyAuth.issuer,
      siteAudience: keyAuth.siteAudience,
      log,
      join: config.join,
      tickMs: config.tickMs,
      heartbeatTicks: config.heartbeatTicks,
      electionTicks: config.electionTicks,
      snapshotEvery: config.snapshotEvery,
      journalLimit: config.journalLimit,
      streamLimits: { maxStreams: config.maxWatchStreams, maxBuffered: config.maxWatchBuffer },
    });
  } catch (err) {
    log.error({ err }, "coordinator failed to start");
    console.error(`isthmus coordinator: ${(err as Error).message}`);
    return 1;
  }
  log.info({ id: config.id, address: coordinator.address, peers, tls }, "coordinator running");
  // GC pauses and event-loop stalls of this node: a coordinator holds every intent object, and a
  // pause of it delays every site's stream at once (docs/benchmarks.md, propagation).
  // Recorded only when someone can read them (the metrics endpoint).
  let pauses: PauseRecorder | undefined;
  let metrics: Awaited<ReturnType<typeof startMetricsServer>> | undefined;
  if (config.metricsListen) {
    const recorder = new PauseRecorder({ size: config.pauseRingSize }).withMetrics().start();
    pauses = recorder;
    const i = config.metricsListen.lastIndexOf(":");
    try {
      metrics = await startMetricsServer(
        recorder.registry,
        coordinator.health,
        config.metricsListen.slice(0, i),
        Number(config.metricsListen.slice(i + 1)),
        { "/debug/pauses": (q) => recorder.report(Number(q.get("after") ?? 0) || 0) },
      );
    } catch (err) {
      log.error({ err }, "metrics endpoint failed to start");
      recorder.stop();
      await coordinator.stop();
      return 1;
    }
    const ma = metrics.server.address();
    if (ma && typeof ma === "object")
      log.info({ metricsAddress: `${ma.address}:${ma.port}` }, "metrics listening");
  }
  // Re-executed (reexec.ts), it stops when the process that started it goes, however it goes.
  stopWhenSupervisorLeaves();
  // Hooks run last to first: the metrics endpoint closes before the node stops.
  onShutdown(log, [
    () => coordinator.stop(),
    async () => {
      pauses?.stop();
      if (metrics) await closeServer(metrics.server);
    },
  ]);
  return 0;
}
