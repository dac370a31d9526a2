// `npm run bench -- propagation`: how fast an admin's write reaches the agents of every site. A
// 3-node coordinator group (`isthmus coordinator` processes) and 2, then 4 sites (each an
// `isthmus site-controller` process on its own embedded PostgreSQL), each with an agent's
// TopologyService.Watch stream (host token). A change is one new security-group rule; its latency
// runs from the Create RPC's return (the leader has committed and applied it; the response
// carries the commit index) to the rule arriving in the watch stream of every site. Then the same
// with 1k, 10k and 100k objects bulk-loaded through the API, and an agent's first snapshot of a
// site with 10k ports and over 100k rules.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { auth } from "@isthmus/federation";
import {
  attributePauses,
  intentpb,
  PauseRecorder,
  type PauseReport,
  type ProcessPause,
  wallNow,
} from "@isthmus/schema";
import { AgentWatchProcess } from "../harness/agent-watch-process.js";
import {
  type EntryStageTotals,
  FederationAdmin,
  fetchEntryTimings,
  fetchPauses,
  SiteApi,
  type SiteEntryTiming,
  scrapeEntryStages,
} from "../harness/bench-clients.js";
import { runCli } from "../harness/cli.js";
import { CoordinatorGroup } from "../harness/coordinator-group.js";
import { onboardSite, SiteProcess } from "../harness/site-process.js";
import { DEFAULT_QUIET, notQuietWhy, type QuietResult, waitMachineQuiet } from "./machine-quiet.js";
import { type SnapshotResult, snapshotMarkdown, snapshotStep } from "./propagation-snapshot.js";

export interface PropagationBenchOptions {
  quick: boolean;
  resultsFile?: string;
  docsFile?: string;
  /** Sites running in the first phase, then in all later ones. */
  sites?: [number, number];
  /** Changes timed per phase. */
  changes?: number;
  /** Objects bulk-loaded into the federation before each later phase (cumulative totals). */
  sizes?: number[];
  /** VM ports created at the first site before its snapshot is timed (0 = skip). */
  snapshotPorts?: number;
  /** Called with the results so far after every phase (a long run keeps what it measured). */
  onProgress?: (r: PropagationResult) => void;
  /** Extra node flags for the site-controller processes (e.g. --cpu-prof). */
  siteNodeArgs?: string[];
}

export interface Stats {
  p50: number;
  p99: number;
  max: number;
  mean: number;
}

export interface PhaseResult {
  sites: number;
  /** Objects in the federation's intent (bulk-loaded plus the benchmark's own). */
  stateObjects: number;
  changes: number;
  /** Create's return → the rule in the watch stream of the slowest site (ms). */
  commitToEverySite: Stats;
  /** Create's call → the same arrival (adds the raft commit). */
  requestToEverySite: Stats;
  /** The Create RPC alone (propose, replicate, commit, apply, respond). */
  commit: Stats;
  perSite: Record<string, Stats>;
  /**
   * Where the time goes, mean ms per change: at each site (its own histogram) the entry's wait
   * in the write queue and its apply (translate + one SERIALIZABLE transaction + commit); the
   * rest of commit → every site is the coordinator's stream to the site and the site's watch
   * stream to the agent (the change reaches this replica's watchers at commit, without a read).
   */
  stages?: { siteWaitMs: number; siteApplyMs: number; commitToEverySiteMeanMs: number; otherMs: number };
  /** Per change and site, where the time went (see ChangeTimeline). */
  timeline?: ChangeTimeline;
  /** Which processes were paused (GC, event-loop stalls) during the phase and its slow changes. */
  pauses?: PhasePauses;
  /** The wait before the phase for the machine to be quiet (machine-quiet.ts), and whether it got quiet. */
  quietBefore?: QuietResult;
  load1: number;
}

/** One process's pauses during a phase's changes (GC pauses of 1 ms or more, stalls of 5 ms or more). */
export interface ProcessPauseStats {
  gcCount: number;
  gcMs: number;
  majorGcCount: number;
  maxGcMs: number;
  stallCount: number;
  stallMs: number;
  maxStallMs: number;
  /** CPU ms (user + system) the process used during the phase, per change (load does not stretch it). */
  cpuMsPerChange?: number;
}

/**
 * Pauses of every process during a phase, from the coordinators' and controllers' `/debug/pauses`,
 * the agents' watcher processes and the benchmark's own recorder: c1..c3 (coordinators), siteN
 * (controllers), siteN-agent (the watch stream's process), bench (this process: sends the
 * Creates and stamps their return).
 */
export interface PhasePauses {
  processes: Record<string, ProcessPauseStats>;
  /**
   * Every change over the goal: the ms of its way (Create's return → last arrival) that each
   * process's event-loop stalls and GC pauses covered (processes with none left out), and the
   * process that covered most of it (`by`; "none" under PAUSE_ATTRIBUTION_MIN_MS; "machine" when
   * half the processes or more were each paused that long in it — CPU contention, not one heap).
   */
  slow: {
    index: number;
    everySiteMs: number;
    by: string;
    paused: Record<string, { stallMs: number; gcMs: number }>;
  }[];
  /** Changes over the goal counted by `by`. */
  overGoalBy: Record<string, number>;
  /** Processes whose pauses could not be read (and why). */
  missing: string[];
}

/** The segments of one change's way to one site's agent; they add up to commit → that agent. */
export const SEGMENTS = ["stream", "wait", "translate", "write", "commit", "watch"] as const;
export type Segment = (typeof SEGMENTS)[number];

/**
 * Each measured change's way to every site, from the controllers' entry timings
 * (`/debug/intent-entries`) and the agents' arrival times, all Unix ms on this one machine:
 * *stream* — the Create RPC's return until the entry reached the site (the coordinator the site
 * follows learning the commit, applying it and streaming it; the site's event loop getting to
 * it); *wait* — queued behind the site's other writes; *translate* — into topology, in memory;
 * *write* — the SERIALIZABLE transaction up to COMMIT (BEGIN, the lease fence, the statements:
 * round trips to the database); *commit* — COMMIT and the database's WAL flush; *watch* — the
 * committed change handed to this replica's watchers until it arrived in the agent's stream.
 */
export interface ChangeTimeline {
  /** Unix ms the phase's first change was sent. */
  startedAtUnixMs: number;
  sites: string[];
  /** Which coordinator each site streamed intent from (at the phase's end), and the leader. */
  follows: Record<string, string>;
  leader: string;
  /**
   * One row per change: [log index, ms from the phase start to the Create RPC's return, Create RPC
   * ms, commit → every site ms, then per site (in `sites` order) its SEGMENTS in ms]. A site's
   * are null when its timing for the entry is missing.
   */
  columns: string;
  rows: (number | null)[][];
  /** Percentiles of each segment over every (change, site) pair. */
  segments: Record<Segment, Stats>;
  /** The slowest changes (commit → every site), the slowest site's segments each. */
  slowest: SlowChange[];
  /**
   * Changes slower than the p99 goal at the slowest site, counted by that site's largest
   * segment.
   */
  overGoalBy: Record<Segment, number>;
}

export interface SlowChange {
  index: number;
  atMs: number;
  everySiteMs: number;
  site: string;
  segments: Record<Segment, number>;
}

export type { SnapshotResult } from "./propagation-snapshot.js";

export interface PropagationResult {
  benchmark: "propagation";
  date: string;
  quick: boolean;
  machine: { cpus: number; model: string; node: string };
  loadAverage: { start: number[]; end: number[] };
  measuredFrom: string;
  phases: PhaseResult[];
  /** Phases that failed (the run keeps what it measured before). */
  errors: string[];
  /**
   * Each bulk load through the API; `settleSeconds` runs from its end until every site has
   * applied it all and every agent has it. Large loads run with the sites stopped, then started
   * again (settling is then their start and catch-up: from the journal, or from a snapshot in
   * parts when they are further behind than it keeps).
   */
  bulkLoad: {
    objects: number;
    seconds: number;
    perSecond: number;
    settleSeconds: number;
    /** Whether the sites were down during the load (large loads) or followed it live. */
    sitesStopped: boolean;
    /** VACUUM (ANALYZE) of every site's database after the sites caught up (s, one after another). */
    vacuumSeconds?: number;
    load1: number;
  }[];
  snapshot?: SnapshotResult;
  goals: {
    p99At4SitesMs: number;
    p99At4SitesRatio: number | null;
    costGrowthLargestVsSmallest: number | null;
    snapshot10kPortsMs: number;
    snapshotRatio: number | null;
  };
}

const root = fileURLToPath(new URL("../../../", import.meta.url));
const GOAL_P99_MS = 50;
const QUICK_QUIET_TIMEOUT_MS = 5_000;
const GOAL_SNAPSHOT_MS = 1000;
/** Sites this many entries or more behind ask for a snapshot (siteController.snapshotAfterLag). */
const SNAPSHOT_AFTER_LAG = 2_000;
/** Bulk loads of at least this many objects run with the sites stopped (see the phase loop). */
const STOP_SITES_FOR = 5_000;
/** Slowest changes of a phase kept with their breakdown (and printed). */
const SLOWEST_KEPT = 5;
/** A slow change is put down to a process's pauses when they covered at least this much of it. */
const PAUSE_ATTRIBUTION_MIN_MS = 10;

