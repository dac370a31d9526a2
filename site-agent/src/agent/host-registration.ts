// Registration with the site controller (SiteService.RegisterHost, schema isthmus/v1/site.proto):
// the agent announces its name, tunnel endpoint and role with an operator's admin token and gets
// its Host (the id every topology object refers to) and the host token it watches with. Retries
// with backoff while the controller is unreachable; registering again keeps the id. Then the
// agent heartbeats (HostHeartbeat), which is how the controller knows the host is alive.
import { writeFileSync } from "node:fs";
import { credentials, Metadata, status } from "@grpc/grpc-js";
import { type Logger, sitepb, topologypb } from "@isthmus/schema";

export interface Registration {
  host: topologypb.Host;
  hostToken: string;
}

export interface RegisterOptions {
  controller: string;
  name: string;
  adminToken: string;
  tunnelIp: string;
  tunnelPort: number;
  role: "host" | "gateway";
  /** A gateway's WAN endpoint (other sites' gateways tunnel to it); ignored for hosts. */
  wanIp?: string;
  wanPort?: number;
  /** Where to keep the host token (mode 0600), so a restart can watch without an admin token. */
  tokenFile?: string;
  log: Logger;
  /** Give up after this long (0 = keep trying). */
  timeoutMs?: number;
  /** Stop trying (the agent is shutting down before it registered). */
  signal?: AbortSignal;
}

/** Waits `ms`, or less when `signal` aborts. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

export async function registerHost(o: RegisterOptions): Promise<Registration> {
  const client = new sitepb.SiteServiceClient(o.controller, credentials.createInsecure());
  const md = new Metadata();
  md.set("authorization", `Bearer ${o.adminToken}`);
  const req: sitepb.RegisterHostRequest = {
    name: o.name,
    tunnelIp: o.tunnelIp,
    tunnelPort: o.tunnelPort,
    role: o.role === "gateway" ? topologypb.HostRole.HOST_ROLE_GATEWAY : topologypb.HostRole.HOST_ROLE_HOST,
    wanIp: o.role === "gateway" ? (o.wanIp ?? "") : "",
    wanPort: o.role === "gateway" ? (o.wanPort ?? 0) : 0,
  };
  const deadline = o.timeoutMs ? Date.now() + o.timeoutMs : Number.POSITIVE_INFINITY;
  let backoff = 200;
  try {
    for (;;) {
      if (o.signal?.aborted) throw new Error(`registration with ${o.controller} abandoned: shutting down`);
      try {
        const res = await new Promise<sitepb.RegisterHostResponse>((resolve, reject) =>
          client.registerHost(req, md, { deadline: Date.now() + 5000 }, (err, r) =>
            err ? reject(err) : resolve(r),
          ),
        );
        if (!res.host || res.host.id === "" || res.hostToken === "") {
          throw new Error("RegisterHost answered without a host id or token");
        }
        if (o.tokenFile) writeFileSync(o.tokenFile, `${res.hostToken}\n`, { mode: 0o600 });
        o.log.info({ hostId: res.host.id, name: o.name }, "registered with the site controller");
        return { host: res.host, hostToken: res.hostToken };
      } catch (err) {
        const e = err as Error & { code?: number };
        // Refusals that retrying cannot fix: say so and stop.
        if (
          e.code === status.UNAUTHENTICATED ||
          e.code === status.PERMISSION_DENIED ||
          e.code === status.INVALID_ARGUMENT
        ) {
          throw new Error(`site controller refused RegisterHost for "${o.name}": ${e.message}`);
        }
        if (Date.now() + backoff > deadline)
          throw new Error(`cannot register with ${o.controller}: ${e.message}`);
        o.log.warn({ err: e.message }, "registration failed; retrying");
        await pause(backoff, o.signal);
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  } finally {
    client.close();
  }
}

export interface HeartbeatOptions {
  controller: string;
  hostId: string;
  /** The host token (read at each beat, so a refreshed token file is picked up). */
  token: () => string | undefined;
  log: Logger;
  /** Until the controller names its interval (every answer does). */
  initialIntervalMs?: number;
}

/** Bounds on the interval a controller may ask for. */
const MIN_HEARTBEAT_MS = 100;
const MAX_HEARTBEAT_MS = 60_000;

/**
 * Tells the site controller this host is alive (SiteService.Heartbeat), at the interval the
 * controller's answers name. Beats start at that rate whatever each one took: waiting an interval
 * after a slow answer (a loaded controller, the first call's connection set-up) stretched the gap
 * the controller saw to interval + latency, and after a timed-out beat to interval + deadline,
 * more than the timeout the interval is derived from. Failures are logged when the state changes;
 * a controller without the RPC (UNIMPLEMENTED) is logged once and not asked again.
 */
export class HostHeartbeat {
  private readonly client: sitepb.SiteServiceClient;
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private intervalMs: number;
  private failing = false;
  /** Heartbeats the controller accepted. */
  sent = 0;

  constructor(private readonly o: HeartbeatOptions) {
    this.client = new sitepb.SiteServiceClient(o.controller, credentials.createInsecure());
    this.intervalMs = o.initialIntervalMs ?? 2_000;
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.client.close();
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.beat(), ms);
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    const startedAt = Date.now();
    try {
      const md = new Metadata();
      const token = this.o.token();
      if (token) md.set("authorization", `Bearer ${token}`);
      const res = await new Promise<sitepb.HeartbeatResponse>((resolve, reject) =>
        this.client.heartbeat(
          { hostId: this.o.hostId },
          md,
          { deadline: startedAt + Math.max(this.intervalMs, 1_000) },
          (err, r) => (err ? reject(err) : resolve(r)),
        ),
      );
      this.sent++;
      if (res.intervalMs > 0) {
        this.intervalMs = Math.min(MAX_HEARTBEAT_MS, Math.max(MIN_HEARTBEAT_MS, res.intervalMs));
      }
      if (this.failing) this.o.log.info({ hostId: this.o.hostId }, "heartbeats accepted again");
      this.failing = false;
    } catch (err) {
      const e = err as Error & { code?: number };
      if (e.code === status.UNIMPLEMENTED) {
        this.o.log.warn("the site controller has no Heartbeat RPC; this host's liveness is not reported");
        this.stopped = true;
        return;
      }
      if (!this.failing) this.o.log.warn({ err: e.message }, "heartbeat failed; retrying");
      this.failing = true;
    }
    // The next beat is due an interval after this one started; one that timed out (its deadline is
    // at least the interval) is followed at once.
    this.schedule(Math.max(0, startedAt + this.intervalMs - Date.now()));
  }
}
