// Clients for multi-site benchmarks: an admin writing to the coordinator leader
// (FederationService), a site operator (SiteService with the site admin token), and an agent's
// TopologyService.Watch stream (host token) that timestamps every rule as it arrives.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import {
  type CallOptions,
  type ChannelOptions,
  credentials,
  Metadata,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import {
  federationpb,
  intentpb,
  mallocHugePagesEnv,
  type PauseReport,
  sitepb,
  topologypb,
  wallNow,
} from "@isthmus/schema";
import {
  type EntryTiming,
  firstSnapshot,
  type RuleSnapshot,
  snapshotEncodedBytes,
} from "@isthmus/site-agent";

type Unary<Req, Res> = (
  req: Req,
  md: Metadata,
  opts: Partial<CallOptions>,
  cb: (err: ServiceError | null, res: Res) => void,
) => unknown;

function bearer(token: string): Metadata {
  const md = new Metadata();
  md.set("authorization", `Bearer ${token}`);
  return md;
}

function call<C, Req, Res>(client: C, f: (c: C) => Unary<Req, Res>, req: Req, md: Metadata, ms: number) {
  return new Promise<Res>((resolve, reject) =>
    f(client).call(client, req, md, { deadline: Date.now() + ms }, (err, r) =>
      err ? reject(err) : resolve(r),
    ),
  );
}

const OBJECT_KINDS: Record<string, intentpb.ObjectKind> = {
  network: intentpb.ObjectKind.OBJECT_KIND_NETWORK,
  securityGroup: intentpb.ObjectKind.OBJECT_KIND_SECURITY_GROUP,
  securityGroupRule: intentpb.ObjectKind.OBJECT_KIND_SECURITY_GROUP_RULE,
  router: intentpb.ObjectKind.OBJECT_KIND_ROUTER,
};

/** Writes go to the leader (found with Status, re-found after UNAVAILABLE), as an admin's CLI does. */
export class FederationAdmin {
  private readonly clients: federationpb.FederationServiceClient[];
  private leader = 0;

  constructor(
    readonly addresses: string[],
    private readonly token: string,
  ) {
    this.clients = addresses.map(
      (a) => new federationpb.FederationServiceClient(a, credentials.createInsecure()),
    );
  }

  async status(): Promise<federationpb.StatusResponse> {
    return call(this.clients[this.leader]!, (c) => c.status, {}, bearer(this.token), 5_000);
  }

  /** Points writes at the current leader; waits (bounded) for one to be known. */
  async findLeader(): Promise<void> {
    const end = Date.now() + 30_000;
    while (Date.now() < end) {
      for (const c of this.clients) {
        const st = await call(c, (x) => x.status, {}, bearer(this.token), 2_000).catch(() => undefined);
        const i = st ? this.addresses.indexOf(st.leaderAddress) : -1;
        if (i >= 0) {
          this.leader = i;
          return;
        }
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error("no coordinator leader within 30 s");
  }

  /**
   * Create one object; retried on the new leader after UNAVAILABLE (an election). Such a failure
   * leaves the outcome unknown: when the retry finds the name taken, the first attempt committed,
   * and the object is read back by name (its response then carries index 0).
   */
  async create(object: intentpb.IntentObject): Promise<federationpb.ObjectResponse> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call(
          this.clients[this.leader]!,
          (c) => c.create,
          { object },
          bearer(this.token),
          30_000,
        );
      } catch (err) {
        const se = err as ServiceError;
        const existing =
          attempt > 0 && se.code === status.ALREADY_EXISTS ? await this.getByName(object) : undefined;
        if (existing) return { object: existing, index: 0 };
        if (attempt >= 5 || (se.code !== status.UNAVAILABLE && se.code !== status.DEADLINE_EXCEEDED))
          throw err;
        await this.findLeader();
      }
    }
  }

  private async getByName(object: intentpb.IntentObject): Promise<intentpb.IntentObject | undefined> {
    const field = Object.keys(object).find((k) => (object as Record<string, unknown>)[k] !== undefined);
    const kind = field ? OBJECT_KINDS[field] : undefined;
    const name = field
      ? (object as Record<string, { meta?: intentpb.ObjectMeta }>)[field]?.meta?.name
      : undefined;
    if (kind === undefined || !name) return undefined;
    const r = await call(
      this.clients[this.leader]!,
      (c) => c.get,
      { kind, id: "", name },
      bearer(this.token),
      30_000,
    );
    return r.object;
  }

  close(): void {
    for (const c of this.clients) c.close();
  }
}

