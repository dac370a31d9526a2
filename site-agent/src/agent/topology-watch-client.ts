// Keeps the agent's topology copy current from the site controller's TopologyService.Watch: a
// snapshot, then ordered changes; after a disconnect it resumes from the last applied revision
// (the controller answers with the missed changes, or a fresh snapshot). Events are applied on the
// event loop between packet batches; nothing on the packet path waits for the controller.
import { credentials, Metadata, status } from "@grpc/grpc-js";
import { componentLogger, type Logger, topologypb } from "@isthmus/schema";
import type { RuleSnapshot } from "../sim/packed-rules.js";
import { type DecodedSnapshot, joinSnapshot, snapshotSize } from "./snapshot-rules.js";
import { WatchEventDecoder } from "./watch-event-decoder.js";

export interface TopologySink {
  readonly revision: number;
  readonly ready: boolean;
  /** A whole snapshot, its rules packed (snapshot-rules.ts). */
  applySnapshot(s: RuleSnapshot): void;
  applyChange(c: topologypb.TopologyChange): void;
}

export interface WatchClientOptions {
  address: string;
  hostId: string;
  token?: () => string | undefined;
  sink: TopologySink;
  log: Logger;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Objects (rules included) a snapshot sent in parts may add up to before the stream is refused (2 000 000). */
  maxSnapshotObjects?: number;
  /** HTTP/2 receive window (bytes the controller may send ahead of what was read; 8 MiB). */
  flowControlWindowBytes?: number;
}

/**
 * With HTTP/2's default 64 KiB window a snapshot of tens of MB crawls: the controller stops every
 * 64 KiB until the agent, busy decoding the previous part, reads on. 8 MiB lets the transfer run
 * alongside the decoding (a 27 MB snapshot: ~0.3 s of transfer down to ~0.07 s) and bounds what
 * a stream may buffer unread.
 */
export const DEFAULT_WATCH_FLOW_CONTROL_WINDOW = 8 * 1024 * 1024;

const WATCH_PATH = topologypb.TopologyServiceService.watch.path;

export class TopologyWatchClient {
  private readonly client: topologypb.TopologyServiceClient;
  private call: ReturnType<topologypb.TopologyServiceClient["watch"]> | undefined;
  /** Reads events with shared strings and conditions (watch-event-decoder.ts). */
  private readonly decoder = new WatchEventDecoder();
  private timer: NodeJS.Timeout | undefined;
  private backoff: number;
  private stopped = false;
  /** Parts of a snapshot received so far (the controller sends large ones in parts). */
  private partial: { revision: number; parts: DecodedSnapshot[]; objects: number } | undefined;
  private readonly log: Logger;
  connected = false;
  readonly stats = {
    connects: 0,
    snapshots: 0,
    /** Snapshot messages (parts and last parts) received. */
    snapshotMessages: 0,
    changes: 0,
    heartbeats: 0,
    errors: 0,
    resyncs: 0,
  };
  lastError = "";
  onStatus?: (connected: boolean, detail: string) => void;

  constructor(private readonly o: WatchClientOptions) {
    this.client = new topologypb.TopologyServiceClient(o.address, credentials.createInsecure(), {
      "grpc-node.flow_control_window": o.flowControlWindowBytes ?? DEFAULT_WATCH_FLOW_CONTROL_WINDOW,
    });
    this.backoff = o.minBackoffMs ?? 200;
    this.log = componentLogger(o.log, "topology-watch", { controller: o.address });
  }

  start(): void {
    this.connect(false);
  }

