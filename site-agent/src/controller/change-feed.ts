// Tails the topology change log for every watch stream of this replica: polls the table on a
// short interval (so the other replica's commits arrive too); a local commit is handed over at
// once, without a read, when it is the next revision (else it is kept, and the poll it triggers
// delivers it in its turn without decoding its row again). Keeps a bounded ring of recent changes
// for streams resuming close to the head.
import type { Logger, topologypb } from "@isthmus/schema";
import type { Database } from "./db/database.js";
import { encodedChangeBytes, readChangesAfter } from "./topology-store.js";

export interface ChangeFeedOptions {
  pollMs: number;
  /** Changes kept in memory for resuming streams. */
  ringSize: number;
  /**
   * Encoded bytes those changes may hold (default 64 MiB): a site catching up on a large
   * federation commits one change of 100k+ objects, which a count alone would keep for long.
   */
  ringBytes?: number;
  /** Rows read per query. */
  batch: number;
  /**
   * Encoded bytes above which a change is not kept at all (default DEFAULT_MAX_CHANGE_BYTES, the
   * watch's own bound): a watcher gets a snapshot instead of such a change, so keeping it — 100k
   * decoded objects after a catch-up, several times their encoded size on the heap, for every
   * collection to mark — would serve nobody.
   */
  maxChangeBytes?: number;
}

export const DEFAULT_RING_BYTES = 64 * 1024 * 1024;

/**
 * Encoded bytes above which a change goes to an agent as a fresh snapshot (in parts) instead of
 * one message (an agent's gRPC client takes 4 MiB a message).
 */
export const DEFAULT_MAX_CHANGE_BYTES = 3 * 1024 * 1024;

/** What a stream resuming from a revision is owed, as far as the ring knows. */
export type RecentChanges =
  /** The changes after it, all kept. */
  | topologypb.TopologyChange[]
  /** A snapshot: a change after it was too large to keep (or to send as one message). */
  | "snapshot"
  /** Not known here: the ring does not reach back that far (read the log). */
  | undefined;

/**
 * Own commits kept while a poll is in flight (a catch-up commits one entry after another, faster
 * than a poll turns round). Past this many the rest are read back from the log as before.
 */
export const OWN_COMMITS_KEPT = 10_000;

export type ChangeListener = (change: topologypb.TopologyChange) => void;

export class ChangeFeed {
  private head = -1;
  private ring: topologypb.TopologyChange[] = [];
  private ringBytes = 0;
  /** The newest change too large to keep (-1: none since start). */
  private lastTooLarge = -1;
  private readonly listeners = new Set<ChangeListener>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  /** This replica's commits that could not be delivered at once, by revision (OWN_COMMITS_KEPT). */
  private readonly own = new Map<number, topologypb.TopologyChange>();

  constructor(
    private readonly db: Database,
    private readonly opts: ChangeFeedOptions,
    private readonly log: Logger,
  ) {}

  /** Revision of the newest change delivered to listeners (-1 before the first poll). */
  get revision(): number {
    return this.head;
  }

  async start(): Promise<void> {
    const r = await readChangesAfter(this.db, Number.MAX_SAFE_INTEGER, 1);
    this.head = r.current;
    const loop = async () => {
      if (this.stopped) return;
      await this.poll();
      if (!this.stopped) this.timer = setTimeout(loop, this.opts.pollMs);
    };
    this.timer = setTimeout(loop, this.opts.pollMs);
  }

  subscribe(fn: ChangeListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** What a stream resuming from `revision` is owed (RecentChanges). */
  recentAfter(revision: number): RecentChanges {
    if (revision < this.lastTooLarge) return "snapshot";
    const first = this.ring[0]?.revision ?? this.head + 1;
    if (revision + 1 < first) return undefined;
    return this.ring.filter((c) => c.revision > revision);
  }

  /** A local commit happened: poll now rather than at the next tick. */
  wake(): void {
    void this.poll();
  }

  /**
   * This replica committed `change`: delivered at once when it is the next revision (commits are
   * totally ordered, so nothing can come between), else — a poll in flight, or changes of the
   * other replica not yet read — read from the log in order.
   */
  committed(change: topologypb.TopologyChange): void {
    if (!this.polling && !this.stopped && change.revision === this.head + 1) this.deliver(change);
    else if (change.revision > this.head) {
      if (this.own.size < OWN_COMMITS_KEPT) this.own.set(change.revision, change);
      void this.poll();
    }
  }

  /** Own commits that are next, in order; those already delivered (read from the log) are dropped. */
  private deliverOwn(): void {
    for (let c = this.own.get(this.head + 1); c !== undefined; c = this.own.get(this.head + 1)) {
      this.own.delete(c.revision);
      this.deliver(c);
    }
    for (const r of this.own.keys()) if (r <= this.head) this.own.delete(r);
  }

  poll(): Promise<void> {
    if (this.polling) {
      this.again = true;
      return this.polling;
    }
    this.polling = (async () => {
      try {
        do {
          this.again = false;
          for (;;) {
            this.deliverOwn();
            const r = await readChangesAfter(this.db, this.head, this.opts.batch, this.own);
            for (const c of r.changes) this.deliver(c);
            if (r.changes.length < this.opts.batch) break;
          }
          this.deliverOwn();
        } while (this.again && !this.stopped);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, "reading the topology change log failed");
      } finally {
        this.polling = undefined;
      }
    })();
    return this.polling;
  }

  private deliver(c: topologypb.TopologyChange): void {
    if (c.revision <= this.head) return; // already delivered (handed over by its committer)
    if (c.revision !== this.head + 1) {
      // Revisions are gap-free by construction; a gap means the log was pruned past us.
      this.log.warn(
        { expected: this.head + 1, got: c.revision },
        "gap in topology change log; watchers resync",
      );
      this.ring = [];
      this.ringBytes = 0;
    }
    this.head = c.revision;
    const bytes = encodedChangeBytes(c);
    if (bytes > (this.opts.maxChangeBytes ?? DEFAULT_MAX_CHANGE_BYTES)) {
      // Nor anything before it: a stream resuming from before it is owed a snapshot anyway.
      this.lastTooLarge = c.revision;
      this.ring = [];
      this.ringBytes = 0;
      for (const l of this.listeners) l(c);
      return;
    }
    this.ring.push(c);
    this.ringBytes += bytes;
    // The oldest go first; a change over the byte bound on its own is not kept at all (streams
    // resuming from before it read the log, and get a snapshot for it).
    const maxBytes = this.opts.ringBytes ?? DEFAULT_RING_BYTES;
    let drop = 0;
    while (
      drop < this.ring.length &&
      (this.ring.length - drop > this.opts.ringSize || this.ringBytes > maxBytes)
    ) {
      this.ringBytes -= encodedChangeBytes(this.ring[drop]!);
      drop++;
    }
    if (drop > 0) this.ring.splice(0, drop);
    for (const l of this.listeners) l(c);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.polling;
    this.own.clear();
  }
}
