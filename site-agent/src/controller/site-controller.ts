// One site controller replica: opens (or starts) the site database, migrates it, competes for the
// controller lease, and while active follows the federation's intent and accepts local writes.
// Both replicas serve agents' TopologyService.Watch (tailing the shared change log) and Status.

import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Metadata } from "@grpc/grpc-js";
import {
  type ChannelCredentials,
  credentials as grpcCredentials,
  Server,
  ServerCredentials,
  status,
} from "@grpc/grpc-js";
import {
  componentLogger,
  HealthState,
  healthpb,
  healthService,
  type Logger,
  type StartedServer,
  sitepb as site,
  type sitepb,
  type sitesyncpb,
  startGrpcServer,
} from "@isthmus/schema";
import type { Registry } from "prom-client";
import { ChangeFeed } from "./change-feed.js";
import { controllerMetrics, type EntryStages } from "./controller-metrics.js";
import { vacuumAfterCatchUp } from "./db/catch-up-vacuum.js";
import { Database } from "./db/database.js";
import { startEmbeddedPostgres } from "./db/embedded-postgres.js";
import { migrate } from "./db/migrations.js";
import type { RunningPostgres } from "./db/postgres-server.js";
import { EntryTimeline, type EntryTiming } from "./entry-timeline.js";
import { leaseFence } from "./fence.js";
import { HostLiveness } from "./host-liveness.js";
import { HostTokens } from "./host-token.js";
import { IntentApplier } from "./intent-applier.js";
import { IntentSync } from "./intent-sync.js";
import { ControllerLease } from "./lease.js";
import { LocalWriter } from "./local-store.js";
import { DEFAULT_REPORTER_BOUNDS, RealizedReporter } from "./realized-reporter.js";
import { siteService } from "./site-service.js";
import { topologyServiceDefinition } from "./snapshot-encoding.js";
import { SnatBlockLeases } from "./snat-block-leases.js";
import { TopologyMirror } from "./topology-mirror.js";
import { DEFAULT_SNAPSHOT_PART_BYTES, grpcError, TopologyWatchService } from "./topology-watch.js";
import { IntentIndex } from "./translate/index.js";
import { siteTranslator, type Translator } from "./translator.js";
import { TunnelKeyAllocator } from "./tunnel-key-allocator.js";
import type { WriteContext } from "./write-context.js";
import { WriteQueue } from "./write-queue.js";

export interface SiteControllerTuning {
  leaseTtlMs: number;
  leaseRenewMs: number;
  feedPollMs: number;
  feedRingSize: number;
  /** Encoded bytes of the changes the feed keeps in memory. */
  feedRingBytes: number;
  changeLogRetention: number;
  watchMaxQueuedChanges: number;
  watchHeartbeatMs: number;
  watchMaxStreams: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  ackEveryMs: number;
  reportBatchMs: number;
  /** Ports queued for a delta ReportRealized; beyond it the next report is full. */
  reportMaxPending: number;
  reportBackoffInitialMs: number;
  reportBackoffMaxMs: number;
  reportTimeoutMs: number;
  /** A health-only ReportRealized goes this often when nothing else was reported. */
  reportHealthEveryMs: number;
  hostTokenTtlSec: number;
  /** A host whose agent has not heartbeat for this long is marked not alive. */
  hostDeadAfterMs: number;
  /** How often the active replica compares heartbeats with the timeout. */
  hostCheckMs: number;
  maxIntentObjects: number;
  dbMaxConnections: number;
  /**
   * Ask for a snapshot instead of the journal's entries when this many or more behind (0 =
   * never): catching up from a snapshot is one transaction, replaying is one per entry.
   */
  snapshotAfterLag: number;
  /**
   * Move the intent stream to the coordinator group's leader when the coordinator followed names
   * another node among `federation` as the leader (each change then arrives one raft round sooner).
   */
  followLeader: boolean;
  /**
   * Encoded topology bytes the in-memory copy that agents' snapshots are framed from may hold
   * (the framed snapshot takes as much again); 0 = read every snapshot from the database.
   */
  snapshotMirrorMaxBytes: number;
  /** Recent intent entries whose arrival, queue and commit times are kept (0 = none). */
  entryTimelineSize: number;
  /**
   * After applying a snapshot of this many intent objects or more, VACUUM (ANALYZE) the tables it
   * rewrote at once rather than leave them to autovacuum (PostgreSQL only; 0 = never).
   */
  vacuumAfterSnapshotObjects: number;
}