  private connect(forceSnapshot: boolean): void {
    if (this.stopped) return;
    const fromRevision = !forceSnapshot && this.o.sink.ready ? this.o.sink.revision : 0;
    const md = new Metadata();
    const token = this.o.token?.();
    if (token) md.set("authorization", `Bearer ${token}`);
    this.stats.connects++;
    this.partial = undefined;
    // The generated stub's Watch, with the agent's own event decoder.
    const call = this.client.makeServerStreamRequest(
      WATCH_PATH,
      (req: topologypb.WatchTopologyRequest) =>
        Buffer.from(topologypb.WatchTopologyRequest.encode(req).finish()),
      (bytes: Buffer) => this.decoder.decode(bytes),
      { hostId: this.o.hostId, fromRevision },
      md,
    );
    this.call = call;
    call.on("data", (ev: ReturnType<WatchEventDecoder["decode"]>) => {
      if (this.call !== call) return;
      if (!this.connected) {
        this.connected = true;
        this.backoff = this.o.minBackoffMs ?? 200;
        this.onStatus?.(true, "");
        this.log.info({ fromRevision }, "watching topology");
      }
      try {
        this.onEvent(ev);
      } catch (err) {
        // A gap or an object the copy cannot take: start over from a snapshot.
        this.stats.resyncs++;
        this.log.warn({ err }, "topology stream inconsistent; resyncing from a snapshot");
        call.cancel();
        this.retry(true);
      }
    });
    call.on("error", (err: Error & { code?: number }) => {
      if (this.call !== call) return;
      if (err.code === status.CANCELLED && this.stopped) return;
      this.stats.errors++;
      this.lastError = err.message;
      this.log.warn({ err: err.message, code: err.code }, "topology watch failed; retrying");
      this.retry(false);
    });
    call.on("end", () => {
      if (this.call !== call) return;
      this.retry(false);
    });
  }

  private onEvent(ev: ReturnType<WatchEventDecoder["decode"]>): void {
    if (ev.snapshotPart) {
      this.stats.snapshotMessages++;
      this.assemble(ev.snapshotPart, false);
    } else if (ev.snapshot) {
      this.stats.snapshotMessages++;
      this.stats.snapshots++;
      this.o.sink.applySnapshot(this.assemble(ev.snapshot, true)!);
    } else if (this.partial) {
      throw new Error(`snapshot at revision ${this.partial.revision} interrupted before its last part`);
    } else if (ev.change) {
      if (ev.change.revision <= this.o.sink.revision) return; // a replay we already applied
      this.stats.changes++;
      this.o.sink.applyChange(ev.change);
    } else if (ev.heartbeatRevision !== undefined) {
      this.stats.heartbeats++;
      if (this.o.sink.ready && ev.heartbeatRevision < this.o.sink.revision) {
        throw new Error(
          `controller is at revision ${ev.heartbeatRevision}, behind ours (${this.o.sink.revision})`,
        );
      }
    }
  }

  /** The whole snapshot once its last part is in; undefined while parts are still coming. */
  private assemble(part: DecodedSnapshot, last: boolean): RuleSnapshot | undefined {
    if (last && !this.partial) return joinSnapshot([part]);
    this.partial ??= { revision: part.revision, parts: [], objects: 0 };
    const acc = this.partial;
    if (acc.revision !== part.revision) {
      throw new Error(`snapshot parts of revisions ${acc.revision} and ${part.revision} mixed`);
    }
    const limit = this.o.maxSnapshotObjects ?? 2_000_000;
    const size = snapshotSize(part);
    if (acc.objects + size > limit) {
      throw new Error(`snapshot exceeds ${limit} objects (maxSnapshotObjects)`);
    }
    acc.parts.push(part);
    acc.objects += size;
    if (!last) return undefined;
    this.partial = undefined;
    return joinSnapshot(acc.parts);
  }

  private retry(forceSnapshot: boolean): void {
    if (this.stopped) return;
    this.call = undefined;
    if (this.connected) {
      this.connected = false;
      this.onStatus?.(false, this.lastError || "disconnected");
    }
    if (this.timer) return;
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, this.o.maxBackoffMs ?? 5000);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.connect(forceSnapshot);
    }, delay);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.call?.cancel();
    this.client.close();
  }
}
