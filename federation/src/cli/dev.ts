// `isthmus dev`: a whole local federation on one machine, for `npm start`. In this process: a
// 3-node coordinator group on loopback and a health endpoint. As supervised child processes: per
// site, an `isthmus site-controller` on its embedded PostgreSQL and two `isthmus agent`s (a host
// and a gateway, userspace datapath, each on its own 127.0.0.x tunnel address). Sites are
// onboarded through the real flow (AddSite, then Join with the onboarding token). Everything lives
// under `.isthmus/` (or a temporary directory with --ephemeral) and is reused on the next start.

import { createSocket } from "node:dgram";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { access, chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { credentials, Server, ServerCredentials, status } from "@grpc/grpc-js";
import {
  componentLogger,
  createLogger,
  type federationpb,
  fixedPort,
  HealthState,
  healthpb,
  healthService,
  type Logger,
  loadConfig,
  mallocHugePagesEnv,
  NO_MEMORY_REDUCER_FLAG,
  onShutdown,
  startGrpcServer,
} from "@isthmus/schema";
import { z } from "zod";
import {
  bootstrapKeyDir,
  KEY_DIR_FILES,
  loadSigningKeyDir,
  mintAdminToken,
  mintOnboardingToken,
} from "../auth/index.js";
import { writeSecretFile } from "../auth/secret-file.js";
import { Coordinator } from "../coordinator/coordinator.js";
import { authFromKeyDir } from "../coordinator/key-dir-auth.js";
import { describeError, FederationClient } from "./connection.js";
import {
  type DevAgentLayout,
  type DevLayout,
  type DevSiteLayout,
  devLayout,
  siteNames,
} from "./dev-layout.js";
import { pidAlive, processName, type SupervisedChild, Supervisor, stopPid } from "./dev-supervisor.js";
import { CREDENTIAL_FILE, joinSite } from "./site-join.js";

const DevConfig = z.object({
  listen: z
    .string()
    .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "expected host:port, e.g. 127.0.0.1:7400")
    .default("127.0.0.1:7400"),
  dataDir: z.string().min(1).default(".isthmus"),
  ephemeral: z.boolean().default(false),
  coordinators: z.number().int().min(1).max(5).default(3),
  /** A count (ams, fra, then site-3 …) or comma-separated site names. */
  sites: z.union([z.string(), z.number().int()]).default("2"),
  /** Supervision of the child processes. */
  restartBackoffMs: z.number().int().positive().default(1_000),
  restartBackoffMaxMs: z.number().int().positive().default(30_000),
  /** Consecutive failed restarts of one child before the whole dev federation stops; 0 = never. */
  maxRestarts: z.number().int().min(0).default(0),
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).optional(),
});

export interface DevFlags {
  listen?: string;
  config?: string;
  dataDir?: string;
  ephemeral?: boolean;
  sites?: string;
}

/** The `isthmus` binary the children run: this build's own main.js. */
const CLI = fileURLToPath(new URL("./main.js", import.meta.url));
const POSTGRES_STOP_MS = 10_000;