export const DEFAULT_TUNING: SiteControllerTuning = {
  leaseTtlMs: 3_000,
  leaseRenewMs: 1_000,
  feedPollMs: 100,
  feedRingSize: 10_000,
  feedRingBytes: 64 * 1024 * 1024,
  changeLogRetention: 100_000,
  watchMaxQueuedChanges: 10_000,
  watchHeartbeatMs: 5_000,
  watchMaxStreams: 10_000,
  backoffInitialMs: 200,
  backoffMaxMs: 5_000,
  // Each ack is an entry in the federation's log (replicated, fsynced by every coordinator, then
  // streamed to every site as progress): at 200 ms, four sites applying a stream of changes made
  // 20 entries a second, more than the changes themselves at the benchmark's 100k state.
  ackEveryMs: 1_000,
  reportBatchMs: DEFAULT_REPORTER_BOUNDS.batchMs,
  reportMaxPending: DEFAULT_REPORTER_BOUNDS.maxPending,
  reportBackoffInitialMs: DEFAULT_REPORTER_BOUNDS.backoffInitialMs,
  reportBackoffMaxMs: DEFAULT_REPORTER_BOUNDS.backoffMaxMs,
  reportTimeoutMs: DEFAULT_REPORTER_BOUNDS.timeoutMs,
  reportHealthEveryMs: DEFAULT_REPORTER_BOUNDS.healthEveryMs,
  hostTokenTtlSec: 30 * 24 * 3600,
  hostDeadAfterMs: 15_000,
  hostCheckMs: 1_000,
  maxIntentObjects: 2_000_000,
  dbMaxConnections: 16,
  snapshotAfterLag: 0,
  followLeader: true,
  snapshotMirrorMaxBytes: 512 * 1024 * 1024,
  entryTimelineSize: 1_024,
  vacuumAfterSnapshotObjects: 10_000,
};

export interface SiteControllerOptions {
  site: string;
  /** This replica's name in the lease; unique per replica (hostname + random by default). */
  controllerId?: string;
  /** PostgreSQL / CockroachDB URL; undefined = embedded PostgreSQL in `dataDir`/postgres. */
  dbUrl?: string;
  dataDir?: string;
  /** Coordinator addresses; empty = run without a federation (status says so). */
  federation: string[];
  federationCredentials?: ChannelCredentials;
  /** Bearer metadata for coordinator calls (the site's own JWT). */
  federationMetadata?: () => Promise<Metadata>;
  listen: string;
  log: Logger;
  tuning?: Partial<SiteControllerTuning>;
  translator?: Translator;
}

const MAX_PROBLEMS_KEPT = 50;
/** How soon a replica holding the lease tries again to take over after a failed attempt. */
const ACTIVATE_RETRY_MS = 1_000;

export class SiteController {
  readonly health = new HealthState("site-controller");
  readonly metrics: Registry;
  private readonly observeEntry: (s: EntryStages) => void;
  private readonly timeline: EntryTimeline;
  private sync: IntentSync | undefined;
  private reporter: RealizedReporter | undefined;
  private activeWriter: LocalWriter | undefined;
  private problems: string[] = [];
  private problemCount = 0;
  private statusTimer: NodeJS.Timeout | undefined;
  private activateRetry: NodeJS.Timeout | undefined;
  private transitions: Promise<void> = Promise.resolve();
  private stopping: Promise<void> | undefined;
  private vacuuming: Promise<void> | undefined;
  /** Vacuums run to the end after a large snapshot (not those skipped or failed; for tests). */
  vacuumsAfterSnapshot = 0;
  /** The lease's own connection (closed after the lease is released). */
  private leaseDb: Database | undefined;