/** SiteService with the site's admin token. */
export class SiteApi {
  private readonly client: sitepb.SiteServiceClient;

  constructor(
    readonly address: string,
    private readonly token: string,
  ) {
    this.client = new sitepb.SiteServiceClient(address, credentials.createInsecure());
  }

  registerHost(name: string): Promise<sitepb.RegisterHostResponse> {
    const req = sitepb.RegisterHostRequest.fromPartial({
      name,
      tunnelIp: "127.0.0.1",
      role: topologypb.HostRole.HOST_ROLE_HOST,
    });
    return this.write((c) => c.registerHost, req);
  }

  createPort(req: Partial<sitepb.CreatePortRequest>): Promise<sitepb.PortResponse> {
    return this.write((c) => c.createPort, sitepb.CreatePortRequest.fromPartial(req));
  }

  /**
   * A write, retried while the controller is not (yet, or for a moment) holding its lease —
   * UNAVAILABLE, as at start-up before the lease is taken — as an operator's client would.
   */
  private async write<Req, Res>(f: (c: sitepb.SiteServiceClient) => Unary<Req, Res>, req: Req): Promise<Res> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call(this.client, f, req, bearer(this.token), 30_000);
      } catch (err) {
        if ((err as ServiceError).code !== status.UNAVAILABLE || attempt >= 120) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  status(): Promise<sitepb.SiteStatusResponse> {
    return call(this.client, (c) => c.status, {}, bearer(this.token), 10_000);
  }

  close(): void {
    this.client.close();
  }
}

/**
 * An agent's watch stream at one site. Records when each rule (by the intent object it came
 * from) first arrives while `recording` (Unix ms, fractional, comparable with the controllers'
 * entry timings), and the newest revision seen. The channel has the
 * grpc-js defaults, as the site agent's own watch client does, unless `channelOptions` says else.
 */
export class AgentWatch {
  readonly arrivals = new Map<string, number>();
  recording = false;
  revision = -1;
  error: string | undefined;
  /** Called with each rule's first arrival while recording (a watcher process reports it). */
  onArrival: ((intentId: string, at: number) => void) | undefined;
  /** Called after every event with the revision it brought. */
  onRevision: ((revision: number) => void) | undefined;
  private readonly client: topologypb.TopologyServiceClient;
  private readonly stream: ReturnType<topologypb.TopologyServiceClient["watch"]>;

  constructor(
    readonly site: string,
    address: string,
    hostId: string,
    hostToken: string,
    channelOptions: ChannelOptions = {},
  ) {
    this.client = new topologypb.TopologyServiceClient(address, credentials.createInsecure(), channelOptions);
    this.stream = this.client.watch({ hostId, fromRevision: 0 }, bearer(hostToken));
    this.stream.on("data", (e: topologypb.WatchTopologyResponse) => {
      const now = wallNow();
      if (e.snapshot) {
        this.revision = e.snapshot.revision;
      } else if (e.change) {
        this.revision = e.change.revision;
        if (this.recording) {
          for (const o of e.change.upserts) {
            if (o.rule?.intentId && !this.arrivals.has(o.rule.intentId)) {
              this.arrivals.set(o.rule.intentId, now);
              this.onArrival?.(o.rule.intentId, now);
            }
          }
        }
      }
      this.onRevision?.(this.revision);
    });
    this.stream.on("error", (err: Error & { code?: number }) => {
      if (err.code !== status.CANCELLED) {
        this.error = err.message;
        this.onRevision?.(this.revision);
      }
    });
  }

  close(): void {
    this.stream.cancel();
    this.client.close();
  }
}

/** Counts what a topology snapshot holds, by kind (its packed rules as rules). */
export function countSnapshot(s: RuleSnapshot): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of s.objects) {
    const kind = Object.keys(o).find((k) => (o as Record<string, unknown>)[k] !== undefined) ?? "unknown";
    counts[kind] = (counts[kind] ?? 0) + 1;
  }
  if (s.packedRules) counts.rule = (counts.rule ?? 0) + s.packedRules.count;
  return counts;
}

