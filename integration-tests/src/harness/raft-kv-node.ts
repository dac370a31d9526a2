// Test-only process: one raft-ts node (WAL on disk, gRPC transport) replicating a key-value state
// machine, with a tiny HTTP/JSON client API on loopback. Used by raft-crash.test.ts and the raft
// benchmark. Usage: node raft-kv-node.js '<json config>' (see NodeConfig); prints one JSON line
// {"ready":true,...} on stdout once serving.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { credentials, Server, ServerCredentials } from "@grpc/grpc-js";
import { GrpcRaftTransport, RAFT_SERVER_OPTIONS } from "@isthmus/federation";
import { RaftNode, RaftNodeError, WalStorage } from "@isthmus/federation/raft";
import { componentLogger, createLogger, onShutdown, startGrpcServer } from "@isthmus/schema";
import { encodePut, KvStateMachine } from "./kv-state-machine.js";

export interface NodeConfig {
  id: string;
  dataDir: string;
  /** host:port the raft gRPC server binds and peers dial. */
  raftListen: string;
  /** host:port of the HTTP client API. */
  httpListen: string;
  /** Every founding member's raft address, this node included. */
  peers: Record<string, string>;
  tickMs?: number;
  electionTicks?: number;
  snapshotEvery?: number;
  /** RaftNode's inlineSyncMaxEntries (its default when unset). */
  inlineSyncMaxEntries?: number;
  /** RaftNode's leaderInlineSync (its default when unset). */
  leaderInlineSync?: boolean;
}

const MAX_BODY = 1 << 20;

const config = JSON.parse(process.argv[2] ?? "{}") as NodeConfig;
const log = createLogger({ name: "raft-kv-node", base: { node: config.id } });
const raftLog = componentLogger(log, "raft");

const storage = await WalStorage.open(config.dataDir, { logger: raftLog });
const transport = new GrpcRaftTransport({
  id: config.id,
  credentials: credentials.createInsecure(),
  logger: raftLog,
});
const kv = new KvStateMachine();
const node = new RaftNode<number>({
  id: config.id,
  peers: config.peers,
  storage,
  transport,
  stateMachine: kv,
  logger: raftLog,
  tickMs: config.tickMs ?? 100,
  electionTicks: config.electionTicks ?? 10,
  snapshotEvery: config.snapshotEvery ?? 10_000,
  inlineSyncMaxEntries: config.inlineSyncMaxEntries,
  leaderInlineSync: config.leaderInlineSync,
  onFatal: () => process.exit(70),
});
const grpcServer = new Server(RAFT_SERVER_OPTIONS);
grpcServer.addService(transport.service.definition, transport.service.implementation);
const grpc = await startGrpcServer(grpcServer, config.raftListen, ServerCredentials.createInsecure(), log);
node.start();

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function fail(res: ServerResponse, err: unknown): void {
  if (err instanceof RaftNodeError) {
    reply(res, 503, {
      error: err.message,
      code: err.code,
      leader: err.leader,
      leaderAddress: err.leaderAddress,
    });
  } else {
    reply(res, 500, { error: (err as Error).message });
  }
}

/** The JSON body, read with plain events (an async iterator costs several extra turns per request). */
function body(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on("data", (c: Buffer) => {
      n += c.length;
      if (n > MAX_BODY) {
        req.destroy();
        reject(new Error(`request body over ${MAX_BODY} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on("error", reject);
    req.on("end", () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch (err) {
        reject(err);
      }
    });
  });
}

/** POST /put {"k","v"}: replicate one write; answers once it is committed and applied here. */
async function put(req: IncomingMessage, res: ServerResponse): Promise<void> {
  let cmd: { k?: unknown; v?: unknown };
  try {
    cmd = (await body(req)) as { k?: unknown; v?: unknown };
  } catch (err) {
    reply(res, 400, { error: `invalid JSON body: ${(err as Error).message}` });
    return;
  }
  if (typeof cmd.k !== "string" || cmd.k === "")
    return reply(res, 400, { error: "field k: a non-empty string is required" });
  if (typeof cmd.v !== "string") return reply(res, 400, { error: "field v: a string is required" });
  try {
    reply(res, 200, { index: await node.propose(encodePut(cmd.k, cmd.v)) });
  } catch (err) {
    fail(res, err);
  }
}

async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://x");
  if (req.method === "GET" && url.pathname === "/get") {
    const k = url.searchParams.get("k");
    if (!k) return reply(res, 400, { error: "query parameter k is required" });
    try {
      await node.read();
      reply(res, 200, { found: kv.data.has(k), value: kv.data.get(k) ?? null });
    } catch (err) {
      fail(res, err);
    }
  } else if (req.method === "GET" && url.pathname === "/dump") {
    try {
      if (url.searchParams.get("barrier") !== "0") await node.read();
      reply(res, 200, { applied: node.status().applied, data: Object.fromEntries(kv.data) });
    } catch (err) {
      fail(res, err);
    }
  } else if (req.method === "GET" && url.pathname === "/status") {
    reply(res, 200, node.status());
  } else {
    reply(res, 404, { error: `no route ${req.method} ${url.pathname}` });
  }
}

// Writes, the benchmark's hot path, are matched on the raw path without building a URL.
const http = createServer((req, res) => {
  void (req.method === "POST" && req.url === "/put" ? put(req, res) : route(req, res));
});
http.keepAliveTimeout = 60_000;
const hostPort = config.httpListen.split(":");
await new Promise<void>((resolve, reject) => {
  http.once("error", reject);
  http.listen(Number(hostPort[1]), hostPort[0], () => resolve());
});
const httpPort = (http.address() as { port: number }).port;
log.info({ raft: grpc.address, http: httpPort }, "raft kv node serving");
process.stdout.write(`${JSON.stringify({ ready: true, id: config.id, raft: grpc.address, httpPort })}\n`);

onShutdown(log, [
  () => grpc.stop(1000),
  () => node.close(),
  () =>
    new Promise<void>((resolve) => {
      http.close(() => resolve());
      http.closeAllConnections();
    }),
]);