  private constructor(
    private readonly opts: SiteControllerOptions,
    readonly controllerId: string,
    private readonly tuning: SiteControllerTuning,
    private readonly pg: RunningPostgres | undefined,
    readonly db: Database,
    readonly index: IntentIndex,
    private readonly ctx: WriteContext,
    readonly applier: IntentApplier,
    readonly lease: ControllerLease,
    private readonly feed: ChangeFeed,
    private readonly watch: TopologyWatchService,
    readonly tokens: HostTokens,
    readonly liveness: HostLiveness,
    private server: StartedServer | undefined,
  ) {
    const m = controllerMetrics({
      appliedIndex: () => this.applier.appliedIndex,
      stalenessSeconds: () => this.stalenessMs() / 1000,
      federationConnected: () => this.sync?.status.connected ?? false,
      active: () => this.lease.active,
      topologyRevision: () => Math.max(0, this.feed.revision),
      watchStreams: () => this.watch.openStreams,
      slowWatchersCut: () => this.watch.slowCutoffs,
      txRetries: () => this.db.retryCount,
      translationProblems: () => this.problemCount,
      reportsSent: () => this.reporter?.reportsSent ?? 0,
      hostsAlive: () => [...this.index.list("host")].filter((h) => h.alive !== false).length,
      hostsMarkedDown: () => this.liveness.markedDown,
    });
    this.metrics = m.registry;
    this.observeEntry = m.observeEntry;
    this.timeline = new EntryTimeline(tuning.entryTimelineSize);
  }

  /** Timings of the recent intent entries above `afterIndex`, oldest first (the metrics port serves them). */
  entryTimings(afterIndex = 0): EntryTiming[] {
    return this.timeline.since(afterIndex);
  }

  private entryTimed(t: EntryTiming): void {
    this.timeline.record(t);
    this.observeEntry({
      wait: (t.startedAt - t.receivedAt) / 1000,
      apply: (t.committedAt - t.startedAt) / 1000,
    });
  }

  /** The gRPC address agents and operators connect to. */
  get address(): string {
    return this.server?.address ?? "";
  }