/**
 * An agent's first snapshot (the agent's own watch client into its store and simulator view),
 * timed and counted; `cpuMs` is the process's CPU time until it was applied (not the counting
 * after, whose encoding reads every rule the agent left unread).
 */
export async function timeSnapshot(
  address: string,
  hostId: string,
  hostToken: string,
): Promise<{ ms: number; counts: Record<string, number>; bytes: number; parts: number; cpuMs: number }> {
  const cpu0 = process.cpuUsage();
  const r = await firstSnapshot(address, hostId, hostToken);
  const cpu = process.cpuUsage(cpu0);
  return {
    ms: r.ms,
    counts: countSnapshot(r.snapshot),
    bytes: snapshotEncodedBytes(r.snapshot),
    parts: r.parts,
    cpuMs: Math.round((cpu.user + cpu.system) / 1000),
  };
}

export interface SnapshotTiming {
  ms: number;
  counts: Record<string, number>;
  bytes: number;
  parts: number;
  /** CPU time of the child process from before its Watch call until the snapshot was applied. */
  cpuMs: number;
}

/**
 * timeSnapshot in a fresh process (snapshot-child.ts): what a new agent pays — cold JIT, a heap
 * growing from nothing — rather than the benchmark process warmed by earlier tries.
 */
export function timeSnapshotFresh(
  address: string,
  hostId: string,
  hostToken: string,
  timeoutMs = 180_000,
): Promise<SnapshotTiming> {
  const child = fileURLToPath(new URL("./snapshot-child.js", import.meta.url));
  return new Promise((resolve, reject) => {
    // In the environment an agent runs in (agent.ts: agentReexec — malloc's huge pages).
    const p = spawn(process.execPath, [child, address, hostId, hostToken], {
      stdio: ["ignore", "pipe", "inherit"],
      env: mallocHugePagesEnv(process.env),
    });
    let out = "";
    const timer = setTimeout(() => {
      p.kill("SIGKILL");
      reject(new Error(`snapshot child gave no result within ${timeoutMs} ms`));
    }, timeoutMs);
    p.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    p.on("exit", (code, signal) => {
      clearTimeout(timer);
      const line = out.trim().split("\n").pop() ?? "";
      if (code !== 0 || !line.startsWith("{")) {
        reject(new Error(`snapshot child exited (${signal ?? code}) without a result`));
        return;
      }
      resolve(JSON.parse(line) as SnapshotTiming);
    });
  });
}

/** Totals of a site controller's intent entry stage histogram (seconds, entries). */
export interface EntryStageTotals {
  waitSum: number;
  applySum: number;
  count: number;
}

/** Reads `isthmus_site_intent_entry_seconds` from a controller's Prometheus endpoint. */
export async function scrapeEntryStages(metricsAddress: string): Promise<EntryStageTotals> {
  const res = await fetch(`http://${metricsAddress}/metrics`, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`GET http://${metricsAddress}/metrics: ${res.status}`);
  const text = await res.text();
  const value = (series: string) => {
    const line = text.split("\n").find((l) => l.startsWith(series));
    return line ? Number(line.slice(series.length).trim()) : 0;
  };
  return {
    waitSum: value('isthmus_site_intent_entry_seconds_sum{stage="wait"}'),
    applySum: value('isthmus_site_intent_entry_seconds_sum{stage="apply"}'),
    count: value('isthmus_site_intent_entry_seconds_count{stage="apply"}'),
  };
}

/** One intent entry's times at a site (Unix ms): the controller's own record of it. */
export type SiteEntryTiming = EntryTiming;

/** A controller's recent intent entry timings above `afterIndex` (its `/debug/intent-entries`). */
export async function fetchEntryTimings(
  metricsAddress: string,
  afterIndex: number,
): Promise<SiteEntryTiming[]> {
  const url = `http://${metricsAddress}/debug/intent-entries?after=${afterIndex}`;
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  return (await res.json()) as SiteEntryTiming[];
}

/** A process's GC pauses and event-loop stalls that ended after Unix ms `after` (`/debug/pauses`). */
export async function fetchPauses(metricsAddress: string, after: number): Promise<PauseReport> {
  const url = `http://${metricsAddress}/debug/pauses?after=${after}`;
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  return (await res.json()) as PauseReport;
}
