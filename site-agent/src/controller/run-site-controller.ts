// The `isthmus site-controller` process: loads config, reads the site credential (the key the
// site signs its coordinator tokens with), starts the controller, metrics and health, and stops
// cleanly on SIGTERM.
import { existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { credentials as grpcCredentials } from "@grpc/grpc-js";
import { type Logger, loadConfig, onShutdown, PauseRecorder, startMetricsServer } from "@isthmus/schema";
import { SiteControllerConfigSchema } from "./controller-config.js";
import { SiteController } from "./site-controller.js";
import { readSiteCredential, SiteTokenSource, writePrivateFile } from "./site-credential.js";

export interface SiteControllerFlags {
  config?: string;
  site?: string;
  db?: string;
  dataDir?: string;
  federation?: string;
  credential?: string;
  listen?: string;
  metricsListen?: string;
  adminTokenFile?: string;
  controllerId?: string;
}

export interface RunningSiteController {
  controller: SiteController;
  stop(): Promise<void>;
}

export async function startSiteController(
  flags: SiteControllerFlags,
  deps: { log: Logger; handleSignals?: boolean },
): Promise<RunningSiteController> {
  const cfg = loadConfig(SiteControllerConfigSchema, {
    file: flags.config,
    env: process.env,
    overrides: {
      "siteController.site": flags.site,
      "siteController.db": flags.db,
      "siteController.dataDir": flags.dataDir,
      "siteController.federation": flags.federation
        ?.split(",")
        .map((s) => s.trim())
        .filter(Boolean),
      "siteController.credential": flags.credential,
      "siteController.listen": flags.listen,
      "siteController.metricsListen": flags.metricsListen,
      "siteController.adminTokenFile": flags.adminTokenFile,
      "siteController.controllerId": flags.controllerId,
    },
  }).siteController;
  let federation = cfg.federation;
  let metadata: (() => ReturnType<SiteTokenSource["metadata"]>) | undefined;
  if (cfg.credential) {
    const cred = await readSiteCredential(cfg.credential);
    if (cred.site !== cfg.site) {
      throw new Error(`credential ${cfg.credential} is for site "${cred.site}", not "${cfg.site}"`);
    }
    if (federation.length === 0) federation = cred.federation;
    const tokens = await SiteTokenSource.fromCredential(cfg.credential);
    metadata = () => tokens.metadata();
  } else if (federation.length > 0) {
    deps.log.warn(
      "no --credential: coordinator calls carry no site token and will be refused by a secured federation",
    );
  }
  if (!cfg.db) mkdirSync(cfg.dataDir, { recursive: true, mode: 0o700 });
  const controller = await SiteController.start({
    site: cfg.site,
    controllerId: cfg.controllerId,
    dbUrl: cfg.db,
    dataDir: cfg.dataDir,
    federation,
    federationCredentials: grpcCredentials.createInsecure(),
    federationMetadata: metadata,
    listen: cfg.listen,
    log: deps.log,
    tuning: {
      leaseTtlMs: cfg.leaseTtlMs,
      leaseRenewMs: cfg.leaseRenewMs,
      feedPollMs: cfg.feedPollMs,
      feedRingSize: cfg.feedRingSize,
      feedRingBytes: cfg.feedRingBytes,
      changeLogRetention: cfg.changeLogRetention,
      watchMaxQueuedChanges: cfg.watchMaxQueuedChanges,
      watchMaxStreams: cfg.watchMaxStreams,
      reportBatchMs: cfg.reportBatchMs,
      reportMaxPending: cfg.reportMaxPending,
      reportBackoffInitialMs: cfg.reportBackoffInitialMs,
      reportBackoffMaxMs: cfg.reportBackoffMaxMs,
      reportTimeoutMs: cfg.reportTimeoutMs,
      reportHealthEveryMs: cfg.reportHealthEveryMs,
      hostDeadAfterMs: cfg.hostDeadAfterMs,
      hostCheckMs: cfg.hostCheckMs,
      maxIntentObjects: cfg.maxIntentObjects,
      dbMaxConnections: cfg.dbMaxConnections,
      snapshotAfterLag: cfg.snapshotAfterLag,
      followLeader: cfg.followLeader,
      snapshotMirrorMaxBytes: cfg.snapshotMirrorMaxBytes,
      entryTimelineSize: cfg.entryTimelineSize,
      vacuumAfterSnapshotObjects: cfg.vacuumAfterSnapshotObjects,
    },
  });
  if (cfg.adminTokenFile && !existsSync(cfg.adminTokenFile)) {
    mkdirSync(dirname(cfg.adminTokenFile), { recursive: true });
    const t = await controller.tokens.issue("admin", "admin", 365 * 24 * 3600);
    await writePrivateFile(cfg.adminTokenFile, `${t.token}\n`);
    deps.log.info({ file: cfg.adminTokenFile }, "wrote a site admin token");
  }
  const pauses = new PauseRecorder({ size: cfg.pauseRingSize }).withMetrics(controller.metrics).start();
  const i = cfg.metricsListen.lastIndexOf(":");
  const metrics = await startMetricsServer(
    controller.metrics,
    controller.health,
    cfg.metricsListen.slice(0, i),
    Number(cfg.metricsListen.slice(i + 1)),
    // Where each recent intent entry's time went at this site (`?after=<index>`), and this
    // process's GC pauses and event-loop stalls (`?after=<unix ms>`).
    {
      "/debug/intent-entries": (q) => controller.entryTimings(Number(q.get("after") ?? 0) || 0),
      "/debug/pauses": (q) => pauses.report(Number(q.get("after") ?? 0) || 0),
    },
  );
  const ma = metrics.server.address();
  if (ma && typeof ma === "object") {
    deps.log.info({ metricsAddress: `${ma.address}:${ma.port}` }, "metrics listening");
  }
  const stop = async () => {
    await new Promise<void>((r) => metrics.server.close(() => r()));
    pauses.stop();
    await controller.stop();
  };
  if (deps.handleSignals !== false) onShutdown(deps.log, [stop]);
  return { controller, stop };
}