  static async start(opts: SiteControllerOptions): Promise<SiteController> {
    const tuning = { ...DEFAULT_TUNING, ...opts.tuning };
    const log = componentLogger(opts.log, "site-controller", { site: opts.site });
    const controllerId = opts.controllerId ?? `${hostname()}-${randomBytes(3).toString("hex")}`;
    let pg: RunningPostgres | undefined;
    let url = opts.dbUrl;
    if (!url) {
      if (!opts.dataDir)
        throw new Error("either a database URL (--db) or a data directory for the embedded one is needed");
      pg = await startEmbeddedPostgres(`${opts.dataDir}/postgres`, componentLogger(log, "postgres"));
      url = pg.url;
    }
    const db = new Database({
      url,
      log: componentLogger(log, "db"),
      maxConnections: tuning.dbMaxConnections,
    });
    let leaseDb: Database | undefined;
    try {
      const applied = await migrate(db);
      if (applied.length > 0) log.info({ applied }, "database migrations applied");
      const tokens = await HostTokens.load(db, opts.site);
      const index = new IntentIndex(opts.site, { maxObjects: tuning.maxIntentObjects });
      // The lease renews over a connection of its own, so a pool busy with snapshots, catch-ups
      // and site API calls cannot delay a renewal past the TTL.
      leaseDb = new Database({ url, log: componentLogger(log, "db"), maxConnections: 1 });
      const lease = new ControllerLease(
        leaseDb,
        { holder: controllerId, ttlMs: tuning.leaseTtlMs, renewEveryMs: tuning.leaseRenewMs },
        componentLogger(log, "lease"),
      );
      const feed = new ChangeFeed(
        db,
        {
          pollMs: tuning.feedPollMs,
          ringSize: tuning.feedRingSize,
          ringBytes: tuning.feedRingBytes,
          batch: 500,
        },
        componentLogger(log, "change-feed"),
      );
      let self: SiteController | undefined;
      const ctx: WriteContext = {
        site: opts.site,
        db,
        index,
        keys: new TunnelKeyAllocator(index),
        queue: new WriteQueue(),
        fence: leaseFence(controllerId, () => lease.tokenNow()),
        translator: opts.translator ?? siteTranslator,
        changeLog: { retention: tuning.changeLogRetention },
        log,
        onCommitted: (_revision, change) => (change ? feed.committed(change) : feed.wake()),
        onProblems: (p) => self?.recordProblems(p),
      };
      const applier = new IntentApplier(ctx);
      await applier.load();
      await feed.start();
      const mirror = new TopologyMirror(
        db,
        feed,
        { maxBytes: tuning.snapshotMirrorMaxBytes, partBytes: DEFAULT_SNAPSHOT_PART_BYTES },
        componentLogger(log, "topology-mirror"),
      );
      await mirror.start();
      const watch = new TopologyWatchService(
        db,
        feed,
        {
          maxQueuedChanges: tuning.watchMaxQueuedChanges,
          heartbeatMs: tuning.watchHeartbeatMs,
          catchUpBatch: 1000,
          maxStreams: tuning.watchMaxStreams,
        },
        componentLogger(log, "topology-watch"),
        async (call) => {
          const who = await tokens.verify(call.metadata, ["host", "admin"]);
          // A host token watches as that host only.
          if (who.role === "host" && call.request.hostId !== who.subject) {
            throw grpcError(
              status.PERMISSION_DENIED,
              `the token is for host ${who.subject}; it cannot watch as host "${call.request.hostId}"`,
            );
          }
        },
        mirror,
      );
      self = new SiteController(
        opts,
        controllerId,
        tuning,
        pg,
        db,
        index,
        ctx,
        applier,
        lease,
        feed,
        watch,
        tokens,
        new HostLiveness(db, index, {
          deadAfterMs: tuning.hostDeadAfterMs,
          checkEveryMs: tuning.hostCheckMs,
          log: componentLogger(log, "host-liveness"),
          onChanged: (id) => self?.reporter?.changed("host", id),
        }),
        undefined,
      );
      self.leaseDb = leaseDb;
      await self.serve(opts.listen);
      lease.onChange((s) => self!.onLease(s.active, s.resumed));
      // The first lease round and the transition it causes finish before the controller says it
      // started, so a caller that waits for that line finds an active replica ready to write
      // (or a standby one, as the line says) instead of racing the first round.
      const active = await lease.start();
      await self.transitions;
      self.statusTimer = setInterval(() => self!.updateHealth(), 1_000);
      self.updateHealth();
      log.info(
        {
          controllerId,
          address: self.address,
          embedded: pg !== undefined,
          role: active ? "active" : "standby",
        },
        "site controller started",
      );
      return self;
    } catch (err) {
      await db.close().catch(() => undefined);
      await leaseDb?.close().catch(() => undefined);
      await pg?.stop();
      throw err;
    }
  }

  private async serve(listen: string): Promise<void> {
    const server = new Server();
    server.addService(topologyServiceDefinition, this.watch.handlers());
    server.addService(
      site.SiteServiceService,
      siteService({
        view: this.index,
        db: this.db,
        writer: () => this.activeWriter,
        tokens: this.tokens,
        liveness: this.liveness,
        hostTokenTtlSec: this.tuning.hostTokenTtlSec,
        snatLeases: new SnatBlockLeases(this.db, this.ctx.fence),
        status: () => this.status(),
        log: this.opts.log,
        onLocalChanged: (kind, id) => this.reporter?.changed(kind, id),
      }),
    );
    server.addService(healthpb.HealthServiceService, healthService(this.health));
    this.server = await startGrpcServer(server, listen, ServerCredentials.createInsecure(), this.opts.log);
  }

