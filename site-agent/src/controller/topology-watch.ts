// TopologyService.Watch for agents: a consistent snapshot at revision R (or, on resume, the
// changes after the agent's revision), then every later change in order. Each stream has a
// bounded queue; an agent that does not keep up is cut off with RESOURCE_EXHAUSTED instead of
// the controller buffering without limit. The agent reconnects and resumes from its revision.
import { type ServerWritableStream, status } from "@grpc/grpc-js";
import type { Logger, topologypb } from "@isthmus/schema";
import { type ChangeFeed, DEFAULT_MAX_CHANGE_BYTES } from "./change-feed.js";
import type { Database } from "./db/database.js";
import { type EncodedWatchEvent, encodeSnapshotEvent } from "./snapshot-encoding.js";
import type { TopologyMirror } from "./topology-mirror.js";
import { encodedChangeBytes, readChangesAfter, readSnapshotBodies } from "./topology-store.js";

type Call = ServerWritableStream<topologypb.WatchTopologyRequest, topologypb.WatchTopologyResponse>;

export interface WatchOptions {
  /** Changes a stream may have queued but not yet handed to the transport. */
  maxQueuedChanges: number;
  heartbeatMs: number;
  /** Changes read per catch-up query. */
  catchUpBatch: number;
  /** Maximum concurrent streams. */
  maxStreams: number;
  /** Encoded bytes of objects per snapshot part (1 MiB by default; gRPC clients take 4 MiB). */
  snapshotPartBytes?: number;
  /**
   * Encoded bytes above which a change goes to the agent as a fresh snapshot (in parts) instead
   * of one message (3 MiB by default; an agent's gRPC client takes 4 MiB a message).
   */
  maxChangeBytes?: number;
}

export const DEFAULT_SNAPSHOT_PART_BYTES = 1024 * 1024;
export { DEFAULT_MAX_CHANGE_BYTES };

export type WatchAuthorizer = (call: Call) => Promise<void>;

export class TopologyWatchService {
  private streams = 0;
  /** Streams cut off for falling behind (a metric). */
  slowCutoffs = 0;

  constructor(
    private readonly db: Database,
    private readonly feed: ChangeFeed,
    private readonly opts: WatchOptions,
    private readonly log: Logger,
    private readonly authorize: WatchAuthorizer,
    /** Snapshots from memory when it is ready; else (or absent) from the database. */
    readonly mirror?: TopologyMirror,
  ) {}

  get openStreams(): number {
    return this.streams;
  }

  handlers(): topologypb.TopologyServiceServer {
    return { watch: (call) => void this.watch(call) };
  }

