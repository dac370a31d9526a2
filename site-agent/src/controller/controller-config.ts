// Configuration of `isthmus site-controller`: defaults, YAML file (`siteController:` section),
// ISTHMUS_SITE_CONTROLLER__* env vars, then flags. The bounds of its queues and logs are here.
import { z } from "zod";
import { DEFAULT_TUNING } from "./site-controller.js";

const hostPort = z.string().regex(/^[^\s]+:\d{1,5}$/, "expected host:port");
const positive = z.number().int().positive();
const T = DEFAULT_TUNING;

export const SiteControllerConfigSchema = z.object({
  siteController: z.object({
    site: z.string().min(1, "the site name is required (--site)"),
    /** postgres://… URL of PostgreSQL or CockroachDB; absent = embedded PostgreSQL in dataDir. */
    db: z
      .string()
      .regex(/^postgres(ql)?:\/\//, "expected a postgres:// URL")
      .optional(),
    dataDir: z.string().min(1).default("./isthmus-site"),
    /** Coordinator addresses; the credential's list is used when empty. */
    federation: z.array(hostPort).default([]),
    /** Credential file written by `isthmus site join`. */
    credential: z.string().optional(),
    listen: hostPort.default("127.0.0.1:7600"),
    metricsListen: hostPort.default("127.0.0.1:7680"),
    /** Written at start (mode 0600) when absent: an admin token for `isthmus site-status` etc. */
    adminTokenFile: z.string().optional(),
    controllerId: z.string().min(1).optional(),
    leaseTtlMs: positive.default(T.leaseTtlMs),
    leaseRenewMs: positive.default(T.leaseRenewMs),
    feedPollMs: positive.default(T.feedPollMs),
    feedRingSize: positive.default(T.feedRingSize),
    feedRingBytes: positive.default(T.feedRingBytes),
    changeLogRetention: positive.default(T.changeLogRetention),
    watchMaxQueuedChanges: positive.default(T.watchMaxQueuedChanges),
    watchMaxStreams: positive.default(T.watchMaxStreams),
    reportBatchMs: positive.default(T.reportBatchMs),
    reportMaxPending: positive.default(T.reportMaxPending),
    reportBackoffInitialMs: positive.default(T.reportBackoffInitialMs),
    reportBackoffMaxMs: positive.default(T.reportBackoffMaxMs),
    reportTimeoutMs: positive.default(T.reportTimeoutMs),
    reportHealthEveryMs: positive.default(T.reportHealthEveryMs),
    hostDeadAfterMs: positive.default(T.hostDeadAfterMs),
    hostCheckMs: positive.default(T.hostCheckMs),
    maxIntentObjects: positive.default(T.maxIntentObjects),
    dbMaxConnections: positive.default(T.dbMaxConnections),
    snapshotAfterLag: z.number().int().nonnegative().default(T.snapshotAfterLag),
    followLeader: z.boolean().default(T.followLeader),
    snapshotMirrorMaxBytes: z.number().int().nonnegative().default(T.snapshotMirrorMaxBytes),
    entryTimelineSize: z.number().int().nonnegative().max(1_000_000).default(T.entryTimelineSize),
    vacuumAfterSnapshotObjects: z.number().int().nonnegative().default(T.vacuumAfterSnapshotObjects),
    /** GC pauses and event-loop stalls of this process kept for `/debug/pauses`. */
    pauseRingSize: z.number().int().nonnegative().max(1_000_000).default(4_096),
  }),
});

export type SiteControllerConfig = z.infer<typeof SiteControllerConfigSchema>["siteController"];