  private onLease(active: boolean, resumed = false): void {
    // Transitions run one after another so a quick lose/regain cannot interleave. A transition
    // that fails (the database went away while reloading) must not break the chain for every
    // later one: it is logged, and becoming active is tried again while the lease is still ours.
    this.transitions = this.transitions
      .then(() => (active ? this.becomeActive(resumed) : this.becomeStandby()))
      .catch((err: Error) => {
        this.opts.log.error(
          { err: err.message, retryInMs: active ? ACTIVATE_RETRY_MS : undefined },
          active ? "could not take over as the active replica; retrying" : "could not step down cleanly",
        );
        if (active && this.stopping === undefined) {
          this.activateRetry = setTimeout(() => {
            this.activateRetry = undefined;
            if (this.stopping === undefined && this.lease.active && !this.activeWriter) this.onLease(true);
          }, ACTIVATE_RETRY_MS);
        }
      });
  }

  private async becomeActive(resumed: boolean): Promise<void> {
    if (!this.lease.active) return;
    // The other replica may have written since we last looked: reload before writing — unless
    // the lease resumed with the same token (it lapsed only locally; nobody else wrote), where
    // memory still equals the database and a reload of a large site would only cost seconds.
    if (!resumed) await this.applier.load();
    const rederived = await this.applier.reconcileTranslation();
    if (rederived > 0)
      this.opts.log.info({ objects: rederived }, "moved the stored topology to this version's translation");
    const assigned = await this.applier.assignMissingUplinkKeys();
    if (assigned > 0)
      this.opts.log.info({ assigned }, "gave site-local tunnel keys to uplink ports without one");
    this.activeWriter = new LocalWriter(this.ctx);
    this.liveness.startChecking(this.activeWriter);
    const creds = this.opts.federationCredentials ?? grpcCredentials.createInsecure();
    if (this.opts.federation.length > 0) {
      this.sync = new IntentSync(this.applier, {
        site: this.opts.site,
        addresses: this.opts.federation,
        credentials: creds,
        metadata: this.opts.federationMetadata,
        backoffInitialMs: this.tuning.backoffInitialMs,
        backoffMaxMs: this.tuning.backoffMaxMs,
        ackEveryMs: this.tuning.ackEveryMs,
        log: componentLogger(this.opts.log, "intent-sync"),
        maxSnapshotObjects: this.tuning.maxIntentObjects,
        snapshotAfterLag: this.tuning.snapshotAfterLag,
        followLeader: this.tuning.followLeader,
        onEntryTimed: (t) => this.entryTimed(t),
        onFenced: () => this.onLease(false),
        onSnapshotApplied: (objects) => this.afterSnapshot(objects),
      });
      this.sync.start();
      this.reporter = new RealizedReporter(this.index, {
        site: this.opts.site,
        addresses: this.opts.federation,
        credentials: creds,
        metadata: this.opts.federationMetadata,
        batchMs: this.tuning.reportBatchMs,
        maxPending: this.tuning.reportMaxPending,
        backoffInitialMs: this.tuning.reportBackoffInitialMs,
        backoffMaxMs: this.tuning.reportBackoffMaxMs,
        timeoutMs: this.tuning.reportTimeoutMs,
        healthEveryMs: this.tuning.reportHealthEveryMs,
        health: () => this.siteHealth(),
        log: componentLogger(this.opts.log, "realized"),
      });
      this.reporter.start();
    }
    this.updateHealth();
  }