  private async watch(call: Call): Promise<void> {
    const arrived = performance.now();
    try {
      await this.authorize(call);
    } catch (err) {
      endWithError(call, err as Error);
      return;
    }
    if (this.streams >= this.opts.maxStreams) {
      endWithError(
        call,
        grpcError(status.RESOURCE_EXHAUSTED, `too many watch streams (limit ${this.opts.maxStreams})`),
      );
      return;
    }
    this.streams++;
    const from = call.request.fromRevision;
    const queue: topologypb.TopologyChange[] = [];
    let sent = -1; // last revision the agent has
    let closed = false;
    let draining = false;
    let resyncing = false;
    let heartbeat: NodeJS.Timeout | undefined;
    const close = (err?: Error) => {
      if (closed) return;
      closed = true;
      unsubscribe();
      if (heartbeat) clearInterval(heartbeat);
      this.streams--;
      if (err) endWithError(call, err);
      else call.end();
    };
    const pump = () => {
      if (closed || sent < 0 || draining || resyncing) return;
      while (queue.length > 0) {
        const c = queue.shift()!;
        if (c.revision <= sent) continue;
        if (c.revision !== sent + 1) {
          close(
            grpcError(
              status.ABORTED,
              `watch stream missed revisions ${sent + 1}..${c.revision - 1}; resume from ${sent}`,
            ),
          );
          return;
        }
        if (encodedChangeBytes(c) > this.maxChangeBytes) {
          // Too large for one message: the agent gets the state at (at least) this revision as
          // a snapshot in parts; changes up to the snapshot's revision are then skipped.
          resyncing = true;
          this.writeSnapshot(call).then(
            (at) => {
              resyncing = false;
              sent = Math.max(sent, at);
              pump();
            },
            (err: Error) => close(grpcError(status.UNAVAILABLE, `cannot read topology: ${err.message}`)),
          );
          return;
        }
        sent = c.revision;
        if (!call.write({ change: c })) {
          draining = true;
          call.once("drain", () => {
            draining = false;
            pump();
          });
          return;
        }
      }
    };
    const unsubscribe = this.feed.subscribe((c) => {
      if (closed) return;
      queue.push(c);
      if (queue.length > this.opts.maxQueuedChanges) {
        this.slowCutoffs++;
        this.log.warn({ host: call.request.hostId, sent, queued: queue.length }, "slow watcher cut off");
        close(
          grpcError(
            status.RESOURCE_EXHAUSTED,
            `agent fell more than ${this.opts.maxQueuedChanges} changes behind (at revision ${sent}); reconnect and resume from ${sent}`,
          ),
        );
        return;
      }
      pump();
    });
    call.on("cancelled", () => close());
    try {
      const started = await this.start(call, from, arrived);
      queue.unshift(...started.backlog);
      sent = started.at;
      heartbeat = setInterval(() => {
        if (!closed && !draining && queue.length === 0) call.write({ heartbeatRevision: sent });
      }, this.opts.heartbeatMs);
      pump();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "watch stream failed");
      close(grpcError(status.UNAVAILABLE, `cannot read topology: ${(err as Error).message}`));
    }
  }

  /**
   * Sends the snapshot or the catch-up changes; returns the revision the agent is then at and
   * recent changes (from the feed's ring) still to send ahead of the live queue.
   */
  private async start(
    call: Call,
    from: number,
    arrived: number,
  ): Promise<{ at: number; backlog: topologypb.TopologyChange[] }> {
    if (from > 0) {
      const recent = this.feed.recentAfter(from);
      if (Array.isArray(recent)) return { at: from, backlog: recent };
      // A change since `from` was too large to send as one: a snapshot, without reading it back.
      if (recent === "snapshot") return { at: await this.writeSnapshot(call, arrived), backlog: [] };
      let at = from;
      for (;;) {
        const r = await readChangesAfter(this.db, at, this.opts.catchUpBatch);
        if (at > r.current) break; // the agent's revision is from another database: resync
        if (r.changes.length === 0) {
          if (at < r.current) break; // pruned away
          return { at, backlog: [] };
        }
        if (r.changes[0]!.revision !== at + 1) break; // pruned past the agent's revision
        let tooLarge = false;
        for (const c of r.changes) {
          if (encodedChangeBytes(c) > this.maxChangeBytes) {
            tooLarge = true; // a snapshot instead, as for a live change of that size
            break;
          }
          call.write({ change: c });
          at = c.revision;
        }
        if (tooLarge) break;
        if (r.changes.length < this.opts.catchUpBatch) return { at, backlog: [] };
      }
    }
    return { at: await this.writeSnapshot(call, arrived), backlog: [] };
  }

  private get maxChangeBytes(): number {
    return this.opts.maxChangeBytes ?? DEFAULT_MAX_CHANGE_BYTES;
  }

  /**
   * Writes a consistent snapshot in parts; returns its revision. When the last part is handed to
   * the transport, logs where the time went: from the call's arrival (`arrived`) to the snapshot
   * in hand (framed from memory, or read from the database), and on to the last part written.
   */
  private async writeSnapshot(call: Call, arrived = performance.now()): Promise<number> {
    const t0 = performance.now();
    // From memory: consistent at the feed's revision, and this stream subscribed to the feed
    // before this synchronous call, so every later change reaches its queue.
    const framed = this.mirror?.snapshot();
    let revision: number;
    let events: EncodedWatchEvent[];
    if (framed) {
      revision = framed.revision;
      events = framed.events;
    } else {
      const read = await readSnapshotBodies(
        this.db,
        this.opts.snapshotPartBytes ?? DEFAULT_SNAPSHOT_PART_BYTES,
      );
      revision = read.revision;
      if (call.writableEnded || call.destroyed) return revision; // closed while reading
      // Framed from the stored encodings (the stream's definition passes them through as they are).
      events = read.parts.map((bodies, i) =>
        encodeSnapshotEvent(i === read.parts.length - 1 ? "snapshot" : "snapshotPart", revision, bodies),
      );
    }
    const ready = performance.now();
    let bytes = 0;
    for (const [i, ev] of events.entries()) {
      bytes += ev.bytes.length;
      const last = i === events.length - 1;
      call.write(
        ev as unknown as topologypb.WatchTopologyResponse,
        last
          ? (err?: Error | null) => {
              if (err) return; // the stream failed first: its error is the stream's to report
              const ms = (t: number) => Math.round(t * 10) / 10;
              this.log.info(
                {
                  host: call.request.hostId,
                  revision,
                  from: framed ? "memory" : "database",
                  messages: events.length,
                  bytes,
                  waitMs: ms(t0 - arrived),
                  readMs: ms(ready - t0),
                  writeMs: ms(performance.now() - ready),
                },
                "snapshot sent",
              );
            }
          : undefined,
      );
    }
    return revision;
  }
}

/**
 * Ends a stream with an error status after what was already written (grpc-js turns an 'error'
 * event into the status), and frees it outright if the peer does not read that far in time.
 */
function endWithError(call: Call, err: Error): void {
  call.emit("error", err);
  const timer = setTimeout(() => call.destroy(), 10_000);
  timer.unref();
  call.once("finish", () => clearTimeout(timer));
  call.once("close", () => clearTimeout(timer));
}

export function grpcError(code: status, message: string): Error & { code: status; details: string } {
  return Object.assign(new Error(message), { code, details: message });
}
