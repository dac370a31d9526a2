// Host liveness: either replica records agents' heartbeats (by the database's clock, so the
// replicas' clocks need not agree); the active replica checks them and marks a host not alive
// after `deadAfterMs` without one, and alive again when they return. The marks go through the
// LocalWriter, so they reach agents on the change feed like every other topology change.
import type { Logger } from "@isthmus/schema";
import type { Database } from "./db/database.js";
import type { LocalWriter } from "./local-store.js";
import type { IntentView } from "./translate/index.js";

export interface HostLivenessOptions {
  /** A host without a heartbeat for this long is marked not alive. */
  deadAfterMs: number;
  /** How often the active replica checks. */
  checkEveryMs: number;
  log: Logger;
  /** A host was marked alive or not (a gateway's endpoint is published only while alive). */
  onChanged?: (hostId: string) => void;
}

export class HostLiveness {
  private writer: LocalWriter | undefined;
  private activeSinceMs = 0;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> | undefined;
  private rerun = false;
  /** Times a host was marked not alive / alive again (metrics, tests). */
  markedDown = 0;
  markedUp = 0;

  constructor(
    private readonly db: Database,
    private readonly view: IntentView,
    private readonly opts: HostLivenessOptions,
  ) {}

  /** What agents are told: heartbeat three times per timeout, so one lost beat is harmless. */
  get intervalMs(): number {
    return Math.max(1, Math.floor(this.opts.deadAfterMs / 3));
  }
  get deadAfterMs(): number {
    return this.opts.deadAfterMs;
  }

  /** Records a heartbeat; false when no such host is registered. */
  async heartbeat(hostId: string): Promise<boolean> {
    const r = await this.db.statement(
      "heartbeat",
      `INSERT INTO host_heartbeats (host_id, last_seen_at) SELECT id, now() FROM hosts WHERE id = $1
       ON CONFLICT (host_id) DO UPDATE SET last_seen_at = excluded.last_seen_at`,
      [hostId],
    );
    if (r.rowCount === 0) return false;
    // A host marked not alive comes back at once, not at the next periodic check.
    if (this.writer && this.view.get("host", hostId)?.alive === false) this.schedule(0);
    return true;
  }

  /** The active replica checks with its writer; hosts are not marked down for one timeout. */
  startChecking(writer: LocalWriter): void {
    this.writer = writer;
    // Agents could not heartbeat while no replica was active: give them one timeout to.
    this.activeSinceMs = Date.now();
    this.schedule(this.opts.checkEveryMs);
  }

  async stopChecking(): Promise<void> {
    this.writer = undefined;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.checking;
  }

  private schedule(ms: number): void {
    if (!this.writer) return;
    if (this.timer) {
      if (ms > 0) return;
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.tick();
    }, ms);
  }

  /** Runs one check at a time; a check asked for meanwhile runs right after. */
  private tick(): void {
    if (this.checking) {
      this.rerun = true;
      return;
    }
    this.checking = this.checkOnce()
      .then(
        () => undefined,
        (err) => this.opts.log.warn({ err: (err as Error).message }, "host liveness check failed"),
      )
      .finally(() => {
        this.checking = undefined;
        const again = this.rerun;
        this.rerun = false;
        this.schedule(again ? 0 : this.opts.checkEveryMs);
      });
  }

  /** One pass: compares each host's last heartbeat with the timeout and marks what changed. */
  async checkOnce(): Promise<{ down: string[]; up: string[] }> {
    const writer = this.writer;
    const out = { down: [] as string[], up: [] as string[] };
    if (!writer) return out;
    const rows = await this.db.statement(
      "host-liveness",
      `SELECT h.id, (d.host_id IS NULL) AS marked_alive,
              (COALESCE(hb.last_seen_at, h.registered_at) > now() - CAST($1 AS INTERVAL)) AS fresh
       FROM hosts h
       LEFT JOIN host_heartbeats hb ON hb.host_id = h.id
       LEFT JOIN hosts_down d ON d.host_id = h.id`,
      [`${this.opts.deadAfterMs} milliseconds`],
    );
    const graceOver = Date.now() - this.activeSinceMs >= this.opts.deadAfterMs;
    for (const r of rows.rows) {
      const id = r.id as string;
      if (r.fresh && !r.marked_alive) {
        if (await writer.setHostAlive(id, true)) {
          this.markedUp++;
          out.up.push(id);
          this.opts.onChanged?.(id);
          this.opts.log.info({ hostId: id }, "host is alive again (heartbeats returned)");
        }
      } else if (!r.fresh && r.marked_alive && graceOver) {
        if (await writer.setHostAlive(id, false)) {
          this.markedDown++;
          out.down.push(id);
          this.opts.onChanged?.(id);
          this.opts.log.warn(
            { hostId: id, deadAfterMs: this.opts.deadAfterMs },
            "host marked not alive: no heartbeat within the timeout",
          );
        }
      }
    }
    return out;
  }
}
