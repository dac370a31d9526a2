// Reports this site's realized state upward with ReportRealized: its bound ports (as
// PortRecords, which the other sites use for security-group membership and forwarding) and its
// gateway endpoints, with the site's health. The first report after start or after any failure
// is full; later ones carry only the ports that changed, batched; with nothing to report a
// health-only report goes every `healthEveryMs`. Failures are retried with backoff.
import { type ChannelCredentials, Metadata } from "@grpc/grpc-js";
import { intentpb, type Logger, sitesyncpb as sitesync, type sitesyncpb, topologypb } from "@isthmus/schema";
import { backoffDelayMs } from "./db/retry.js";
import type { IntentView, LocalPortBinding } from "./translate/index.js";

export interface RealizedReporterOptions {
  site: string;
  addresses: string[];
  credentials: ChannelCredentials;
  metadata?: () => Promise<Metadata>;
  /** Changes within this window go in one report. */
  batchMs: number;
  /**
   * Bound on ports waiting for a delta report (so on a delta's size); beyond it they are
   * dropped from the queue and the next report is full instead.
   */
  maxPending: number;
  /** Retry backoff after a failed report: capped exponential with full jitter. */
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** Deadline of one ReportRealized call. */
  timeoutMs: number;
  /** With nothing else to report, a health-only report goes this often. */
  healthEveryMs: number;
  /** The site's health, sent with every report. */
  health: () => sitesyncpb.SiteHealth;
  log: Logger;
}

export const DEFAULT_REPORTER_BOUNDS = {
  batchMs: 100,
  maxPending: 10_000,
  backoffInitialMs: 100,
  backoffMaxMs: 5_000,
  timeoutMs: 5_000,
  healthEveryMs: 10_000,
} as const;

export class RealizedReporter {
  private readonly pending = new Set<string>();
  private needFull = true;
  private timer: NodeJS.Timeout | undefined;
  private timerDueMs = 0;
  private sending: Promise<void> | undefined;
  private failures = 0;
  /** When a report was last accepted (0 = none yet). */
  private lastSentMs = 0;
  private next = 0;
  private stopped = true;
  private client: sitesyncpb.SiteSyncServiceClient | undefined;
  private clientAddress = "";
  /** Reports accepted by a coordinator (a metric). */
  reportsSent = 0;

  constructor(
    private readonly view: IntentView,
    private readonly opts: RealizedReporterOptions,
  ) {}

  start(): void {
    this.stopped = false;
    this.needFull = true;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.sending;
    this.client?.close();
    this.client = undefined;
  }

  /** A local port or host changed; it goes upward with the next batch. */
  changed(kind: "port" | "host", id: string): void {
    if (kind === "host")
      this.needFull = true; // gateway endpoints are sent in full
    else if (this.pending.size >= this.opts.maxPending) this.needFull = true;
    else this.pending.add(id);
    this.schedule(this.opts.batchMs);
  }

  /** Runs a flush in `ms`, or sooner when one is already due sooner. */
  private schedule(ms: number): void {
    if (this.stopped) return;
    const due = Date.now() + ms;
    if (this.timer) {
      if (this.timerDueMs <= due) return;
      clearTimeout(this.timer);
    }
    this.timerDueMs = due;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      // One report at a time, in order: a later delta never overtakes an earlier one.
      const run = (this.sending ?? Promise.resolve()).then(() => this.flush());
      this.sending = run;
      void run.finally(() => {
        if (this.sending === run) this.sending = undefined;
      });
    }, ms);
  }

  private record(p: LocalPortBinding): intentpb.PortRecord {
    const host = this.view.get("host", p.hostId);
    return intentpb.PortRecord.fromPartial({
      meta: { id: p.id, name: p.name },
      site: this.opts.site,
      host: host?.name ?? "",
      networkId: p.networkId,
      mac: p.mac,
      ips: p.ips,
      securityGroupIds: p.securityGroupIds,
      up: true,
    });
  }

  private request(): sitesyncpb.ReportRealizedRequest {
    const full = this.needFull;
    const ports: intentpb.PortRecord[] = [];
    const removed: string[] = [];
    const ids = full ? [...this.view.list("localPort")].map((p) => p.id) : [...this.pending];
    for (const id of ids) {
      const p = this.view.get("localPort", id);
      if (p && p.hostId !== "") ports.push(this.record(p));
      else if (!full) removed.push(id);
    }
    // A gateway marked not alive (no heartbeats) is not published: other sites would keep
    // tunnelling to an endpoint nobody answers at. It returns when its heartbeats do.
    const gateways = [...this.view.list("host")].filter(
      (h) => h.role === topologypb.HostRole.HOST_ROLE_GATEWAY && h.wanIp !== "" && h.alive !== false,
    );
    return {
      site: this.opts.site,
      ports,
      removedPortIds: removed,
      full,
      gatewayEndpoints: gateways.map((h) => ({ host: h.name, ip: h.wanIp, port: h.wanPort || 4789 })),
      health: this.opts.health(),
    };
  }

  private async flush(): Promise<void> {
    if (this.stopped) return;
    const quietMs = Date.now() - this.lastSentMs;
    if (!this.needFull && this.pending.size === 0 && quietMs < this.opts.healthEveryMs) {
      // Nothing to report (a timer armed while a report was in flight): health is not due yet.
      this.schedule(this.opts.healthEveryMs - quietMs);
      return;
    }
    const req = this.request();
    const sentPending = [...this.pending];
    this.pending.clear();
    const wasFull = this.needFull;
    this.needFull = false;
    try {
      await this.send(req);
      this.failures = 0;
      this.reportsSent++;
      this.lastSentMs = Date.now();
      this.schedule(this.pending.size > 0 || this.needFull ? this.opts.batchMs : this.opts.healthEveryMs);
    } catch (err) {
      this.failures++;
      // What was not delivered is covered by a full report next time.
      if (wasFull || sentPending.length > 0) this.needFull = true;
      this.opts.log.warn(
        { err: (err as Error).message, failures: this.failures },
        "ReportRealized failed; will retry",
      );
      this.next++;
      this.client?.close();
      this.client = undefined;
      this.schedule(
        Math.max(
          this.opts.batchMs,
          backoffDelayMs(
            { maxAttempts: 1, baseDelayMs: this.opts.backoffInitialMs, maxDelayMs: this.opts.backoffMaxMs },
            this.failures,
            Math.random,
          ),
        ),
      );
    }
  }

  private async send(req: sitesyncpb.ReportRealizedRequest): Promise<void> {
    const address = this.opts.addresses[this.next % this.opts.addresses.length]!;
    if (!this.client || this.clientAddress !== address) {
      this.client?.close();
      this.client = new sitesync.SiteSyncServiceClient(address, this.opts.credentials);
      this.clientAddress = address;
    }
    const metadata = this.opts.metadata ? await this.opts.metadata() : new Metadata();
    const client = this.client;
    await new Promise<void>((resolve, reject) =>
      client.reportRealized(req, metadata, { deadline: Date.now() + this.opts.timeoutMs }, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }
}