function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const at = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
  const r = (x: number) => Number(x.toFixed(2));
  return {
    p50: r(at(50)),
    p99: r(at(99)),
    max: r(s[s.length - 1]!),
    mean: r(s.reduce((a, b) => a + b, 0) / s.length),
  };
}

async function until(what: string, f: () => Promise<boolean> | boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await f()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A pool of `n` workers draining `tasks` in order. */
async function pool(n: number, count: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

interface RunningSite {
  name: string;
  proc: SiteProcess;
  api: SiteApi;
  hostId: string;
  hostToken: string;
  watch: AgentWatchProcess;
}

class Bench {
  readonly sites: RunningSite[] = [];
  /** Every controller process started, registered at once so a failure still stops them all. */
  private readonly procs: SiteProcess[] = [];
  objects = 0; // intent objects the benchmark created (sites included)
  private probeGroup = "";
  private readonly bulkGroups = new Map<number, string[]>();
  /** This process's own GC pauses and event-loop stalls (it stamps each Create's return). */
  private readonly ownPauses = new PauseRecorder({ size: 16_384 }).start();

  constructor(
    readonly base: string,
    readonly group: CoordinatorGroup,
    readonly admin: FederationAdmin,
    readonly siteNames: string[],
    readonly credentials: string[],
    private readonly siteNodeArgs: string[] | undefined,
  ) {}

  async startSite(i: number): Promise<void> {
    const name = this.siteNames[i]!;
    const proc = await SiteProcess.start({
      site: name,
      dir: join(this.base, name),
      credential: this.credentials[i]!,
      nodeArgs: this.siteNodeArgs,
      // A site restarted after a large bulk load catches up from a snapshot (one transaction)
      // rather than replaying thousands of entries a transaction each.
      // Each site is one replica on a shared machine: a lease of 10 s (renewed every 2 s) rather
      // than the 3 s default, as the site-controller tests run. With 3 s, at load ~20 the renewals
      // of a site catching up on 100k objects commit late (their WAL flush waits behind the
      // catch-up transaction's, in the same PostgreSQL): the lease flapped, writes were refused
      // as "standby", and the 100k step failed.
      env: {
        ISTHMUS_SITE_CONTROLLER__SNAPSHOT_AFTER_LAG: String(SNAPSHOT_AFTER_LAG),
        ISTHMUS_SITE_CONTROLLER__LEASE_TTL_MS: "10000",
        ISTHMUS_SITE_CONTROLLER__LEASE_RENEW_MS: "2000",
      },
    });
    this.procs.push(proc);
    const api = new SiteApi(proc.address, proc.adminToken);
    const host = await api.registerHost("bench-agent");
    const hostId = host.host!.id;
    // In its own process: the arrival times are taken there, not in this process's busy heap.
    const watch = new AgentWatchProcess(name, proc.address, hostId, host.hostToken);
    this.sites.push({ name, proc, api, hostId, hostToken: host.hostToken, watch });
    this.sites.sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * VACUUM (ANALYZE) of every running site's database, one after another (SiteProcess.vacuum);
   * returns the seconds in all.
   */
  async vacuumSites(): Promise<number> {
    let seconds = 0;
    for (const s of this.sites) seconds += await s.proc.vacuum();
    return seconds;
  }

  /** Stops every running site (their databases keep what they applied). */
  async stopSites(): Promise<number> {
    const n = this.sites.length;
    for (const s of this.sites) {
      s.watch.close();
      s.api.close();
    }
    await Promise.all(this.sites.map((s) => s.proc.stop()));
    for (const s of this.sites) this.procs.splice(this.procs.indexOf(s.proc), 1);
    this.sites.length = 0;
    return n;
  }

  /** Per-site totals of the intent entry stage histograms. */
  async stageTotals(): Promise<EntryStageTotals[]> {
    return Promise.all(
      this.sites.map((s) =>
        s.proc.metricsAddress
          ? scrapeEntryStages(s.proc.metricsAddress)
          : Promise.resolve({ waitSum: 0, applySum: 0, count: 0 }),
      ),
    );
  }

  /** Every running site has applied everything committed so far and its agent has it all. */
  async settle(timeoutMs: number): Promise<number> {
    const t0 = Date.now();
    const target = Number((await this.admin.status()).commitIndex);
    for (const s of this.sites) {
      await until(
        `${s.name} to apply index ${target} and its agent to catch up`,
        async () => {
          if (s.watch.error) throw new Error(`${s.name}: agent watch failed: ${s.watch.error}`);
          const st = await s.api.status();
          return Number(st.appliedIndex) >= target && s.watch.revision >= Number(st.topologyRevision);
        },
        timeoutMs,
      );
    }
    return (Date.now() - t0) / 1000;
  }

  async createProbeGroup(): Promise<void> {
    const r = await this.admin.create({ securityGroup: { meta: meta("bench-probe"), stateless: false } });
    this.objects++;
    this.probeGroup = r.object!.securityGroup!.meta!.id;
  }

  /** Times `changes` rule creations one after another, each until every site's agent has it. */
  async measure(label: string, changes: number): Promise<PhaseResult> {
    const everySite: number[] = [];
    const fromRequest: number[] = [];
    const commit: number[] = [];
    const perSite = new Map<string, number[]>(this.sites.map((s) => [s.name, []]));
    // Per change: its index, when the Create was sent and returned, and when each site's agent got it.
    const sent: { index: number; t0: number; t1: number; arrivals: number[] }[] = [];
    await Promise.all(this.sites.map((s) => s.watch.setRecording(true)));
    const before = await this.stageTotals().catch(() => undefined);
    const cpuBefore = await this.cpuTimes();
    const startedAt = wallNow();
    try {
      for (let i = 0; i < changes; i++) {
        for (const s of this.sites) s.watch.arrivals.clear();
        const t0 = wallNow();
        const res = await this.admin.create({
          securityGroupRule: {
            meta: meta(`probe-${label}-${i}`),
            securityGroupId: this.probeGroup,
            direction: intentpb.RuleDirection.RULE_DIRECTION_INGRESS,
            ethertype: intentpb.EtherType.ETHER_TYPE_IPV4,
            protocol: "tcp",
            portRangeMin: 1000 + i,
            portRangeMax: 1000 + i,
            remoteCidr: "",
            remoteGroupId: "",
          },
        });
        const t1 = wallNow();
        this.objects++;
        const id = res.object!.securityGroupRule!.meta!.id;
        await until(
          `rule ${id} at every site`,
          () => {
            for (const s of this.sites) if (s.watch.error) throw new Error(`${s.name}: ${s.watch.error}`);
            return this.sites.every((s) => s.watch.arrivals.has(id));
          },
          60_000,
        );
        const arrivals = this.sites.map((s) => s.watch.arrivals.get(id)!);
        for (const [k, s] of this.sites.entries()) perSite.get(s.name)!.push(arrivals[k]! - t1);
        const last = Math.max(...arrivals);
        everySite.push(last - t1);
        fromRequest.push(last - t0);
        commit.push(t1 - t0);
        sent.push({ index: Number(res.index), t0, t1, arrivals });
      }
    } finally {
      await Promise.all(this.sites.map((s) => s.watch.setRecording(false).catch(() => undefined)));
    }
    const endedAt = wallNow();
    const after = await this.stageTotals().catch(() => undefined);
    const timeline = await this.timeline(startedAt, sent).catch((err: Error) => {
      console.log(`    (no per-change timeline: ${err.message})`);
      return undefined;
    });
    const pauses = await this.pauses(startedAt, endedAt, sent, cpuBefore).catch((err: Error) => {
      console.log(`    (no process pauses: ${err.message})`);
      return undefined;
    });
    let stages: PhaseResult["stages"];
    if (before && after) {
      // Mean over the sites of each site's mean per entry (its entries are this phase's changes
      // plus the few health reports that arrived meanwhile).
      const mean = (f: (b: EntryStageTotals, a: EntryStageTotals) => number) =>
        after.reduce((sum, a, k) => sum + f(before[k]!, a), 0) / after.length;
      const per = (b: EntryStageTotals, a: EntryStageTotals, key: "waitSum" | "applySum") =>
        a.count > b.count ? ((a[key] - b[key]) / (a.count - b.count)) * 1000 : 0;
      const siteWaitMs = mean((b, a) => per(b, a, "waitSum"));
      const siteApplyMs = mean((b, a) => per(b, a, "applySum"));
      const total = everySite.reduce((x, y) => x + y, 0) / everySite.length;
      const r = (x: number) => Number(x.toFixed(2));
      stages = {
        siteWaitMs: r(siteWaitMs),
        siteApplyMs: r(siteApplyMs),
        commitToEverySiteMeanMs: r(total),
        otherMs: r(total - siteWaitMs - siteApplyMs),
      };
    }
    return {
      sites: this.sites.length,
      stateObjects: this.objects,
      changes,
      commitToEverySite: stats(everySite),
      requestToEverySite: stats(fromRequest),
      commit: stats(commit),
      perSite: Object.fromEntries([...perSite].map(([k, v]) => [k, stats(v)])),
      stages,
      timeline,
      pauses,
      load1: Number(loadavg()[0]!.toFixed(2)),
    };
  }

  /** Joins the changes' send and arrival times with each controller's timings of their entries. */
  private async timeline(
    startedAt: number,
    sent: { index: number; t0: number; t1: number; arrivals: number[] }[],
  ): Promise<ChangeTimeline | undefined> {
    if (sent.length === 0) return undefined;
    const first = Math.min(...sent.map((c) => c.index));
    const bySite = await Promise.all(
      this.sites.map(async (s) => {
        if (!s.proc.metricsAddress) throw new Error(`${s.name} has not said where its metrics are`);
        const ts = await fetchEntryTimings(s.proc.metricsAddress, first - 1);
        return new Map<number, SiteEntryTiming>(ts.map((t) => [t.index, t]));
      }),
    );
    const st = await this.admin.status();
    const coordinatorOf = (address: string) => {
      const k = this.group.addresses.indexOf(address);
      return k >= 0 ? `c${k + 1}` : address || "none";
    };
    const follows: Record<string, string> = {};
    for (const s of this.sites) follows[s.name] = coordinatorOf((await s.api.status()).federationAddress);
    const r1 = (x: number) => Math.round(x * 10) / 10;
    const rows: (number | null)[][] = [];
    const all = Object.fromEntries(SEGMENTS.map((g) => [g, [] as number[]])) as Record<Segment, number[]>;
    const slow: SlowChange[] = [];
    const overGoalBy = Object.fromEntries(SEGMENTS.map((g) => [g, 0])) as Record<Segment, number>;
    for (const c of sent) {
      const every = Math.max(...c.arrivals) - c.t1;
      const row: (number | null)[] = [c.index, r1(c.t1 - startedAt), r1(c.t1 - c.t0), r1(every)];
      let worst: { site: string; segments: Record<Segment, number>; total: number } | undefined;
      for (const [k, s] of this.sites.entries()) {
        const t = bySite[k]!.get(c.index);
        if (!t) {
          row.push(...SEGMENTS.map(() => null));
          continue;
        }
        const segments: Record<Segment, number> = {
          stream: t.receivedAt - c.t1,
          wait: t.startedAt - t.receivedAt,
          translate: t.translatedAt - t.startedAt,
          write: t.writtenAt - t.translatedAt,
          commit: t.committedAt - t.writtenAt,
          watch: c.arrivals[k]! - t.committedAt,
        };
        for (const g of SEGMENTS) {
          row.push(r1(segments[g]));
          all[g].push(segments[g]);
        }
        const total = c.arrivals[k]! - c.t1;
        if (!worst || total > worst.total) worst = { site: s.name, segments, total };
      }
      rows.push(row);
      if (!worst) continue;
      const w = worst;
      slow.push({
        index: c.index,
        atMs: r1(c.t1 - startedAt),
        everySiteMs: r1(every),
        site: w.site,
        segments: Object.fromEntries(SEGMENTS.map((g) => [g, r1(w.segments[g])])) as Record<Segment, number>,
      });
      if (every > GOAL_P99_MS) {
        const top = SEGMENTS.reduce((a, b) => (w.segments[b] > w.segments[a] ? b : a));
        overGoalBy[top]++;
      }
    }
    slow.sort((a, b) => b.everySiteMs - a.everySiteMs);
    return {
      startedAtUnixMs: Math.round(startedAt),
      sites: this.sites.map((s) => s.name),
      follows,
      leader: coordinatorOf(st.leaderAddress),
      columns: `index, ms since start, Create ms, commit→every site ms, then per site (${SEGMENTS.join(", ")}) ms`,
      rows,
      segments: Object.fromEntries(
        SEGMENTS.map((g) => [g, all[g].length > 0 ? stats(all[g]) : stats([Number.NaN])]),
      ) as Record<Segment, Stats>,
      slowest: slow.slice(0, SLOWEST_KEPT),
      overGoalBy,
    };
  }

  /** Every process's pause report (for its CPU time) from now on; unreadable ones left out. */
  private async cpuTimes(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const [name, r] of await this.pauseReads(wallNow()))
      if (r.status === "fulfilled") out.set(name, r.value.cpuMs);
    return out;
  }

  /** Each process's pauses that ended after Unix ms `startedAt` (and its CPU time), by name. */
  private async pauseReads(startedAt: number): Promise<[string, PromiseSettledResult<PauseReport>][]> {
    const reads: [string, Promise<PauseReport>][] = [
      ...Object.entries(this.group.metricsAddresses).map(([id, a]): [string, Promise<PauseReport>] => [
        id,
        fetchPauses(a, startedAt),
      ]),
      ...this.sites.flatMap((s): [string, Promise<PauseReport>][] => [
        [s.name, fetchPauses(s.proc.metricsAddress, startedAt)],
        [`${s.name}-agent`, s.watch.pauses(startedAt)],
      ]),
      ["bench", Promise.resolve(this.ownPauses.report(startedAt))],
    ];
    const settled = await Promise.allSettled(reads.map(([, r]) => r));
    return reads.map(([name], k) => [name, settled[k]!]);
  }

  /** Every process's pauses during the phase, and the slow changes they overlapped. */
  private async pauses(
    startedAt: number,
    endedAt: number,
    sent: { index: number; t1: number; arrivals: number[] }[],
    cpuBefore: Map<string, number>,
  ): Promise<PhasePauses> {
    const byProcess: Record<string, ProcessPause[]> = {};
    const cpuPerChange: Record<string, number> = {};
    const missing: string[] = [];
    for (const [name, read] of await this.pauseReads(startedAt)) {
      if (read.status === "rejected") {
        missing.push(`${name}: ${(read.reason as Error).message}`);
        continue;
      }
      const r = read.value;
      byProcess[name] = r.pauses.filter((p) => p.start < endedAt);
      const cpu0 = cpuBefore.get(name);
      // Read a little after the phase's end: the reads themselves cost next to nothing.
      if (cpu0 !== undefined && sent.length > 0) cpuPerChange[name] = (r.cpuMs - cpu0) / sent.length;
    }
    const r1 = (x: number) => Math.round(x * 10) / 10;
    const processes: Record<string, ProcessPauseStats> = {};
    for (const [name, ps] of Object.entries(byProcess)) {
      const gc = ps.filter((p) => p.kind === "gc");
      const stalls = ps.filter((p) => p.kind === "loop");
      processes[name] = {
        gcCount: gc.length,
        gcMs: r1(gc.reduce((a, p) => a + p.durationMs, 0)),
        majorGcCount: gc.filter((p) => p.gc === "major").length,
        maxGcMs: r1(Math.max(0, ...gc.map((p) => p.durationMs))),
        stallCount: stalls.length,
        stallMs: r1(stalls.reduce((a, p) => a + p.durationMs, 0)),
        maxStallMs: r1(Math.max(0, ...stalls.map((p) => p.durationMs))),
        cpuMsPerChange:
          cpuPerChange[name] === undefined ? undefined : Math.round(cpuPerChange[name] * 100) / 100,
      };
    }
    const slow: PhasePauses["slow"] = [];
    const overGoalBy: Record<string, number> = {};
    for (const c of sent) {
      const last = Math.max(...c.arrivals);
      if (last - c.t1 <= GOAL_P99_MS) continue;
      const { by, overlaps } = attributePauses(byProcess, c.t1, last, PAUSE_ATTRIBUTION_MIN_MS);
      const paused: Record<string, { stallMs: number; gcMs: number }> = {};
      for (const [name, o] of Object.entries(overlaps))
        if (o.loopMs > 0 || o.gcMs > 0) paused[name] = { stallMs: r1(o.loopMs), gcMs: r1(o.gcMs) };
      overGoalBy[by] = (overGoalBy[by] ?? 0) + 1;
      slow.push({ index: c.index, everySiteMs: r1(last - c.t1), by, paused });
    }
    slow.sort((a, b) => b.everySiteMs - a.everySiteMs);
    return { processes, slow, overGoalBy, missing };
  }

  /**
   * Creates objects until the federation holds `total` from the bulk set: per 100, one network
   * spanning every site, two security groups and 97 rules in them (CIDR-scoped TCP rules).
   */
  async bulkLoad(from: number, to: number): Promise<number> {
    const first = Math.floor(from / 100);
    const chunks = Math.ceil(to / 100) - first;
    const t0 = Date.now();
    await pool(16, chunks, async (k) => {
      const c = first + k;
      const lo = Math.max(from, c * 100);
      const hi = Math.min(to, c * 100 + 100);
      const groups: string[] = [];
      const parents: Promise<void>[] = [];
      for (let p = lo; p < hi && p % 100 < 3; p++) {
        if (p % 100 === 0) {
          parents.push(
            this.admin
              .create({
                network: {
                  meta: meta(`bulk-net-${c}`),
                  subnets: [
                    {
                      cidr: `10.${(c >> 8) & 255}.${c & 255}.0/24`,
                      gatewayIp: `10.${(c >> 8) & 255}.${c & 255}.1`,
                    },
                  ],
                  sites: this.siteNames,
                  vni: 0,
                  mtu: 0,
                },
              })
              .then(() => undefined),
          );
        } else {
          parents.push(
            this.admin
              .create({ securityGroup: { meta: meta(`bulk-sg-${p}`), stateless: false } })
              .then((r) => {
                groups.push(r.object!.securityGroup!.meta!.id);
              }),
          );
        }
      }
      await Promise.all(parents);
      // A chunk split across two loads made its groups in the earlier one.
      if (groups.length > 0) this.bulkGroups.set(c, groups.sort());
      else groups.push(...(this.bulkGroups.get(c) ?? []));
      const ruleFrom = Math.max(lo, c * 100 + 3);
      await pool(8, Math.max(0, hi - ruleFrom), async (j) => {
        const p = ruleFrom + j;
        await this.admin.create({
          securityGroupRule: {
            meta: meta(`bulk-rule-${p}`),
            securityGroupId: groups[p % groups.length]!,
            direction:
              p % 2 === 0
                ? intentpb.RuleDirection.RULE_DIRECTION_INGRESS
                : intentpb.RuleDirection.RULE_DIRECTION_EGRESS,
            ethertype: intentpb.EtherType.ETHER_TYPE_IPV4,
            protocol: "tcp",
            portRangeMin: 1 + (p % 65000),
            portRangeMax: 1 + (p % 65000),
            remoteCidr: `192.168.${(p >> 8) & 255}.${p & 255}/32`,
            remoteGroupId: "",
          },
        });
      });
    });
    this.objects += to - from;
    return (Date.now() - t0) / 1000;
  }

  /** The snapshot step (propagation-snapshot.ts) at the first site. */
  async snapshot(ports: number, tries: number, quick: boolean): Promise<SnapshotResult> {
    return snapshotStep(
      {
        admin: this.admin,
        site: this.sites[0]!,
        settle: (ms) => this.settle(ms),
        created: (n) => {
          this.objects += n;
        },
        machineQuiet: () =>
          waitMachineQuiet(quick ? { ...DEFAULT_QUIET, timeoutMs: QUICK_QUIET_TIMEOUT_MS } : DEFAULT_QUIET),
      },
      ports,
      tries,
    );
  }

  async stop(): Promise<void> {
    for (const s of this.sites) {
      s.watch.close();
      s.api.close();
    }
    await Promise.all(this.procs.map((p) => p.stop()));
    this.admin.close();
    await this.group.stopAll();
    this.ownPauses.stop();
  }
}

/** Waits for every start (so each started process is known for cleanup), then fails on the first error. */
async function startAll(starts: Promise<void>[]): Promise<void> {
  const r = await Promise.allSettled(starts);
  const bad = r.find((x) => x.status === "rejected");
  if (bad) throw (bad as PromiseRejectedResult).reason;
}

function meta(name: string): intentpb.ObjectMeta {
  return { id: "", name, revision: 0, description: "", labels: {}, createdRevision: 0 };
}

function describe(p: PhaseResult): string {
  const c = p.commitToEverySite;
  return (
    `${p.sites} sites, ${p.stateObjects} objects: commit→every site p50 ${c.p50} ms p99 ${c.p99} ms ` +
    `(request→every site p50 ${p.requestToEverySite.p50} ms p99 ${p.requestToEverySite.p99} ms; ` +
    `commit p50 ${p.commit.p50} ms) load ${p.load1}` +
    (p.quietBefore
      ? p.quietBefore.quiet
        ? `; machine quiet after ${p.quietBefore.seconds.toFixed(0)} s`
        : `; machine NOT quiet after ${p.quietBefore.seconds.toFixed(0)} s (${notQuietWhy(p.quietBefore)})`
      : "") +
    (p.stages
      ? `\n    mean ${p.stages.commitToEverySiteMeanMs} ms = site queue wait ${p.stages.siteWaitMs} + site apply ${p.stages.siteApplyMs} + streams ${p.stages.otherMs}`
      : "") +
    (p.timeline ? `\n${describeTimeline(p.timeline)}` : "") +
    (p.pauses ? `\n${describePauses(p.pauses)}` : "")
  );
}

/** Pauses summed over the processes of one role (coordinators, controllers, watchers, bench). */
function pauseRoles(pp: PhasePauses): { role: string; s: ProcessPauseStats; worst: string }[] {
  const roles: [string, (name: string) => boolean][] = [
    ["coordinators", (n) => /^c\d+$/.test(n)],
    ["site controllers", (n) => /^site\d+$/.test(n)],
    ["agents' watchers", (n) => n.endsWith("-agent")],
    ["bench", (n) => n === "bench"],
  ];
  return roles.map(([role, is]) => {
    const names = Object.keys(pp.processes).filter(is);
    const s: ProcessPauseStats = {
      gcCount: 0,
      gcMs: 0,
      majorGcCount: 0,
      maxGcMs: 0,
      stallCount: 0,
      stallMs: 0,
      maxStallMs: 0,
      cpuMsPerChange: 0,
    };
    let worst = "";
    for (const n of names) {
      const x = pp.processes[n]!;
      s.gcCount += x.gcCount;
      s.gcMs = Math.round((s.gcMs + x.gcMs) * 10) / 10;
      s.majorGcCount += x.majorGcCount;
      s.maxGcMs = Math.max(s.maxGcMs, x.maxGcMs);
      s.stallCount += x.stallCount;
      s.stallMs = Math.round((s.stallMs + x.stallMs) * 10) / 10;
      s.cpuMsPerChange = Math.round(((s.cpuMsPerChange ?? 0) + (x.cpuMsPerChange ?? 0)) * 100) / 100;
      if (x.maxStallMs >= s.maxStallMs) {
        s.maxStallMs = x.maxStallMs;
        worst = n;
      }
    }
    return { role, s, worst };
  });
}

function describePaused(paused: PhasePauses["slow"][number]["paused"]): string {
  const xs = Object.entries(paused).sort(
    (a, b) => Math.max(b[1].stallMs, b[1].gcMs) - Math.max(a[1].stallMs, a[1].gcMs),
  );
  return xs.length === 0
    ? "no process paused"
    : xs.map(([n, o]) => `${n} ${o.stallMs}${o.gcMs > 0 ? ` (gc ${o.gcMs})` : ""}`).join(", ");
}

function describePauses(pp: PhasePauses): string {
  const lines = [
    `    process pauses (stalls n/total/max ms, gc n/total ms, major): ${pauseRoles(pp)
      .map(
        ({ role, s, worst }) =>
          `${role} ${s.stallCount}/${s.stallMs}/${s.maxStallMs}${worst ? ` (${worst})` : ""}, gc ${s.gcCount}/${s.gcMs}, ${s.majorGcCount}, cpu ${s.cpuMsPerChange} ms/change`,
      )
      .join("; ")}`,
    `    over ${GOAL_P99_MS} ms, by the most paused process: ${
      Object.entries(pp.overGoalBy)
        .map(([n, k]) => `${n} ${k}`)
        .join(", ") || "none over"
    }`,
  ];
  for (const c of pp.slow.slice(0, SLOWEST_KEPT))
    lines.push(`    slow: index ${c.index}: ${c.everySiteMs} ms; paused: ${describePaused(c.paused)}`);
  if (pp.missing.length > 0) lines.push(`    pauses not read: ${pp.missing.join("; ")}`);
  return lines.join("\n");
}

function describeTimeline(t: ChangeTimeline): string {
  const seg = (x: Record<Segment, number>) => SEGMENTS.map((g) => `${g} ${x[g]}`).join(" + ");
  const lines = [
    `    sites follow ${Object.entries(t.follows)
      .map(([s, c]) => `${s}→${c}`)
      .join(" ")} (leader ${t.leader}); segments p50/p99 ms: ${SEGMENTS.map(
      (g) => `${g} ${t.segments[g].p50}/${t.segments[g].p99}`,
    ).join(", ")}`,
    `    over ${GOAL_P99_MS} ms, by the slowest site's largest segment: ${SEGMENTS.map((g) => `${g} ${t.overGoalBy[g]}`).join(", ")}`,
  ];
  for (const c of t.slowest)
    lines.push(
      `    slow: index ${c.index} at +${c.atMs} ms: ${c.everySiteMs} ms, ${c.site}: ${seg(c.segments)}`,
    );
  return lines.join("\n");
}

export async function measure(opts: PropagationBenchOptions): Promise<PropagationResult> {
  const [firstSites, allSites] = opts.sites ?? (opts.quick ? [2, 2] : [2, 4]);
  const changes =
    opts.changes ??
    (process.env.BENCH_PROPAGATION_CHANGES
      ? Number(process.env.BENCH_PROPAGATION_CHANGES)
      : opts.quick
        ? 30
        : 300);
  if (!Number.isInteger(changes) || changes <= 0)
    throw new Error(`changes per phase must be a positive integer, got ${changes}`);
  const sizes =
    opts.sizes ??
    (process.env.BENCH_PROPAGATION_SIZES
      ? process.env.BENCH_PROPAGATION_SIZES.split(",").map(Number)
      : opts.quick
        ? [300]
        : [1_000, 10_000, 100_000]);
  if (sizes.some((n, i) => !Number.isInteger(n) || n <= 0 || n > 100_000 || (i > 0 && n <= sizes[i - 1]!)))
    throw new Error(`state sizes must be increasing integers in 1..100000, got ${sizes.join(",")}`);
  // BENCH_PROPAGATION_SNAPSHOT_PORTS=0 skips the snapshot step (e.g. while working on the state sizes).
  const snapshotPorts =
    opts.snapshotPorts ??
    (process.env.BENCH_PROPAGATION_SNAPSHOT_PORTS !== undefined
      ? Number(process.env.BENCH_PROPAGATION_SNAPSHOT_PORTS)
      : opts.quick
        ? 100
        : 10_000);
  if (!Number.isInteger(snapshotPorts) || snapshotPorts < 0)
    throw new Error(`snapshot ports must be a non-negative integer, got ${snapshotPorts}`);
  const loadStart = loadavg().map((x) => Number(x.toFixed(2)));
  const base = await mkdtemp(join(tmpdir(), "isthmus-bench-propagation-"));
  await chmod(base, 0o755); // the embedded databases run as the postgres user when we are root
  let bench: Bench | undefined;
  let group: CoordinatorGroup | undefined;
  const cleanup = async () => {
    if (bench) await bench.stop();
    else await group?.stopAll();
    await rm(base, { recursive: true, force: true });
  };
  // An interrupted run still stops every process it started (and their databases).
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const keyDir = join(base, "coord-keys");
    const boot = await runCli(["bootstrap", "--dir", keyDir]);
    if (boot.code !== 0) throw new Error(`isthmus bootstrap failed: ${boot.stderr}`);
    const adminTokenFile = join(keyDir, auth.KEY_DIR_FILES.adminToken);
    group = await CoordinatorGroup.start(3, base, keyDir, { metrics: true });
    const admin = new FederationAdmin(group.addresses, (await readFile(adminTokenFile, "utf8")).trim());
    const siteNames = Array.from({ length: allSites }, (_, i) => `site${i + 1}`);
    const creds: string[] = [];
    for (const name of siteNames)
      creds.push(await onboardSite(name, join(base, name), group.addresses, adminTokenFile));
    await admin.findLeader();
    // BENCH_PROPAGATION_SITE_NODE_ARGS: node flags for the controllers, space-separated (e.g. --cpu-prof).
    const siteNodeArgs =
      opts.siteNodeArgs ?? process.env.BENCH_PROPAGATION_SITE_NODE_ARGS?.split(" ").filter((a) => a !== "");
    bench = new Bench(base, group, admin, siteNames, creds, siteNodeArgs);
    bench.objects = siteNames.length;
    const b = bench;
    console.log(`propagation bench: ${opts.quick ? "quick" : "full"} mode; starting ${firstSites} sites`);
    await startAll(Array.from({ length: firstSites }, (_, i) => b.startSite(i)));
    await b.createProbeGroup();
    await b.settle(60_000);
    const phases: PhaseResult[] = [];
    const bulk: PropagationResult["bulkLoad"] = [];
    const errors: string[] = [];
    let snapshot: SnapshotResult | undefined;
    const summarize = (): PropagationResult => {
      const at4 = phases.filter((p) => p.sites === allSites);
      const smallest = at4[0];
      const largest = at4[at4.length - 1];
      const p99 = Math.max(...at4.map((p) => p.commitToEverySite.p99));
      const snapMs = snapshot && snapshot.ms.length > 0 ? Math.min(...snapshot.ms) : Number.NaN;
      return {
        benchmark: "propagation",
        date: new Date().toISOString(),
        quick: opts.quick,
        machine: { cpus: cpus().length, model: cpus()[0]?.model.trim() ?? "unknown", node: process.version },
        loadAverage: { start: loadStart, end: loadavg().map((x) => Number(x.toFixed(2))) },
        measuredFrom:
          "the Create RPC's return at the admin (the leader has committed and applied the entry; the response carries its index)",
        phases,
        errors,
        bulkLoad: bulk,
        snapshot,
        goals: {
          p99At4SitesMs: GOAL_P99_MS,
          // Null until a phase at the full site count has run (progress writes come before it).
          p99At4SitesRatio: allSites >= 4 && at4.length > 0 ? Number((p99 / GOAL_P99_MS).toFixed(2)) : null,
          costGrowthLargestVsSmallest:
            smallest && largest && largest !== smallest
              ? Number((largest.commitToEverySite.p50 / smallest.commitToEverySite.p50).toFixed(2))
              : null,
          snapshot10kPortsMs: GOAL_SNAPSHOT_MS,
          snapshotRatio:
            snapshotPorts >= 10_000 && Number.isFinite(snapMs)
              ? Number((snapMs / GOAL_SNAPSHOT_MS).toFixed(2))
              : null,
        },
      };
    };
    const phase = async (label: string) => {
      // Steady state, not the aftermath of what came before (a catch-up of 100k objects keeps
      // the processes busy for seconds after every site has applied it).
      // Quick mode (CI's smoke run, beside other tests) waits briefly: it proves the bench runs.
      const quietBefore = await waitMachineQuiet(
        opts.quick ? { ...DEFAULT_QUIET, timeoutMs: QUICK_QUIET_TIMEOUT_MS } : DEFAULT_QUIET,
      );
      const p = { ...(await b.measure(label, changes)), quietBefore };
      console.log(`  ${describe(p)}`);
      phases.push(p);
      opts.onProgress?.(summarize());
    };
    await phase(`s${firstSites}`);
    if (allSites > firstSites) {
      await startAll(Array.from({ length: allSites - firstSites }, (_, i) => b.startSite(firstSites + i)));
      await b.settle(120_000);
      await phase(`s${allSites}`);
    }
    let loaded = 0;
    for (const size of sizes) {
      try {
        // A large load runs with the sites down (on one machine they would compete with the
        // coordinators for the CPU); they then catch up, from the journal or — when further
        // behind than it keeps — from a snapshot in parts. A small one they follow live.
        const offline = size - loaded >= STOP_SITES_FOR;
        const running = offline ? await b.stopSites() : 0;
        const secs = await b.bulkLoad(loaded, size);
        const t0 = Date.now();
        if (offline) await startAll(Array.from({ length: running }, (_, i) => b.startSite(i)));
        await b.settle(Math.max(300_000, size * 30));
        const settle = (Date.now() - t0) / 1000;
        // The maintenance PostgreSQL advises after a bulk load, now rather than when autovacuum
        // gets to it in the middle of the next phase.
        const vacuum = await b.vacuumSites();
        bulk.push({
          objects: size - loaded,
          seconds: Number(secs.toFixed(1)),
          perSecond: Math.round((size - loaded) / secs),
          settleSeconds: Number(settle.toFixed(1)),
          sitesStopped: offline,
          vacuumSeconds: Number(vacuum.toFixed(1)),
          load1: Number(loadavg()[0]!.toFixed(2)),
        });
        console.log(
          `  bulk-loaded ${size - loaded} objects in ${secs.toFixed(1)} s (${Math.round((size - loaded) / secs)}/s) ` +
            (offline
              ? `with the sites stopped; restarted, they caught up in ${settle.toFixed(1)} s`
              : `with the sites following; they settled ${settle.toFixed(1)} s later`) +
            `; VACUUM (ANALYZE) of the site databases ${vacuum.toFixed(1)} s (load ${loadavg()[0]!.toFixed(1)})`,
        );
        loaded = size;
        await phase(`n${size}`);
      } catch (err) {
        // Keep what was measured; larger states are not attempted after a failure.
        errors.push(`at ${size} objects: ${(err as Error).message}`);
        console.log(`  failed at ${size} objects: ${(err as Error).message}`);
        break;
      }
    }
    if (snapshotPorts > 0)
      snapshot = await b.snapshot(snapshotPorts, opts.quick ? 1 : 3, opts.quick === true);
    return summarize();
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await cleanup();
  }
}

export function markdown(r: PropagationResult): string {
  const lines = [
    "## propagation: admin write → agents at every site",
    "",
    `${r.date.slice(0, 16).replace("T", " ")} UTC, ${r.machine.cpus} × ${r.machine.model}, Node ${r.machine.node}, ` +
      `${r.quick ? "quick" : "full"} mode; 1-minute load average ${r.loadAverage.start[0]} at start, ${r.loadAverage.end[0]} at the end ` +
      "(per phase in the table). A 3-node coordinator group (`isthmus coordinator` processes, WAL fsync) and " +
      "2, then 4 sites, each an `isthmus site-controller` process on its own embedded PostgreSQL, all on this " +
      "machine; at each site an agent's `TopologyService.Watch` stream with a host token. A change is one new " +
      "security-group rule (every site translates it into one chain rule); the clock starts when the Create RPC " +
      "returns (the leader has committed and applied the entry, index in the response) and stops when the rule " +
      "has arrived in the watch stream of every site. Changes are made one after another. Larger states are " +
      "bulk-loaded through the same API: per 100 objects one network spanning every site, two groups, 97 rules.",
    "",
    "| sites | objects in the federation | changes | commit → every site p50 ms | p99 ms | max ms | mean ms = site wait + site apply + streams | request → every site p50 ms | p99 ms | Create RPC p50 ms | load |",
    "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
  ];
  for (const p of r.phases) {
    const c = p.commitToEverySite;
    const st = p.stages;
    lines.push(
      `| ${p.sites} | ${p.stateObjects.toLocaleString("en-US")} | ${p.changes} | ${c.p50} | ${c.p99} | ${c.max} | ` +
        `${st ? `${st.commitToEverySiteMeanMs} = ${st.siteWaitMs} + ${st.siteApplyMs} + ${st.otherMs}` : "—"} | ` +
        `${p.requestToEverySite.p50} | ${p.requestToEverySite.p99} | ${p.commit.p50} | ${p.load1} |`,
    );
  }
  const waits = r.phases.filter((p) => p.quietBefore);
  if (waits.length > 0) {
    lines.push(
      "",
      `Before each phase the benchmark waits until the whole machine (every process, PostgreSQL included) ` +
        `has used under ${DEFAULT_QUIET.maxBusy * 100} % of its CPUs for ${DEFAULT_QUIET.windows} seconds in a row ` +
        `and the kernel holds under ${DEFAULT_QUIET.maxDirtyBytes / 1048576} MB of dirty page cache ` +
        `(at most ${(r.quick ? QUICK_QUIET_TIMEOUT_MS : DEFAULT_QUIET.timeoutMs) / 1000} s), so that a phase measures the steady state at its size rather ` +
        "than the aftermath of the load before it (after a 100k catch-up the controllers go on reading the change " +
        "log and collecting its garbage for seconds, and the kernel writes the databases' pages back ~30 s after " +
        "they were written, stalling every commit behind them). Waited: " +
        waits
          .map(
            (p) =>
              `${p.stateObjects.toLocaleString("en-US")} objects ${p.quietBefore!.seconds.toFixed(0)} s` +
              (p.quietBefore!.quiet ? "" : ` (not quiet: ${notQuietWhy(p.quietBefore!)})`),
          )
          .join(", ") +
        ".",
    );
  }
  lines.push(
    "",
    "Stages (means per change, from each site controller's `isthmus_site_intent_entry_seconds` histogram): " +
      "*site wait* — the entry received from the coordinator until its apply starts (the write queue was busy); " +
      "*site apply* — translation, the one SERIALIZABLE transaction and its commit (an fsync of the site's " +
      "database); *streams* — the rest: the coordinator node the site follows applying and streaming the entry, " +
      "and the controller's watch stream to the agent (a committed change reaches this replica's watchers at " +
      "once, without reading the change log back; the log is polled every 100 ms only for the other replica's " +
      "changes).",
  );
  const timed = r.phases.filter((p) => p.timeline);
  if (timed.length > 0) {
    lines.push(
      "",
      "Per-change timeline (each change's way to each site, from the controllers' `/debug/intent-entries` and " +
        "the agents' arrival times, all Unix ms on this machine; every row is in the JSON): *stream* — the Create " +
        "RPC's return until the entry reached the site (negative when the site follows the leader, which streams " +
        "before its response reaches the admin); *wait* — queued at the site; *translate*; *write* — the " +
        "transaction up to COMMIT (BEGIN, then the fence + applied index + intent rows statement, then the topology " +
        "revision statement: round trips to the site's database); *commit* — COMMIT and its WAL flush; *watch* — " +
        "the committed change to the agent's stream. p50/p99 over every (change, site) pair, and the changes over " +
        `${GOAL_P99_MS} ms counted by the slowest site's largest segment:`,
      "",
      `| sites | objects | follow (leader) | ${SEGMENTS.map((g) => `${g} p50/p99 ms`).join(" | ")} | over ${GOAL_P99_MS} ms by segment |`,
      `|---:|---:|---|${SEGMENTS.map(() => "---:").join("|")}|---|`,
    );
    for (const p of timed) {
      const t = p.timeline!;
      const follows = [...new Set(Object.values(t.follows))].join(", ");
      const over = SEGMENTS.filter((g) => t.overGoalBy[g] > 0)
        .map((g) => `${g} ${t.overGoalBy[g]}`)
        .join(", ");
      lines.push(
        `| ${p.sites} | ${p.stateObjects.toLocaleString("en-US")} | ${follows} (${t.leader}) | ` +
          `${SEGMENTS.map((g) => `${t.segments[g].p50}/${t.segments[g].p99}`).join(" | ")} | ${over || "none"} |`,
      );
    }
    const last = timed[timed.length - 1]!;
    lines.push(
      "",
      `Slowest changes at ${last.stateObjects.toLocaleString("en-US")} objects: ${last
        .timeline!.slowest.map(
          (c) =>
            `index ${c.index} (+${(c.atMs / 1000).toFixed(1)} s) ${c.everySiteMs} ms at ${c.site} = ` +
            SEGMENTS.map((g) => `${g} ${c.segments[g]}`).join(" + "),
        )
        .join("; ")}.`,
    );
  }
  const paused = r.phases.filter((p) => p.pauses);
  if (paused.length > 0) {
    lines.push(
      "",
      "Process pauses during each phase's changes (every process records its garbage-collection pauses of 1 ms " +
        "or more — perf_hooks `gc` entries — and event-loop stalls of 5 ms or more — a 10 ms timer firing that " +
        "late, which includes GC and the OS not running the process — in a bounded ring, served at `/debug/pauses` " +
        "on the coordinators' and controllers' metrics ports; the agents' watch streams run in processes of their " +
        "own, one per site, which stamp each arrival and report their pauses, so the benchmark's own heap is not " +
        "on the measured path). Per role: stalls count / total ms / longest ms (in which process), GC pauses " +
        "count / total ms, major GCs, and the CPU time (user + system) the role's processes used per change " +
        "during the phase — a cost the load does not stretch, so it shows whether a change costs more in a larger " +
        `state; and each change over ${GOAL_P99_MS} ms put down to the process whose stalls ` +
        `or GC covered most of its way (Create's return → last arrival), if ${PAUSE_ATTRIBUTION_MIN_MS} ms or more — ` +
        `or to the *machine* when half the processes or more were each paused that long in it (they stalled ` +
        "together: the OS not running them, CPU contention, rather than one heap's GC):",
      "",
      "| sites | objects | coordinators | site controllers | agents' watchers | bench process | over 50 ms by most paused process |",
      "|---:|---:|---|---|---|---|---|",
    );
    for (const p of paused) {
      const pp = p.pauses!;
      const cell = ({ s, worst }: { s: ProcessPauseStats; worst: string }) =>
        `${s.stallCount} / ${s.stallMs} / ${s.maxStallMs}${worst ? ` (${worst})` : ""}; gc ${s.gcCount} / ${s.gcMs}, ${s.majorGcCount} major; cpu ${s.cpuMsPerChange} ms/change`;
      const over = Object.entries(pp.overGoalBy)
        .sort((a, b) => b[1] - a[1])
        .map(([n, k]) => `${n} ${k}`)
        .join(", ");
      lines.push(
        `| ${p.sites} | ${p.stateObjects.toLocaleString("en-US")} | ${pauseRoles(pp).map(cell).join(" | ")} | ${over || "none over"} |`,
      );
    }
    const last = paused[paused.length - 1]!;
    if (last.pauses!.slow.length > 0)
      lines.push(
        "",
        `Changes over ${GOAL_P99_MS} ms at ${last.stateObjects.toLocaleString("en-US")} objects and the pauses on their way (stall ms, gc ms): ${last
          .pauses!.slow.slice(0, SLOWEST_KEPT)
          .map((c) => `index ${c.index} ${c.everySiteMs} ms: ${describePaused(c.paused)}`)
          .join("; ")}.`,
      );
  }
  if (r.bulkLoad.length > 0) {
    lines.push(
      "",
      `Bulk loads: ${r.bulkLoad
        .map(
          (b) =>
            `${b.objects.toLocaleString("en-US")} objects in ${b.seconds} s (${b.perSecond}/s) ` +
            (b.sitesStopped
              ? `with the sites stopped, which then started and caught up in ${b.settleSeconds} s`
              : `with the sites following, settled ${b.settleSeconds} s after`) +
            (b.vacuumSeconds !== undefined
              ? `, then VACUUM (ANALYZE) of every site database, ${b.vacuumSeconds} s`
              : "") +
            ` (load ${b.load1})`,
        )
        .join("; ")}.`,
    );
  }
  for (const e of r.errors) lines.push("", `**Failed** ${e}`);
  const g = r.goals;
  lines.push("", "Against the goals (issue 5):", "");
  lines.push(
    g.p99At4SitesRatio === null
      ? "- p99 ≤ 50 ms at 4 sites: not measured (yet) in this run."
      : `- p99 ≤ 50 ms at 4 sites: worst p99 over the 4-site phases / goal = **${g.p99At4SitesRatio}**.`,
  );
  lines.push(
    g.costGrowthLargestVsSmallest === null
      ? "- cost independent of state size: one state size only in this run."
      : `- cost independent of state size: p50 at the largest state / p50 at the smallest = **${g.costGrowthLargestVsSmallest}**.`,
  );
  lines.push(...snapshotMarkdown(r.snapshot, g.snapshotRatio));
  lines.push(
    "",
    "What the profile and this benchmark found:",
    "",
    "- A site's first snapshot used to be one gRPC message: a 10k-port site's topology (about 15 objects " +
      "and 3 KB a port) is well over the 16 MiB the controller may send and the 4 MiB an agent may receive, so " +
      "such a site could not serve a new agent at all. The controller now sends snapshots in parts of about " +
      "1 MiB (`snapshot_part` events, then `snapshot`; docs/site-controller.md) and the agent's watch client " +
      "assembles them.",
    "- An agent's first snapshot is mostly the agent decoding it, and that decoding was garbage-collection " +
      "bound (every decoded object survives). The agent's watch client now reads Watch events with its own " +
      "decoder (same wire format and message types): repeated ids are one string, an object holds only its " +
      "kind, and byte-identical rule conditions (10 of a VM port's 12 rules) share one frozen `Condition` — " +
      "the decoded 10k-port snapshot takes 85 MB of heap instead of 149 MB (docs/site-controller.md).",
    "- The snapshot holds exactly what translation writes, and 12 of a VM port's 18 objects were rules and " +
      "chains that only its set of security groups decides. Ports with the same groups now share them as a " +
      "profile's two chains (docs/translation.md); a port keeps its own chain with the five rules naming its MAC " +
      "and addresses. A 10k-port site in one group: 192k → 112k objects, 131k → 51k rules, 26.4 → 16.3 MB; " +
      "the agent's CPU for its first snapshot about 25 % less (docs/site-controller.md). Here the snapshot " +
      "also carries the ~100k security-group rules of the 100k-object state (every group is at every site), so " +
      "it has more rules than the issue's 10k ports and 100k rules, and the gateway ports of the bulk networks.",
    "- The snapshot step timed its tries in the benchmark's own process, so only the first try paid a cold " +
      "JIT and a heap growing from nothing (2,688 ms in the idle run of 2026-11-25 against 1,388 and 1,111 ms " +
      "warm), while a real agent is a fresh process whose first snapshot is its only one. Each try now runs in a " +
      "process of its own (snapshot-child.ts). On this machine a fresh page of memory costs ~13 µs, so a cold " +
      "agent pays for the bytes of its decoded copy: a decoded rule condition now holds only the fields on the " +
      "wire (~56 instead of ~264 bytes; 151–160 → 119–125 MB of heap for the replayed snapshot in a fresh process), and the " +
      "controller's mirror re-frames only the parts a change touched and frames in the background once changes " +
      "are quiet, so the first Watch after a change no longer frames ~220k objects (docs/site-controller.md).",
    "- The snapshot step stopped its clock when the snapshot was in the agent's topology store, but an agent " +
      "cannot forward until its simulator's view is built too, which compiled every chain's rules (~150k): " +
      "replayed in a fresh process, 3.2–4.0 s instead of the store's 1.4–2.0 s. The step now times the agent's " +
      "own path (`AgentTopology`: store and view, the code `EdgeAgent` runs). To pay for it, chains are compiled " +
      "the first time a simulation looks them up (a port's own chain 0.4–0.6 ms, a 50-rule group chain ~2 ms, " +
      "once per change to it), a snapshot's rules are read from the received message only when their chain is " +
      "compiled, and the store no longer indexes what only the view reads: replayed, 1.5–1.6 s " +
      "(docs/site-controller.md).",
    "- The site controller is mostly idle while it applies intent: its cost per entry is database round " +
      "trips (one SERIALIZABLE transaction per entry, by design). Topology objects used to be written one " +
      "statement each (a port is ~20 rows); they are now written 500 rows a statement.",
    "- The federation → site `IntentSnapshot` was one message too, which a site's 4 MiB receive limit " +
      "refuses past roughly 20 000 objects (a site further behind than the coordinator journal, or joining a " +
      "large federation). A site now asks for snapshots in parts (`snapshot_part`, about 1 MiB each) and " +
      "assembles them; the 10k and 100k steps exercise it (the sites are stopped during those loads and catch " +
      "up afterwards).",
    "- The controller's lease could lapse under CPU load (an event loop stalled past TTL − renew interval " +
      "misses its renewal); it then took a new token and reloaded its whole state, refusing writes meanwhile " +
      "(the snapshot step failed with `does not hold the lease`). It now renews over its own connection and, " +
      "when nobody took the lease, resumes the same token without a reload.",
    "- Per change, a site used to read each of its own commits back from the change log before its watchers " +
      "got it; now the committer hands it over. Snapshots are framed from the stored encodings (no decode and " +
      "re-encode of every object). `CreatePort` checks the name with an index lookup; verified tokens are " +
      "remembered until they expire; tunnel keys are checked against an index rather than collected per call.",
    "- The 10k step could fail outright under CPU load (it did twice at load 10–28 before the fix): the " +
      "sites catch up from one snapshot transaction, and every write transaction's fence reads the lease row, " +
      "which renewals rewrote every second. A transaction longer than that met a renewal and a change-log " +
      "reader in a serialization conflict and was aborted on all 12 attempts, over and over (`snapshot N failed " +
      "after 12 attempts`). Renewals now write the expiry in a row of its own (migration 0004). The same conflict " +
      "occasionally re-ran an ordinary entry's transaction (4 of ~1 000 slow applies in a run before, none " +
      "after) — a retry with backoff, i.e. a tail latency of one change at one site, which is a p99 event at 4 sites.",
    "- Applying that snapshot stalled the site controller's event loop for seconds (11.6 s measured at load 10 " +
      "with 10k objects; the lease lapsed, status calls timed out): the index was loaded twice and the whole " +
      "state translated and diffed in one go. It now runs in steps of 2 000 objects and takes the built index " +
      "over. A 100k-object catch-up commits one topology revision far above an agent's 4 MiB message limit; " +
      "such a change reaches agents as a fresh snapshot in parts instead.",
    "- The 100k step had never run to the end. The four sites, restarted after the load, each catch up from " +
      "one snapshot of ~100k intent objects (~200k topology objects at each site), and writing that as one " +
      "topology revision encoded every object and then the whole ~30 MB change again in one synchronous go: a " +
      "16 s stall of the controller's event loop (CPU profile, load 8). Its lease lapsed and the benchmark's " +
      "status calls timed out (`DEADLINE_EXCEEDED` after 10 s). The write now encodes each object once (taking " +
      "the snapshot diff's encodings) and frames the change-log body from them, the topology mirror takes the " +
      "same encodings, and the translation's final sort computes each object's key once and lets the event " +
      "loop run. A catching-up controller's longest busy stretch is now 2–3 s with turns of the event loop " +
      "in between (lease renewals at worst ~1–4 s late, resumed with the same token), and the four sites catch " +
      "up in ~70 s at load 8 (~100 s at load 18).",
    "- Each site here is a single controller replica with a 10 s lease (renewed every 2 s; the default is " +
      "3 s, for a fast hand-over between two replicas). With 3 s, at load ~20 the lease renewals of a site " +
      "catching up on 100k objects commit late — their WAL flush waits behind the catch-up transaction's in the " +
      "same PostgreSQL — so the lease flapped and the site refused writes as standby (the 100k step failed " +
      "once so). A site with two replicas on a machine that loaded would hand over back and forth meanwhile.",
    "- The change feed's ring of recent changes was bounded by count only (10 000): that one ~30 MB change " +
      "stayed in memory for the next 10 000 revisions. It is bounded by bytes too now (`feedRingBytes`, 64 MiB); " +
      "a larger change is not kept (an agent resuming before it reads the log and gets a snapshot).",
    "- Coordinators at 100k objects: a raft snapshot is ~13.6 MB (InstallSnapshot sends 1 MiB chunks, so " +
      "the 16 MiB gRPC message limit is not in the way). Taking one every 10 000 entries — framing the state, " +
      "then a synchronous write and fsync of the file in raft-ts's WAL storage — stalled each node 1–1.5 s at " +
      "load 18, and all three reach that index at about the same time: in some runs the leader lost " +
      "check-quorum once during the 100k load (the admin client retries on the new leader; a retry that finds " +
      "its object already created reads it back by name). Objects are now encoded as they are committed rather " +
      "than 10 000 at once when a snapshot is due, the snapshot is written into one buffer in place, and the " +
      "file is written and fsynced on the thread pool while the node keeps stepping (`WalStorage.compactAsync`; " +
      "the log is compacted once the file is durable; docs/raft.md). The state sent to sites on (re)connect is " +
      "built once per applied index (four sites reconnecting together asked for it four times, ~0.8 s each).",
    "- Is the 100k tail the catch-up's aftermath or steady state? The per-change timeline says where each " +
      "slow change spent its time. In the one 100k run with it that finished while the machine was shared " +
      "(load ~10, three other benchmarks and test suites running), no raft snapshot fell inside the measured " +
      "changes (the last one ~1 200 entries before them, the next 10 000 after), the sites' write queues were " +
      "empty (wait p99 0.7 ms), and the slow changes were slow in the site's apply (p99 152 ms); at 605 objects " +
      "in the same run it was the same segment, the same way (p99 124 ms, load 8). Runs at load 16–21 that " +
      "split the apply further put the transaction's statements (p50 40–63 ms) far ahead of translation (p50 " +
      "0.3–0.4 ms) and the commit's fsync (p50 9–15 ms), with the watch stream to the agent next (the " +
      "benchmark's own process receives all four sites' streams). So under load the tail is each entry's " +
      "round trips to its database, at any state size; an entry's transaction now makes four instead of six " +
      "(docs/site-controller.md). Near idle it is not all: a 100k step at load 1.7, measured after a 90 s " +
      "quiet period (a diagnostic variant, not this benchmark's default), still had p99 103 ms against 27 ms " +
      "at 605 objects in the same run (p50 16 against 13 ms), with no raft snapshot and no queue in the way. " +
      "Its slowest changes were slow in several places at the same instants — the coordinator's stream to the " +
      "sites (up to 87 ms), a site's statements (50–58 ms), the watch stream (up to 119 ms) — which points at " +
      "pauses of whole processes with large heaps (the coordinators at 100k objects; the benchmark's own " +
      "process, whose agent streams decode every site's ~200k-object catch-up), not at the per-change work. " +
      "Every process now records its pauses (table above), and the agents' streams run in processes of their " +
      "own, so the benchmark's heap is off the measured path.",
    "- What the pause records showed (two runs on 2026-11-24 with other helpers' test suites on the machine; " +
      "the second is the one in the tables, 22:50–22:59, load 18–24): at every size most changes over 50 ms " +
      "overlapped stalls of half the processes or more at the same instants (*machine*: 47 of 60 at 205 objects (2 sites), " +
      "94 of 139 at 405, 34 of 48 at 100,605) — the OS not running them — and only a few were one process's own " +
      "(at 100,605: a controller 8, a coordinator 6). GC was a small part of the stalls (at 100,605 the " +
      "coordinators' GC 1.1 s of 18.6 s stalled; one major collection in the whole phase, in c1, 378 ms of wall " +
      "time at load 18) and no larger than at 405 objects (2.3 s of 31.3 s, three majors). The cost of a change, " +
      "as CPU time per change (which load stretches far less than wall time), did not grow with the state: " +
      "coordinators 19.2 / 11.1 / 10.6 ms at 405 objects and 17.0 / 9.1 / 9.9 ms at 100,605 (c1, the node all four " +
      "sites followed, used ~7 ms more than the other two), each site controller ~11.8 vs " +
      "~8.4 ms, each agent's watcher ~3.5 vs ~2.0 ms. So at this load the 100k tail is CPU contention, not one " +
      "heap's pauses; the first run (load 28–32) failed its 100k step with a status call timing out during the " +
      "bulk load. Whether GC of the large heaps is the idle 100k tail is for a run on a quiet machine to say — " +
      "the *over 50 ms* column of the pause table answers it directly. Summed over the coordinators, controllers " +
      "and watchers a change cost 80–100 ms of CPU at 4 sites (not counting PostgreSQL) — 40–50 ms of the whole " +
      "2-core machine — so with other work on the machine the processes queue for the CPU: that total, rather " +
      "than any one pause, is what a loaded machine turns into tail latency.",
    "- The 100k tail, looked at on 2026-11-25 (nine 100k runs, load 2–7, with every controller and " +
      "coordinator profiled in two of them): (1) For its first ~5 s the 100k phase measured the catch-up's " +
      "aftermath — the controllers were reading their own catch-up commits back from the change log (bytea " +
      "parse, decode, the mirror re-encoding each object), 2–3× their steady CPU — because commits that arrive " +
      "while a poll is in flight went through the log. They are now handed over in their turn (change-feed.ts), " +
      "and every phase starts on a quiet machine (the sentence under the first table). (2) Each site acked every " +
      "move of its applied index, and each ack is itself a log entry streamed back to every site as progress: " +
      "about one entry a second per site at idle, for ever, and ~20 a second while changes flowed (more than the " +
      "changes at 100k). Moves by progress alone are now acked every 5 s and changes every second " +
      "(docs/site-controller.md). (3) What stays is steady state: from 605 to 100,905 objects in one run, the " +
      "main-thread CPU per change (from /proc schedstat) of the four controllers went 16.0 → 23.8 ms and of " +
      "the three coordinators 15.3 → 21.0 ms, and the time they were runnable but not running 40 → 62 ms " +
      "(controllers) while the CPUs were ~45 % idle: a process woken onto the other, idle vCPU waits for the " +
      "host to run that vCPU (docs/kernel-datapath.md, eighth pass: p99 2.5–3.5 ms on this machine), and one " +
      "change wakes a dozen processes and more in turn. The slow changes are those with several processes " +
      "waiting at once (*machine* in the table above), with the CPUs idle 40 % of their span and PSI io.full " +
      "2–6 ms. Page faults were not it (85 per change at 100k against 228 at 605, machine-wide; a fresh page " +
      "costs ~17 µs here, and touching 3 GB at once stalled every process ~90 ms). The benchmark's probe group " +
      "collects every phase's rules (1,500 by the 100k phase of a full run); the profiles showed no cost that " +
      "grows with it.",
    "- A security group's address group was one object listing every member's addresses, rewritten (and " +
      "sent to every agent) whenever a member port changed anywhere: creating 10k ports in one group was " +
      "quadratic in bytes written and sent (166.7 s for the 10k ports, the site settling 42 s after). Each " +
      "member port is now an `IpAddrGroupMember` of its own (translation version 3, docs/translation.md), so " +
      "a port joining, leaving or changing costs one small object per group; the snapshot step's line above " +
      "gives this run's creation and settling times.",
    "",
    "Reproduce: `npm run bench -- propagation` (`--quick`: 2 sites, 30 changes, 300 objects, 100 ports; " +
      "`BENCH_PROPAGATION_SIZES=1000,10000` picks the state sizes — the 100k step takes the longest; each " +
      "step's duration is printed and kept in the JSON; `BENCH_PROPAGATION_CHANGES` sets the changes per " +
      "phase, `BENCH_PROPAGATION_SNAPSHOT_PORTS=0` skips the snapshot step, `ISTHMUS_BENCH_LOG_DIR` keeps " +
      "every process's log). " +
      "The machine is shared while measuring; the load average is recorded with each phase.",
  );
  return lines.join("\n");
}

const START = "<!-- bench:propagation:start -->";
const END = "<!-- bench:propagation:end -->";

export function writeDocs(file: string, section: string): void {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    text = "# Benchmarks\n";
  }
  const block = `${START}\n${section}\n${END}`;
  const i = text.indexOf(START);
  const j = i >= 0 ? text.indexOf(END, i) : -1;
  writeFileSync(
    file,
    i >= 0 && j > i
      ? text.slice(0, i) + block + text.slice(j + END.length)
      : `${text.trimEnd()}\n\n${block}\n`,
  );
}

/** JSON with two-space indents, but each array of plain numbers on one line (the timeline rows). */
export function compactJson(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(
    /\[\s+((?:-?[\d.e+-]+|null)(?:,\s+(?:-?[\d.e+-]+|null))*)\s+\]/g,
    (_, body: string) => `[${body.split(/,\s+/).join(", ")}]`,
  );
}

export async function run(opts: PropagationBenchOptions): Promise<void> {
  const resultsFile =
    opts.resultsFile ?? join(root, "integration-tests", "bench", "results", "propagation.json");
  const save = (r: PropagationResult) => {
    mkdirSync(dirname(resultsFile), { recursive: true });
    writeFileSync(resultsFile, `${compactJson(r)}\n`);
    writeDocs(opts.docsFile ?? join(root, "docs", "benchmarks.md"), markdown(r));
  };
  save(await measure({ ...opts, onProgress: save }));
  console.log(`propagation bench: wrote ${resultsFile}`);
}
