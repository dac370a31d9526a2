// An in-process TopologyService for agent tests until (and besides) the real site controller:
// serves a snapshot at the current revision or the changes after an agent's revision, streams
// later changes, and can cut every stream to exercise resume. RegisterHost (SiteService) too, when
// given an admin token.
import {
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import { sitepb, topologypb } from "@isthmus/schema";

type Call = ServerWritableStream<topologypb.WatchTopologyRequest, topologypb.WatchTopologyResponse>;

export class FakeTopologyServer {
  private readonly server = new Server();
  private readonly streams = new Set<Call>();
  private objects = new Map<string, topologypb.TopologyObject>();
  private readonly changes: topologypb.TopologyChange[] = [];
  revision = 0;
  readonly requests: topologypb.WatchTopologyRequest[] = [];
  /** authorization metadata of each Watch call. */
  readonly watchAuth: string[] = [];
  /** When set, RegisterHost accepts this admin token and registers hosts into the topology. */
  adminToken: string | undefined;
  readonly registered: sitepb.RegisterHostRequest[] = [];
  port = 0;
  /** Objects per snapshot message (0 = the whole snapshot in one), as the controller splits large ones. */
  snapshotPartObjects = 0;

  constructor(initial: topologypb.TopologyObject[], revision = 1) {
    for (const o of initial) this.objects.set(idOf(o), o);
    this.revision = revision;
    this.server.addService(topologypb.TopologyServiceService, {
      watch: (call: Call) => this.watch(call),
    });
    this.server.addService(sitepb.SiteServiceService, {
      registerHost: (
        call: ServerUnaryCall<sitepb.RegisterHostRequest, sitepb.RegisterHostResponse>,
        cb: sendUnaryData<sitepb.RegisterHostResponse>,
      ) => this.registerHost(call, cb),
    } as unknown as sitepb.SiteServiceServer);
  }

  async start(): Promise<string> {
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    return `127.0.0.1:${this.port}`;
  }

  private registerHost(
    call: ServerUnaryCall<sitepb.RegisterHostRequest, sitepb.RegisterHostResponse>,
    cb: sendUnaryData<sitepb.RegisterHostResponse>,
  ): void {
    if (
      this.adminToken === undefined ||
      call.metadata.get("authorization")[0] !== `Bearer ${this.adminToken}`
    ) {
      cb({ code: status.UNAUTHENTICATED, details: "bad admin token" });
      return;
    }
    const r = call.request;
    this.registered.push(r);
    const existing = [...this.objects.values()].find((o) => o.host?.name === r.name)?.host;
    const host: topologypb.Host = {
      id: existing?.id ?? `host-${this.registered.length}`,
      name: r.name,
      tunnelIp: r.tunnelIp,
      tunnelPort: r.tunnelPort,
      role: r.role,
      alive: true,
      wanIp: r.wanIp,
      wanPort: r.wanPort,
    };
    this.push([{ host }]);
    cb(null, { host, hostToken: `host-token-${host.id}`, tokenExpiresUnixMs: 0 });
  }

  private watch(call: Call): void {
    this.requests.push(call.request);
    this.watchAuth.push(String(call.metadata.get("authorization")[0] ?? ""));
    const from = call.request.fromRevision;
    const oldest = this.changes[0]?.revision ?? this.revision + 1;
    if (from === 0 || from < oldest - 1 || from > this.revision) {
      const all = [...this.objects.values()];
      const n = this.snapshotPartObjects > 0 ? this.snapshotPartObjects : Math.max(1, all.length);
      for (let i = n; i < all.length; i += n) {
        call.write({ snapshotPart: { revision: this.revision, objects: all.slice(i - n, i) } });
      }
      const lastStart = all.length === 0 ? 0 : Math.floor((all.length - 1) / n) * n;
      call.write({ snapshot: { revision: this.revision, objects: all.slice(lastStart) } });
    } else {
      for (const c of this.changes) if (c.revision > from) call.write({ change: c });
    }
    this.streams.add(call);
    call.on("cancelled", () => this.streams.delete(call));
    call.on("close", () => this.streams.delete(call));
  }

  /** Commits a change and streams it to every watcher. */
  push(
    upserts: topologypb.TopologyObject[],
    deletes: topologypb.TopologyRef[] = [],
  ): topologypb.TopologyChange {
    const change = { revision: ++this.revision, upserts, deletes };
    for (const o of upserts) this.objects.set(idOf(o), o);
    for (const d of deletes) this.objects.delete(d.id);
    this.changes.push(change);
    for (const s of this.streams) s.write({ change });
    return change;
  }

  /** Ends every open stream (as a controller restart would). */
  dropStreams(): void {
    for (const s of this.streams) s.end();
    this.streams.clear();
  }

  get openStreams(): number {
    return this.streams.size;
  }

  stop(): Promise<void> {
    for (const s of this.streams) s.end();
    return new Promise((resolve) => this.server.tryShutdown(() => resolve()));
  }
}

function idOf(o: topologypb.TopologyObject): string {
  for (const v of Object.values(o)) if (v && typeof v === "object" && "id" in v) return String(v.id);
  throw new Error("topology object without an id");
}

export { topologypb };
