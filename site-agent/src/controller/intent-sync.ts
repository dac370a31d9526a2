// Follows the federation: streams WatchIntent from the last applied index, applies each event
// (snapshot, change, progress) through the IntentApplier one at a time, acks the applied index
// upward, and reconnects with capped, jittered backoff across the coordinator addresses. While no
// coordinator answers, the site keeps serving what it last applied; `staleness` says for how long.
import { type ChannelCredentials, type ClientReadableStream, Metadata, status } from "@grpc/grpc-js";
import { type intentpb, type Logger, sitesyncpb, wallOffsetMs } from "@isthmus/schema";
import { backoffDelayMs } from "./db/retry.js";
import type { EntryTiming } from "./entry-timeline.js";
import { FencedOut } from "./fence.js";
import type { ApplyTiming, IntentApplier } from "./intent-applier.js";

export interface IntentSyncOptions {
  site: string;
  /** Coordinator addresses (host:port), tried in turn. */
  addresses: string[];
  credentials: ChannelCredentials;
  /** Per-call metadata (the site's bearer token). */
  metadata?: () => Promise<Metadata>;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** Acks are sent at most this often (the applied index only ever moves up). */
  ackEveryMs: number;
  /**
   * An applied index moved by progress alone (entries with nothing for this site) is acked at
   * most this often (default PROGRESS_ACK_REFRESH_MS); one that covers an applied change, at the
   * ackEveryMs pace.
   */
  progressAckRefreshMs?: number;
  log: Logger;
  /** Most intent objects a snapshot (all its parts) may hold; more ends the stream. */
  maxSnapshotObjects: number;
  /** Ask for a snapshot when this many entries or more behind (0 = replay the journal). */
  snapshotAfterLag?: number;
  /** When each applied change arrived, got the write queue and committed. */
  onEntryTimed?: (timing: EntryTiming) => void;
  /** Called when the applier reports this replica was fenced out (lost the lease). */
  onFenced?: (err: Error) => void;
  /**
   * Move the stream to the coordinator group's leader when the coordinator followed says another
   * node leads and that node is among `addresses` (default true): from a follower each change
   * arrives one raft round later. false stays on whichever coordinator answered.
   */
  followLeader?: boolean;
  /** How long a coordinator's word that another node leads must stand before the stream moves (LEADER_MOVE_DELAY_MS). */
  leaderMoveDelayMs?: number;
  /** A snapshot of this many intent objects was applied (a catch-up). */
  onSnapshotApplied?: (objects: number) => void;
}

/**
 * Call metadata asking the coordinator for snapshots in parts (site_sync.proto, snapshot_part):
 * a federation's snapshot of more than ~20k objects would not fit one 4 MiB message.
 */
const SNAPSHOT_PARTS_HEADER = "isthmus-snapshot-parts";
/** Call metadata: send a snapshot rather than the journal when this many entries behind. */
const SNAPSHOT_AFTER_LAG_HEADER = "isthmus-snapshot-after-lag";
/** Call metadata asking the coordinator to say where the leader is when it is not (leader_address). */
const LEADER_HINTS_HEADER = "isthmus-leader-hints";

/**
 * How long "the leader is X" must stand before the stream moves to X: an election settles first,
 * and a leader that keeps changing does not drag the stream along with every change.
 */
export const LEADER_MOVE_DELAY_MS = 1_000;

/**
 * How often an index moved only by progress is acked. Every ack is an entry in the federation's
 * log, which moves every site's applied index by progress: acking each such move at the ack pace
 * made about an entry a second per site at idle (progress goes out once a second), for ever —
 * raft appends and fsyncs on every coordinator, a database transaction at every site. Acked this
 * rarely, the federation is still told the site is alive and current (the coordinator refreshes
 * an unchanged ack at this pace too).
 */
export const PROGRESS_ACK_REFRESH_MS = 5_000;

export interface SyncStatus {
  connected: boolean;
  address: string;
  /** Wall-clock ms of the last message from any coordinator; 0 = none since start. */
  lastContactMs: number;
  /** Since when the site has had no coordinator stream (0 while connected). */
  disconnectedSinceMs: number;
  reconnects: number;
  /** Streams ended to follow the leader (not counted in reconnects). */
  leaderMoves: number;
}

export class IntentSync {
  private readonly clients = new Map<string, sitesyncpb.SiteSyncServiceClient>();
  private stream: ClientReadableStream<sitesyncpb.WatchIntentResponse> | undefined;
  private stopped = true;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private ackTimer: NodeJS.Timeout | undefined;
  private ackedIndex = 0;
  /** Whether a change or snapshot was applied since the last ack was sent. */
  private changedSinceAck = false;
  private lastAckSentMs = 0;
  private next = 0;
  /** The leader's address the current stream will move to once moveTimer fires. */
  private moveTo = "";
  private moveTimer: NodeJS.Timeout | undefined;
  /** Set when moveTimer fired and ended the stream: where the next one goes. */
  private moving = "";
  readonly status: SyncStatus = {
    connected: false,
    address: "",
    lastContactMs: 0,
    disconnectedSinceMs: Date.now(),
    reconnects: 0,
    leaderMoves: 0,
  };