async function until<T>(
  what: string,
  ms: number,
  f: () => T | undefined | Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Whether this machine routes 127.0.0.x beyond .1 to itself (Linux does; macOS needs aliases). */
function canBindUdp(ip: string): Promise<string | undefined> {
  return new Promise((res) => {
    const s = createSocket("udp4");
    s.once("error", (err) => {
      s.close();
      res(err.message);
    });
    s.bind(0, ip, () => s.close(() => res(undefined)));
  });
}

/** A site's onboarding token: AddSite through the coordinators, or (the site was added by an
 *  earlier start that stopped before joining) minted with the coordinator key, as `site add --key-dir`. */
async function onboardingToken(
  site: string,
  client: FederationClient,
  keyDir: string,
  log: Logger,
): Promise<string> {
  try {
    const res = await client.rpc<federationpb.AddSiteRequest, federationpb.AddSiteResponse>(
      (c) => c.addSite,
      {
        name: site,
        region: "local",
        description: "isthmus dev",
        labels: { "isthmus.dev/local": "true" },
        tokenTtlSeconds: 900,
      },
    );
    log.info({ site, index: res.index }, "site added; onboarding token minted by the coordinators");
    return res.onboardingToken;
  } catch (err) {
    if ((err as { code?: number }).code !== status.ALREADY_EXISTS) throw err;
    const { signer, settings } = await loadSigningKeyDir(keyDir);
    log.info({ site }, "site was added before but never joined; minting a new onboarding token");
    return (await mintOnboardingToken(signer, settings, { site, ttlSec: 900 })).token;
  }
}

export async function runDev(opts: DevFlags): Promise<void> {
  const config = loadConfig(DevConfig, {
    file: opts.config,
    env: process.env,
    envPrefix: "ISTHMUS_DEV_",
    overrides: {
      listen: opts.listen,
      dataDir: opts.dataDir,
      ephemeral: opts.ephemeral || undefined,
      sites: opts.sites,
    },
  });
  const names = siteNames(String(config.sites));
  // Our own lines and the children's relayed lines go through one stream, so they never interleave.
  const write = (line: string) => process.stdout.write(line);
  const log = createLogger({ name: "isthmus-dev", level: config.logLevel, destination: { write } });
  const dataDir = config.ephemeral ? mkdtempSync(join(tmpdir(), "isthmus-dev-")) : resolve(config.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  // As root the embedded PostgreSQL runs as the postgres user, who must traverse (not list) this.
  if (process.getuid?.() === 0) await chmod(dataDir, 0o711);
  const host = config.listen.slice(0, config.listen.lastIndexOf(":"));
  const basePort = Number(config.listen.slice(config.listen.lastIndexOf(":") + 1));
  const layoutFile = join(dataDir, "layout.json");
  const previous =
    basePort === 0 && existsSync(layoutFile)
      ? (JSON.parse(readFileSync(layoutFile, "utf8")) as DevLayout)
      : undefined;
  const layout = await devLayout(host, basePort, config.coordinators, names, () => fixedPort(host), previous);
  writeFileSync(layoutFile, `${JSON.stringify(layout, null, 2)}\n`);

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

  const health = new HealthState("dev");
  const coordinators: Coordinator[] = [];
  let server: Awaited<ReturnType<typeof startGrpcServer>> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopping: Promise<void> | undefined;
  const supervisor = new Supervisor({
    log: componentLogger(log, "supervisor"),
    cli: CLI,
    write,
    backoffInitialMs: config.restartBackoffMs,
    backoffMaxMs: config.restartBackoffMaxMs,
    maxRestarts: config.maxRestarts,
    onFatal: (err) => {
      log.fatal({ err: err.message }, "a child process keeps failing; stopping the dev federation");
      void stopAll().finally(() => process.exit(1));
    },
  });
  // One stop for every way out (signal, a child that cannot be kept up, a failed start):
  // agents, then site controllers (each stops its database), then the coordinators.
  const stopAll = () => {
    stopping ??= (async () => {
      if (timer) clearInterval(timer);
      health.set("dev", false, "stopping");
      await supervisor.stopAll();
      await Promise.all(coordinators.map((c) => c.stop()));
      health.shutdown();
      await server?.stop(1_000);
      if (config.ephemeral) {
        log.info({ dataDir }, "removing the ephemeral data directory");
        rmSync(dataDir, { recursive: true, force: true });
      }
    })();
    return stopping;
  };
  onShutdown(log, [stopAll], 60_000);

  try {
    const keyAuth = await authFromKeyDir(keyDir, log);
    for (const [id, listen] of Object.entries(layout.coordinators)) {
      coordinators.push(
        await Coordinator.start({
          id,
          listen,
          peers: layout.coordinators,
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
    const grpc = new Server();
    grpc.addService(healthpb.HealthServiceService, healthService(health));
    server = await startGrpcServer(grpc, config.listen, ServerCredentials.createInsecure(), log);
    health.set("dev", false, "starting");
    const children: SupervisedChild[] = [];
    const watch = () => {
      const leader = coordinators.find((c) => c.node.isLeader());
      health.set("coordinators", leader !== undefined, leader ? `leader ${leader.id}` : "electing a leader");
      const down = children.filter(
        (c) => !c.child || c.child.exitCode !== null || c.child.signalCode !== null,
      );
      health.set("children", down.length === 0, down.map((c) => `${c.spec.name} down`).join(", "));
    };
    watch();
    timer = setInterval(watch, 500);
    timer.unref();

    await until("a coordinator leader", 60_000, () =>
      coordinators.some((c) => c.node.isLeader()) ? true : undefined,
    );
    const server_ = Object.values(layout.coordinators).join(",");
    const client = new FederationClient({ server: server_, tokenFile, insecure: false, timeoutMs: 30_000 });
    try {
      for (const site of layout.sites) await onboard(site, dataDir, keyDir, server_, client, log);
    } finally {
      client.close();
    }

    const agentProblem = await canBindUdp(layout.sites[0]?.agents[0]?.tunnelIp ?? "127.0.0.1");
    if (agentProblem) {
      log.warn(
        { reason: agentProblem },
        "agents are absent: this machine does not route 127.0.0.x loopback addresses to itself (on macOS: `sudo ifconfig lo0 alias 127.0.0.11 up` for each address in the layout)",
      );
    }
    await Promise.all(
      layout.sites.map(async (site) => {
        children.push(await startController(supervisor, site, dataDir, log));
        const adminToken = join(dataDir, site.name, "admin.token");
        await until(`${adminToken} (written by the ${site.name} controller)`, 30_000, () =>
          existsSync(adminToken) ? true : undefined,
        );
        if (agentProblem) return;
        for (const c of await Promise.all(
          site.agents.map((a) => startAgent(supervisor, site, a, adminToken, dataDir)),
        )) {
          children.push(c);
        }
      }),
    );
    health.set("dev", true);
    watch();
    announce(log, layout, dataDir, tokenFile, server?.address ?? config.listen, !agentProblem);
  } catch (err) {
    log.error({ err: (err as Error).message }, "isthmus dev could not start; stopping what did");
    await stopAll();
    throw err;
  }
}

async function onboard(
  site: DevSiteLayout,
  dataDir: string,
  keyDir: string,
  federation: string,
  client: FederationClient,
  log: Logger,
): Promise<void> {
  const siteDir = join(dataDir, site.name);
  const credential = join(siteDir, CREDENTIAL_FILE);
  if (existsSync(credential)) {
    log.info({ site: site.name, credential }, "site joined on an earlier start; reusing its credential");
    return;
  }
  mkdirSync(siteDir, { recursive: true, mode: 0o700 });
  let token: string;
  try {
    token = await onboardingToken(site.name, client, keyDir, log);
  } catch (err) {
    throw new Error(`could not add site "${site.name}": ${describeError(err)}`);
  }
  try {
    const joined = await joinSite({ token, federation, keyDir: siteDir, timeout: "10000" });
    log.info({ site: site.name, index: joined.index, credential: joined.credentialFile }, "site joined");
  } catch (err) {
    throw new Error(
      `${(err as Error).message}\n  (if "${site.name}" joined on an earlier start and ${credential} was lost, remove ${dataDir} to start over)`,
    );
  }
}

function startController(
  supervisor: Supervisor,
  site: DevSiteLayout,
  dataDir: string,
  log: Logger,
): Promise<SupervisedChild> {
  const siteDir = join(dataDir, site.name);
  let postgresPid = 0;
  return supervisor.start({
    name: `${site.name}/controller`,
    tier: 1,
    startTimeoutMs: 120_000, // the first start runs initdb
    // What the controller would otherwise re-execute itself with (memory-reducer.ts).
    nodeArgs: [NO_MEMORY_REDUCER_FLAG],
    args: [
      "site-controller",
      "--site",
      site.name,
      "--credential",
      join(siteDir, CREDENTIAL_FILE),
      "--data-dir",
      siteDir,
      "--listen",
      site.controllerListen,
      "--metrics-listen",
      site.controllerMetricsListen,
      "--admin-token-file",
      join(siteDir, "admin.token"),
      "--controller-id",
      `${site.name}-1`,
    ],
    ready: (rec) => rec.msg === "site controller started",
    onRecord: (rec) => {
      if (rec.msg === "PostgreSQL server started" && typeof rec.serverPid === "number")
        postgresPid = rec.serverPid;
    },
    // A controller that crashed or was killed leaves its database running; stop it so nothing is
    // orphaned and the next start can take the data directory.
    afterExit: async () => {
      if (postgresPid > 0 && pidAlive(postgresPid) && processName(postgresPid).startsWith("postgres")) {
        log.warn({ site: site.name, pid: postgresPid }, "stopping the database its controller left running");
        await stopPid(postgresPid, "SIGINT", POSTGRES_STOP_MS);
      }
      postgresPid = 0;
    },
  });
}

async function startAgent(
  supervisor: Supervisor,
  site: DevSiteLayout,
  agent: DevAgentLayout,
  adminToken: string,
  dataDir: string,
): Promise<SupervisedChild> {
  const tokenFile = join(dataDir, site.name, `${agent.name}.token`);
  // A gateway's WAN endpoint is its tunnel socket (DESIGN §2.4 lets one socket face both the site
  // and the WAN); it registers itself with it, as any agent registers itself by name.
  const wan =
    agent.role === "gateway" ? ["--wan-ip", agent.tunnelIp, "--wan-port", String(agent.tunnelPort)] : [];
  return supervisor.start({
    name: `${site.name}/${agent.name}`,
    tier: 2,
    // What the agent would otherwise re-execute itself with (agent.ts: agentReexec).
    env: mallocHugePagesEnv,
    nodeArgs: [NO_MEMORY_REDUCER_FLAG],
    args: [
      "agent",
      "--name",
      agent.name,
      "--admin-token-file",
      adminToken,
      "--role",
      agent.role,
      ...wan,
      // Userspace: the kernel fast path needs root and a VM port to attach to; dev has neither.
      "--datapath",
      "userspace",
      "--controller",
      site.controllerListen,
      "--token-file",
      tokenFile,
      "--tunnel-ip",
      agent.tunnelIp,
      "--tunnel-port",
      String(agent.tunnelPort),
      "--metrics-listen",
      agent.metricsListen,
      "--admin-listen",
      agent.adminListen,
    ],
    ready: (rec) => rec.msg === "agent started",
  });
}

/** The "it is up" log record (for scripts) and a few plain lines on stderr (for people). */
function announce(
  log: Logger,
  layout: DevLayout,
  dataDir: string,
  tokenFile: string,
  health: string,
  withAgents: boolean,
): void {
  const server = Object.values(layout.coordinators).join(",");
  const shown = (p: string) => {
    const r = relative(process.cwd(), p);
    return r.startsWith("..") ? p : r;
  };
  const sites = layout.sites.map((s) => ({
    name: s.name,
    controller: s.controllerListen,
    metrics: s.controllerMetricsListen,
    adminTokenFile: join(dataDir, s.name, "admin.token"),
    agents: withAgents
      ? s.agents.map((a) => ({
          name: a.name,
          role: a.role,
          tunnel: `${a.tunnelIp}:${a.tunnelPort}`,
          metrics: a.metricsListen,
          admin: a.adminListen,
        }))
      : [],
  }));
  log.info(
    { health, server, coordinators: layout.coordinators, dataDir, adminTokenFile: tokenFile, sites },
    `isthmus dev is up: ${Object.keys(layout.coordinators).length} coordinators, ${sites.length} sites (${sites.map((s) => s.name).join(", ")})`,
  );
  const lines = [
    "",
    `isthmus dev is up (data in ${shown(dataDir)}; Ctrl-C stops everything). In another shell:`,
    "",
    `  export ISTHMUS_SERVER=${server}`,
    `  export ISTHMUS_TOKEN_FILE=${shown(tokenFile)}`,
    "  alias isthmus='node federation/dist/cli/main.js'",
    "  isthmus apply -f docs/examples/two-site-web.yaml",
    "  isthmus status",
    "  isthmus get networks",
    ...sites.map(
      (s) => `  isthmus site status --controller ${s.controller} --token-file ${shown(s.adminTokenFile)}`,
    ),
    "",
    ...sites.flatMap((s) => [
      `  site ${s.name}: controller ${s.controller} (metrics ${s.metrics})`,
      ...s.agents.map(
        (a) =>
          `    agent ${a.name} (${a.role}): tunnel udp ${a.tunnel}, metrics ${a.metrics}, admin ${a.admin}`,
      ),
    ]),
    withAgents ? "" : "  (agents are absent: see the warning above)",
    "",
  ];
  process.stderr.write(`${lines.join("\n")}\n`);
}