  private async becomeStandby(): Promise<void> {
    this.activeWriter = undefined;
    await this.liveness.stopChecking();
    await this.sync?.stop();
    await this.reporter?.stop();
    this.sync = undefined;
    this.reporter = undefined;
    this.updateHealth();
  }

  /** A large snapshot was applied: vacuum what it rewrote (one at a time; stop waits for it). */
  private afterSnapshot(objects: number): void {
    const min = this.tuning.vacuumAfterSnapshotObjects;
    if (min === 0 || objects < min || this.vacuuming || this.stopping) return;
    this.vacuuming = vacuumAfterCatchUp(this.db, componentLogger(this.opts.log, "db"), objects).then((r) => {
      this.vacuuming = undefined;
      if (r.vacuumed) this.vacuumsAfterSnapshot++;
    });
  }

  private recordProblems(p: string[]): void {
    this.problemCount += p.length;
    this.problems = [...p, ...this.problems].slice(0, MAX_PROBLEMS_KEPT);
    this.opts.log.warn({ problems: p.slice(0, 10), count: p.length }, "translation skipped invalid intent");
  }

  stalenessMs(): number {
    if (this.opts.federation.length === 0) return 0;
    return this.sync?.stalenessMs() ?? 0;
  }

  private detail(): string {
    if (!this.lease.active) return `standby: another replica holds the lease; serving topology watches`;
    if (this.opts.federation.length === 0) return "no federation configured; serving local topology only";
    const s = this.sync?.status;
    if (s?.connected)
      return `following the federation at ${s.address}; applied index ${this.applier.appliedIndex}`;
    const secs = Math.round(this.stalenessMs() / 1000);
    return `no coordinator reachable for ${secs} s; serving last applied intent (index ${this.applier.appliedIndex})`;
  }

  status(): sitepb.SiteStatusResponse {
    const s = this.sync?.status;
    return {
      site: this.opts.site,
      controllerId: this.controllerId,
      active: this.lease.active,
      leaseToken: this.lease.currentToken() ?? 0,
      appliedIndex: this.applier.appliedIndex,
      federationConnected: s?.connected ?? false,
      federationAddress: s?.address ?? "",
      lastFederationContactUnixMs: s?.lastContactMs ?? 0,
      stalenessMs: this.stalenessMs(),
      topologyRevision: Math.max(0, this.feed.revision),
      hosts: [...this.index.list("host")].length,
      hostsAlive: [...this.index.list("host")].filter((h) => h.alive !== false).length,
      ports: [...this.index.list("localPort")].length,
      watchStreams: this.watch.openStreams,
      detail: this.detail(),
      translationProblems: this.problems,
    };
  }

  /** What ReportRealized tells the federation about this site. */
  siteHealth(): sitesyncpb.SiteHealth {
    const hosts = [...this.index.list("host")];
    return {
      databaseOk: this.lease.databaseOk,
      hostsTotal: hosts.length,
      hostsAlive: hosts.filter((h) => h.alive !== false).length,
      controller: this.controllerId,
      detail: this.detail(),
      appliedIndex: this.applier.appliedIndex,
      stalenessMs: this.stalenessMs(),
      topologyRevision: Math.max(0, this.feed.revision),
    };
  }

  private updateHealth(): void {
    // The site keeps serving without a coordinator (autonomy): the detail says how stale it is.
    this.health.set("topology", true, `revision ${Math.max(0, this.feed.revision)}`);
    this.health.set("intent", true, this.detail());
  }

  /** Stops serving, releases the lease (the other replica takes over at once). Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    if (this.statusTimer) clearInterval(this.statusTimer);
    if (this.activateRetry) clearTimeout(this.activateRetry);
    await this.server?.stop(2_000);
    await this.lease.stop(true);
    await this.transitions;
    await this.becomeStandby();
    this.watch.mirror?.stop();
    await this.feed.stop();
    await this.vacuuming;
    await this.db.close();
    await this.leaseDb?.close();
    await this.pg?.stop();
  }
}