  constructor(
    private readonly applier: IntentApplier,
    private readonly opts: IntentSyncOptions,
  ) {
    if (opts.addresses.length === 0) throw new Error("intent sync needs at least one coordinator address");
  }

  /** How long the site has been without a coordinator stream (0 while connected). */
  stalenessMs(now = Date.now()): number {
    return this.status.connected ? 0 : now - this.status.disconnectedSinceMs;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.cancelMove();
    this.stream?.cancel();
    this.wake?.();
    await this.loop;
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    await this.flushAck(true).catch(() => undefined);
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }

  private client(address: string): sitesyncpb.SiteSyncServiceClient {
    let c = this.clients.get(address);
    if (!c) {
      c = new sitesyncpb.SiteSyncServiceClient(address, this.opts.credentials);
      this.clients.set(address, c);
    }
    return c;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      const address = this.opts.addresses[this.next % this.opts.addresses.length]!;
      this.next++;
      let progressed = false;
      try {
        progressed = await this.follow(address);
      } catch (err) {
        if (err instanceof FencedOut) {
          this.opts.onFenced?.(err);
          return;
        }
        this.opts.log.warn({ address, err: (err as Error).message }, "intent stream ended");
      }
      this.cancelMove();
      const moved = this.moving;
      this.moving = "";
      this.setDisconnected();
      if (this.stopped) break;
      if (moved) {
        // Ended to follow the leader: straight there, from the index applied (no backoff).
        this.next = this.opts.addresses.indexOf(moved);
        this.status.leaderMoves++;
        failures = 0;
        continue;
      }
      failures = progressed ? 1 : failures + 1;
      this.status.reconnects++;
      const delay = Math.max(
        this.opts.backoffInitialMs / 2,
        backoffDelayMs(
          { maxAttempts: 1, baseDelayMs: this.opts.backoffInitialMs, maxDelayMs: this.opts.backoffMaxMs },
          failures,
          Math.random,
        ),
      );
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  private setDisconnected(): void {
    if (this.status.connected) this.status.disconnectedSinceMs = Date.now();
    this.status.connected = false;
  }

  /** One stream's life; resolves true when at least one event arrived. */
  private async follow(address: string): Promise<boolean> {
    const metadata = this.opts.metadata ? await this.opts.metadata() : new Metadata();
    metadata.set(SNAPSHOT_PARTS_HEADER, "1");
    if (this.opts.followLeader ?? true) metadata.set(LEADER_HINTS_HEADER, "1");
    if (this.opts.snapshotAfterLag)
      metadata.set(SNAPSHOT_AFTER_LAG_HEADER, String(this.opts.snapshotAfterLag));
    const fromIndex = this.applier.appliedIndex;
    const stream = this.client(address).watchIntent({ site: this.opts.site, fromIndex }, metadata);
    this.stream = stream;
    this.status.address = address;
    this.opts.log.info({ address, fromIndex }, "watching intent");
    let got = false;
    // Parts of a snapshot being received (this stream's only: a broken stream starts over).
    let parts: intentpb.IntentObject[][] = [];
    let partObjects = 0;
    let partsIndex = 0;
    return new Promise<boolean>((resolve, reject) => {
      let chain = Promise.resolve();
      let failed = false;
      stream.on("data", (ev: sitesyncpb.WatchIntentResponse) => {
        const receivedAt = performance.now();
        got = true;
        this.markContact();
        if (ev.leaderAddress !== undefined) {
          this.leaderHint(address, ev.leaderAddress, stream);
          return;
        }
        stream.pause(); // one event at a time; the coordinator waits (flow control) meanwhile
        chain = chain
          .then(() => {
            const at = (ev.snapshotPart ?? ev.snapshot)?.index;
            if (parts.length > 0 && at !== undefined && at !== partsIndex) {
              throw new Error(
                `intent snapshot parts from ${address} disagree on the index (${partsIndex}, then ${at})`,
              );
            }
            if (ev.snapshotPart) {
              partsIndex = ev.snapshotPart.index;
              partObjects += ev.snapshotPart.objects.length;
              if (partObjects > this.opts.maxSnapshotObjects) {
                throw new Error(
                  `intent snapshot from ${address} holds more than ${this.opts.maxSnapshotObjects} objects (maxIntentObjects)`,
                );
              }
              parts.push(ev.snapshotPart.objects);
              return;
            }
            if (ev.snapshot && parts.length > 0) {
              const whole = { index: ev.snapshot.index, objects: [...parts, ev.snapshot.objects].flat() };
              parts = [];
              partObjects = 0;
              return this.handle({ snapshot: whole });
            }
            return this.handle(ev, receivedAt);
          })
          .then(
            () => {
              stream.resume();
            },
            (err) => {
              failed = true;
              stream.cancel();
              reject(err);
            },
          );
      });
      stream.on("error", (err: { code?: number; message: string }) => {
        void chain.then(() => {
          if (failed) return;
          if (err.code === status.CANCELLED && (this.stopped || this.moving)) resolve(got);
          else reject(new Error(`${address}: ${err.message}`));
        });
      });
      stream.on("end", () => void chain.then(() => (failed ? undefined : resolve(got))));
    });
  }

  /**
   * The coordinator at `address` says `leader` leads ("" = it does, or none is known). A leader
   * among this site's addresses that still leads after leaderMoveDelayMs gets the stream: the
   * current one is cancelled (what it already delivered is applied first) and the next starts
   * there from the index applied.
   */
  private leaderHint(
    address: string,
    leader: string,
    stream: ClientReadableStream<sitesyncpb.WatchIntentResponse>,
  ): void {
    if (!(this.opts.followLeader ?? true)) return; // not asked for: ignored
    if (leader === "" || leader === address || this.stopped) {
      this.cancelMove();
      return;
    }
    if (!this.opts.addresses.includes(leader)) {
      this.cancelMove();
      this.opts.log.info(
        { address, leader },
        "the coordinator leader is not among this site's coordinator addresses (--federation, written as the coordinators' --peers name them); staying on a follower",
      );
      return;
    }
    if (this.moveTimer && this.moveTo === leader) return;
    this.cancelMove();
    this.moveTo = leader;
    this.moveTimer = setTimeout(() => {
      this.moveTimer = undefined;
      if (this.stream !== stream || this.stopped) return;
      this.opts.log.info({ from: address, to: leader }, "moving the intent stream to the coordinator leader");
      this.moving = leader;
      stream.cancel();
    }, this.opts.leaderMoveDelayMs ?? LEADER_MOVE_DELAY_MS);
    this.moveTimer.unref();
  }

  private cancelMove(): void {
    if (this.moveTimer) clearTimeout(this.moveTimer);
    this.moveTimer = undefined;
    this.moveTo = "";
  }

  private markContact(): void {
    this.status.lastContactMs = Date.now();
    if (!this.status.connected) {
      this.status.connected = true;
      this.status.disconnectedSinceMs = 0;
    }
  }

  private async handle(ev: sitesyncpb.WatchIntentResponse, receivedAt?: number): Promise<void> {
    if (ev.snapshot) {
      const outcome = await this.applier.applySnapshot(ev.snapshot);
      this.changedSinceAck = true;
      if (outcome === "applied") this.opts.onSnapshotApplied?.(ev.snapshot.objects.length);
    } else if (ev.change) {
      const timing: ApplyTiming = {};
      const outcome = await this.applier.applyChange(ev.change, timing);
      this.changedSinceAck = true;
      const { startedAt, translatedAt, writtenAt, committedAt } = timing;
      if (
        outcome === "applied" &&
        receivedAt !== undefined &&
        startedAt !== undefined &&
        translatedAt !== undefined &&
        writtenAt !== undefined &&
        committedAt !== undefined
      ) {
        const wall = wallOffsetMs();
        this.opts.onEntryTimed?.({
          index: ev.change.index,
          revision: timing.revision ?? 0,
          receivedAt: wall + receivedAt,
          startedAt: wall + startedAt,
          translatedAt: wall + translatedAt,
          writtenAt: wall + writtenAt,
          committedAt: wall + committedAt,
        });
      }
    } else if (ev.progressIndex !== undefined) await this.applier.applyProgress(ev.progressIndex);
    this.scheduleAck();
  }

  private scheduleAck(delayMs = this.opts.ackEveryMs): void {
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = undefined;
      this.flushAck().catch((err) => this.opts.log.debug({ err: (err as Error).message }, "ack failed"));
    }, delayMs);
  }

  /** `final`: the last ack at stop, sent whatever moved the index. */
  private async flushAck(final = false): Promise<void> {
    const idx = this.applier.appliedIndex;
    if (idx <= this.ackedIndex || !this.status.address) return;
    if (!this.changedSinceAck && !final) {
      // Moved by progress only: ack it when the refresh is due (see PROGRESS_ACK_REFRESH_MS).
      const wait =
        this.lastAckSentMs + (this.opts.progressAckRefreshMs ?? PROGRESS_ACK_REFRESH_MS) - Date.now();
      if (wait > 0) {
        if (!this.stopped) this.scheduleAck(wait);
        return;
      }
    }
    this.changedSinceAck = false;
    this.lastAckSentMs = Date.now();
    const metadata = this.opts.metadata ? await this.opts.metadata() : new Metadata();
    await new Promise<void>((resolve, reject) =>
      this.client(this.status.address).ack(
        { site: this.opts.site, appliedIndex: idx },
        metadata,
        { deadline: Date.now() + 5_000 },
        (err) => (err ? reject(err) : resolve()),
      ),
    ).catch((err: unknown) => {
      this.changedSinceAck = true; // not acked: the next one goes at the ack pace, not the refresh's
      throw err;
    });
    this.ackedIndex = Math.max(this.ackedIndex, idx);
  }
}
