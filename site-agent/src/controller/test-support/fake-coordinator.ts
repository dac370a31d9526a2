// An in-process SiteSyncService standing in for the coordinator in controller tests: serves a
// scripted intent log from any index (changes, progress, or a snapshot when asked to start
// before its first retained entry), records acks and realized reports, and can be stopped and
// restarted on the same port.
import { Server, ServerCredentials, type ServerWritableStream, status } from "@grpc/grpc-js";
import {
  type intentpb,
  type StartedServer,
  silentLogger,
  sitesyncpb,
  startGrpcServer,
} from "@isthmus/schema";

type WatchCall = ServerWritableStream<sitesyncpb.WatchIntentRequest, sitesyncpb.WatchIntentResponse>;

export class FakeCoordinator {
  readonly log: intentpb.IntentChange[] = [];
  /** When set, watchers starting before this index get this snapshot first. */
  snapshot: intentpb.IntentSnapshot | undefined;
  /** Objects per snapshot part for watchers that ask for parts (isthmus-snapshot-parts: 1). */
  snapshotPartObjects = 0;
  /** Whether each watch call asked for snapshot parts, in order. */
  readonly askedForParts: boolean[] = [];
  /** The isthmus-snapshot-after-lag each watch call carried ("" = none), in order. */
  readonly askedLag: string[] = [];
  /** Whether each watch call asked for leader hints (isthmus-leader-hints: 1), and its from_index. */
  readonly askedLeaderHints: boolean[] = [];
  readonly watchedFrom: number[] = [];
  readonly acks: number[] = [];
  readonly reports: sitesyncpb.ReportRealizedRequest[] = [];
  private watchers = new Set<{ call: WatchCall; next: number }>();
  private server: StartedServer | undefined;
  port = 0;

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const server = new Server();
    const impl: sitesyncpb.SiteSyncServiceServer = {
      join: (_call, cb) => cb({ code: status.UNIMPLEMENTED, details: "fake coordinator: no Join" }),
      watchIntent: (call: WatchCall) => this.watch(call),
      ack: (call, cb) => {
        this.acks.push(call.request.appliedIndex);
        cb(null, {});
      },
      reportRealized: (call, cb) => {
        this.reports.push(call.request);
        cb(null, { index: 0 });
      },
    };
    server.addService(sitesyncpb.SiteSyncServiceService, impl);
    this.server = await startGrpcServer(
      server,
      `127.0.0.1:${this.port}`,
      ServerCredentials.createInsecure(),
      silentLogger(),
    );
    this.port = this.server.port;
  }

  async stop(): Promise<void> {
    for (const w of this.watchers) w.call.destroy(new Error("coordinator stopped"));
    this.watchers.clear();
    this.server?.server.forceShutdown();
    this.server = undefined;
  }

  /** Appends an entry and streams it to every watcher. */
  append(change: intentpb.IntentChange): void {
    this.log.push(change);
    for (const w of this.watchers) this.pump(w);
  }

  /** Open watch streams. */
  get watching(): number {
    return this.watchers.size;
  }

  /** Tells every watcher where the leader is ("" = here). */
  leader(address: string): void {
    for (const w of this.watchers) w.call.write({ leaderAddress: address });
  }

  /** Streams a progress event (entries with nothing for sites, e.g. acks) up to `index`. */
  progress(index: number): void {
    for (const w of this.watchers) {
      w.call.write({ progressIndex: index });
      w.next = Math.max(w.next, index + 1);
    }
  }

  private watch(call: WatchCall): void {
    const from = call.request.fromIndex;
    const w = { call, next: from + 1 };
    const parts = call.metadata.get("isthmus-snapshot-parts")[0] === "1";
    this.askedForParts.push(parts);
    this.askedLag.push(String(call.metadata.get("isthmus-snapshot-after-lag")[0] ?? ""));
    this.askedLeaderHints.push(call.metadata.get("isthmus-leader-hints")[0] === "1");
    this.watchedFrom.push(from);
    if (this.snapshot && from < this.snapshot.index) {
      const { index, objects } = this.snapshot;
      const n = this.snapshotPartObjects;
      if (parts && n > 0) {
        for (let i = 0; i + n < objects.length; i += n)
          call.write({ snapshotPart: { index, objects: objects.slice(i, i + n) } });
        const rest = objects.length % n === 0 ? n : objects.length % n;
        call.write({ snapshot: { index, objects: objects.slice(objects.length - rest) } });
      } else call.write({ snapshot: this.snapshot });
      w.next = this.snapshot.index + 1;
    }
    this.watchers.add(w);
    call.on("cancelled", () => this.watchers.delete(w));
    call.on("close", () => this.watchers.delete(w));
    this.pump(w);
  }

  private pump(w: { call: WatchCall; next: number }): void {
    for (const c of this.log) {
      if (c.index < w.next) continue;
      w.call.write({ change: c });
      w.next = c.index + 1;
    }
  }
}
