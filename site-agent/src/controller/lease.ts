// The controller lease: one row naming the active replica of a site, its fencing token and
// when the lease expires (by the database's clock, so replicas' clocks need not agree). The
// active replica renews it periodically; the other takes it over once it expires, bumping the
// token, which fences every later write of the old holder (see fence.ts).
import type { Logger } from "@isthmus/schema";
import type { Database } from "./db/database.js";

export interface LeaseOptions {
  holder: string;
  /** How long a grant lasts without renewal. */
  ttlMs: number;
  /** How often to renew / try to acquire; well under ttlMs. */
  renewEveryMs: number;
}

export interface LeaseState {
  active: boolean;
  token: number | undefined;
  holder: string;
  /**
   * Active again with the token it held before (it lapsed locally — e.g. the event loop stalled
   * past the TTL — but nobody took the lease meanwhile): nothing else wrote in between.
   */
  resumed: boolean;
}

export class ControllerLease {
  private token: number | undefined;
  /**
   * The last token granted to this replica, kept after a local lapse: while the row still names
   * this holder with it, no other replica has written, so renewing it (not bumping it) is safe.
   */
  private lastToken: number | undefined;
  /** Local deadline after which we stop believing we hold the lease if renewals keep failing. */
  private validUntil = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private running: Promise<unknown> | undefined;
  private readonly listeners = new Set<(s: LeaseState) => void>();
  private lastRoundOk = true;

  constructor(
    private readonly db: Database,
    readonly opts: LeaseOptions,
    private readonly log: Logger,
  ) {
    if (opts.renewEveryMs >= opts.ttlMs) throw new Error("lease renewEveryMs must be shorter than ttlMs");
  }

  /** The fencing token while this replica is active. */
  currentToken(): number | undefined {
    if (this.token !== undefined && Date.now() > this.validUntil) this.setToken(undefined);
    return this.token;
  }

  /**
   * The fencing token for a write about to happen. When the grant lapsed only locally (this
   * replica held a token and missed its renewal — a long synchronous step such as translating a
   * large snapshot stalls the event loop past the TTL), one renewal is tried first: if nobody
   * took the lease the same token resumes and the write goes ahead, instead of failing, being
   * retried, and stalling again the same way.
   */
  async tokenNow(): Promise<number | undefined> {
    const t = this.currentToken();
    if (t !== undefined || this.stopped || this.lastToken === undefined) return t;
    await this.attempt();
    return this.currentToken();
  }

  get active(): boolean {
    return this.currentToken() !== undefined;
  }

  /** Whether the last acquire-or-renew round reached the database (site health). */
  get databaseOk(): boolean {
    return this.lastRoundOk;
  }

