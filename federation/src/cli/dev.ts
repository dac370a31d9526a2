// `isthmus dev`: one command that runs a local federation for trying Isthmus on one machine:
// a 3-node coordinator group on loopback (data and keys under `.isthmus/` in the current
// directory, or a temporary directory with --ephemeral) and a health endpoint for the whole.
// Site controllers and agents join it as they are built.
import { mkdtempSync, rmSync } from "node:fs";
import { access } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { credentials, Server, ServerCredentials } from "@grpc/grpc-js";
import {
  componentLogger,
  createLogger,
  HealthState,
  healthpb,
  healthService,
  loadConfig,
  onShutdown,
  startGrpcServer,
} from "@isthmus/schema";
import { z } from "zod";
import { bootstrapKeyDir, KEY_DIR_FILES, loadSigningKeyDir, mintAdminToken } from "../auth/index.js";
import { writeSecretFile } from "../auth/secret-file.js";
import { Coordinator } from "../coordinator/coordinator.js";
import { authFromKeyDir } from "../coordinator/key-dir-auth.js";

const DevConfig = z.object({
  listen: z
    .string()
    .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "expected host:port, e.g. 127.0.0.1:7400")
    .default("127.0.0.1:7400"),
  dataDir: z.string().min(1).default(".isthmus"),
  ephemeral: z.boolean().default(false),
  coordinators: z.number().int().min(1).max(5).default(3),
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).optional(),
});

export interface DevFlags {
  listen?: string;
  config?: string;
  dataDir?: string;
  ephemeral?: boolean;
}

async function freePort(host: string): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

export async function runDev(opts: DevFlags): Promise<void> {
  const config = loadConfig(DevConfig, {
    file: opts.config,
    env: process.env,
    envPrefix: "ISTHMUS_DEV_",
    overrides: { listen: opts.listen, dataDir: opts.dataDir, ephemeral: opts.ephemeral || undefined },
  });
  const log = createLogger({ name: "isthmus-dev", level: config.logLevel });
  const dataDir = config.ephemeral ? mkdtempSync(join(tmpdir(), "isthmus-dev-")) : resolve(config.dataDir);
  const host = config.listen.slice(0, config.listen.lastIndexOf(":"));
  const basePort = Number(config.listen.slice(config.listen.lastIndexOf(":") + 1));

  // Keys: made once per data directory; a fresh admin token every start (the first one expires).
  const keyDir = join(dataDir, "keys");
  const haveKeys = await access(join(keyDir, KEY_DIR_FILES.settings)).then(
    () => true,
    () => false,
  );
  if (!haveKeys) await bootstrapKeyDir(keyDir, { subject: "isthmus-dev" });
  const { signer, settings } = await loadSigningKeyDir(keyDir);
  const tokenFile = join(dataDir, "admin.token");
  rmSync(tokenFile, { force: true });
  await writeSecretFile(
    tokenFile,
    `${await mintAdminToken(signer, settings, { subject: "isthmus-dev", role: "admin", ttlSec: 7 * 86400 })}\n`,
  );

  // Loopback ports next to the health port (7401, 7402, 7403 for 7400), or ephemeral for port 0.
  const ids = Array.from({ length: config.coordinators }, (_, i) => `c${i + 1}`);
  const peers: Record<string, string> = {};
  for (const [i, id] of ids.entries()) {
    peers[id] = `${host}:${basePort === 0 ? await freePort(host) : basePort + i + 1}`;
  }
  const keyAuth = await authFromKeyDir(keyDir, log);
  const coordinators: Coordinator[] = [];
  const stopAll = async () => {
    await Promise.all(coordinators.map((c) => c.stop()));
    if (config.ephemeral) rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    for (const id of ids) {
      coordinators.push(
        await Coordinator.start({
          id,
          listen: peers[id] ?? "",
          peers,
          dataDir: join(dataDir, "coordinator", id),
          serverCredentials: ServerCredentials.createInsecure(),
          peerCredentials: credentials.createInsecure(),
          auth: keyAuth.auth,
          issuer: keyAuth.issuer,
          siteAudience: keyAuth.siteAudience,
          log: componentLogger(log, `coordinator-${id}`),
        }),
      );
    }
  } catch (err) {
    await stopAll();
    throw err;
  }

  const health = new HealthState("dev");
  const server = new Server();
  server.addService(healthpb.HealthServiceService, healthService(health));
  const started = await startGrpcServer(server, config.listen, ServerCredentials.createInsecure(), log);
  health.set("dev", true);
  const watchLeader = () => {
    const leader = coordinators.find((c) => c.node.isLeader());
    health.set("coordinators", leader !== undefined, leader ? `leader ${leader.id}` : "electing a leader");
  };
  watchLeader();
  const timer = setInterval(watchLeader, 500);
  timer.unref();

  const server_ = Object.values(peers).join(",");
  log.info(
    { health: started.address, coordinators: peers, dataDir, adminTokenFile: tokenFile },
    `isthmus dev is up: a ${ids.length}-node coordinator group. Try: ISTHMUS_SERVER=${server_} ISTHMUS_TOKEN_FILE=${tokenFile} isthmus apply -f docs/examples/two-site-web.yaml (site controllers and agents are not part of dev yet)`,
  );
  onShutdown(log, [stopAll, () => clearInterval(timer), () => health.shutdown(), () => started.stop()]);
}