  onChange(fn: (s: LeaseState) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Starts the acquire-or-renew rounds; resolves after the first, with whether it made this replica active. */
  start(): Promise<boolean> {
    const tick = async () => {
      if (this.stopped) return;
      this.running = this.attempt();
      await this.running;
      if (!this.stopped) this.timer = setTimeout(tick, this.opts.renewEveryMs);
    };
    const first = tick().then(() => this.active);
    return first;
  }

  /**
   * The common round — renewing the lease this replica holds — as one statement (one round trip
   * instead of four): extends the expiry only when the lease row is still ours with our token.
   * Undefined when it is not (or we hold none): the full round in `attempt` decides then.
   */
  private async renewHeld(): Promise<number | undefined> {
    const mine = this.token ?? this.lastToken;
    if (mine === undefined) return undefined;
    const r = await this.db.statement(
      "lease-renew",
      `WITH l AS (SELECT 1 FROM controller_lease WHERE id = 1 AND holder = $1 AND token = $2::INT8),
       e AS (INSERT INTO controller_lease_expiry (id, expires_at) SELECT 1, now() + $3::INTERVAL FROM l
             ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at RETURNING 1)
       SELECT count(*)::INT8 AS renewed FROM e`,
      [this.opts.holder, mine, `${this.opts.ttlMs} milliseconds`],
    );
    return Number(r.rows[0]?.renewed ?? 0) === 1 ? mine : undefined;
  }

  /** One acquire-or-renew round; returns whether this replica holds the lease afterwards. */
  async attempt(): Promise<boolean> {
    const { holder, ttlMs } = this.opts;
    const sentAt = Date.now();
    try {
      const token =
        (await this.renewHeld()) ??
        (await this.db.tx("lease", async (tx) => {
          // The expiry lives in controller_lease_expiry (0004): a renewal writes only that row,
          // never the one every write transaction's fence reads, so a long write (a snapshot)
          // does not conflict with renewals. controller_lease.expires_at is the fallback for a
          // database whose expiry row was not written yet.
          const r = await tx.query(
            `SELECT l.holder, l.token, COALESCE(e.expires_at, l.expires_at) < now() AS expired
           FROM controller_lease l LEFT JOIN controller_lease_expiry e ON e.id = l.id WHERE l.id = 1`,
          );
          const ttl = `${ttlMs} milliseconds`;
          const extend = () =>
            tx.query(
              `INSERT INTO controller_lease_expiry (id, expires_at) VALUES (1, now() + $1::INTERVAL)
             ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at`,
              [ttl],
            );
          const row = r.rows[0];
          if (!row) {
            await tx.query(
              "INSERT INTO controller_lease (id, holder, token, expires_at) VALUES (1, $1, 1, now() + $2::INTERVAL)",
              [holder, ttl],
            );
            await extend();
            return 1;
          }
          const current = Number(row.token);
          if (row.holder === holder && current === (this.token ?? this.lastToken)) {
            await extend();
            return current;
          }
          if (row.expired || row.holder === holder) {
            // Expired, or ours from a previous life of this replica: take it with a new token so
            // anything still in flight under the old token is fenced.
            await tx.query(
              "UPDATE controller_lease SET holder = $1, token = $2, expires_at = now() + $3::INTERVAL WHERE id = 1",
              [holder, current + 1, ttl],
            );
            await extend();
            return current + 1;
          }
          return undefined;
        }));
      this.lastRoundOk = true;
      if (this.stopped) return false;
      if (token === undefined) this.lastToken = undefined; // another replica holds it now
      // Count validity from when we asked, so the local belief never outlives the grant.
      if (token !== undefined) this.validUntil = sentAt + ttlMs;
      this.setToken(token);
      return token !== undefined;
    } catch (err) {
      this.lastRoundOk = false;
      this.log.warn({ err: (err as Error).message }, "lease renewal failed");
      this.currentToken(); // drops the token once the local deadline passed
      return this.token !== undefined;
    }
  }

  private setToken(token: number | undefined): void {
    if (token === this.token) return;
    const was = this.token;
    const resumed = token !== undefined && token === this.lastToken;
    this.token = token;
    if (token !== undefined) this.lastToken = token;
    if (token === undefined && was !== undefined && Date.now() > this.validUntil) {
      // Usually the process could not renew in time (a stalled event loop, a slow database).
      this.log.warn(
        { holder: this.opts.holder, token: was, lateMs: Date.now() - this.validUntil },
        "lease lapsed locally: not renewed within its TTL",
      );
    } else {
      this.log.info(
        { holder: this.opts.holder, token, was, resumed },
        token === undefined ? "lease lost" : resumed ? "lease resumed" : "lease acquired",
      );
    }
    const s: LeaseState = { active: token !== undefined, token, holder: this.opts.holder, resumed };
    for (const l of this.listeners) l(s);
  }

  /** Stops renewing; when active, expires the lease now so the other replica takes over at once. */
  async stop(release = true): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    const token = this.token;
    this.setToken(undefined);
    this.lastToken = undefined;
    if (!release || token === undefined) return;
    await this.db
      .tx("lease-release", async (tx) => {
        const r = await tx.query(
          "UPDATE controller_lease SET expires_at = now() WHERE id = 1 AND holder = $1 AND token = $2",
          [this.opts.holder, token],
        );
        if (r.rowCount === 1)
          await tx.query("UPDATE controller_lease_expiry SET expires_at = now() WHERE id = 1");
      })
      .catch((err) => this.log.warn({ err: (err as Error).message }, "lease release failed"));
  }
}
