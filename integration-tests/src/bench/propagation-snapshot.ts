// The propagation benchmark's snapshot step: VM ports (one network, one security group) created at
// a site through SiteService, then fresh agents' first snapshots of it timed with the site agent's
// own watch client, topology store and simulator view (until the agent could simulate a packet),
// each try in a new process (a new agent's JIT and heap are cold; the benchmark's process was
// warmed by each try before). Kept apart from the change phases.
import { loadavg } from "node:os";
import type { intentpb } from "@isthmus/schema";
import { type FederationAdmin, type SiteApi, timeSnapshotFresh } from "../harness/bench-clients.js";
import type { SiteProcess } from "../harness/site-process.js";
import { DEFAULT_QUIET, notQuietWhy, type QuietResult } from "./machine-quiet.js";

export interface SnapshotResult {
  ports: number;
  /** Objects in the snapshot, by kind. */
  counts: Record<string, number>;
  bytes: number;
  /**
   * Time from the Watch call to the whole snapshot in the agent's topology store and its
   * simulator's view (AgentTopology: what the agent needs before it can simulate), each try (ms).
   */
  ms: number[];
  /** Messages the snapshot came in (parts of about 1 MiB). */
  parts: number;
  /** Each try: its time, the 1-minute load average when it ended, the try's process's CPU time. */
  attempts?: { ms: number; load1: number; cpuMs?: number; quiet?: QuietResult }[];
  /** Creating the ports through SiteService (16 at a time), and the sites settling after (s). */
  createSeconds?: number;
  settleSeconds?: number;
  /**
   * From settled (everything applied, every agent caught up) until the site was quiet: no new
   * federation entry and no new topology revision for QUIET_MS (s). Port records still reported
   * upward and coming back as intent land in this window, not in the timed snapshots.
   */
  quietSeconds?: number;
  error?: string;
  load1: number;
}

/** What the step needs of the running benchmark. */
export interface SnapshotBench {
  readonly admin: FederationAdmin;
  /** The site whose agent's snapshot is timed. */
  readonly site: { name: string; proc: SiteProcess; api: SiteApi; hostId: string; hostToken: string };
  /** Waits until every site has applied everything and its agent has it all; returns seconds. */
  settle(timeoutMs: number): Promise<number>;
  /** Counts intent objects the step created. */
  created(n: number): void;
  /**
   * Waits until the machine's CPUs are quiet (machine-quiet.ts), before each try: a try then times
   * the agent's snapshot, not PostgreSQL and the sites still digesting the 10k ports' creation.
   */
  machineQuiet(): Promise<QuietResult>;
}

/** How long the site must stay without a write before a snapshot is timed. */
export const QUIET_MS = 3_000;

/**
 * Waits (after settle: the site has applied what was committed) until the site's topology revision
 * has not moved for `quietMs`: no write at the site — its queue drained, nothing it reported upward
 * still coming back as a change. (Entries that change nothing here, such as other sites' health
 * reports, keep arriving and do not count.) Returns the seconds waited.
 */
export async function waitQuiet(b: SnapshotBench, quietMs: number, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  let last = -1;
  let since = t0;
  const moves: string[] = [];
  for (;;) {
    const revision = Number((await b.site.api.status()).topologyRevision);
    const now = Date.now();
    if (revision !== last) {
      moves.push(`${revision} at +${now - t0} ms`);
      if (moves.length > 5) moves.shift();
      last = revision;
      since = now;
    } else if (now - since >= quietMs) {
      return (now - t0) / 1000;
    }
    if (now - t0 > timeoutMs) {
      throw new Error(
        `${b.site.name} not quiet for ${quietMs} ms within ${timeoutMs} ms (revisions ${moves.join(", ")})`,
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

function meta(name: string): intentpb.ObjectMeta {
  return { id: "", name, revision: 0, description: "", labels: {}, createdRevision: 0 };
}

/** `n` workers draining `count` tasks in order. */
async function pool(n: number, count: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

/** 10k VM ports (one network, one group) at the site, then `tries` fresh agents' snapshots. */
export async function timeSiteSnapshot(
  b: SnapshotBench,
  ports: number,
  tries: number,
): Promise<SnapshotResult> {
  const s = b.site;
  const net = await b.admin.create({
    network: {
      meta: meta("snap-net"),
      subnets: [{ cidr: "172.16.0.0/16", gatewayIp: "172.16.0.1" }],
      sites: [s.name],
      vni: 0,
      mtu: 0,
    },
  });
  const sg = await b.admin.create({ securityGroup: { meta: meta("snap-sg"), stateless: false } });
  b.created(2);
  const networkId = net.object!.network!.meta!.id;
  const sgId = sg.object!.securityGroup!.meta!.id;
  await b.settle(60_000);
  const t0 = Date.now();
  await pool(16, ports, async (i) => {
    const n = i + 2;
    await s.api.createPort({
      name: `snap-port-${i}`,
      networkId,
      mac: `02:5e:00:${((i >> 16) & 255).toString(16).padStart(2, "0")}:${((i >> 8) & 255).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`,
      ips: [`172.16.${(n >> 8) & 255}.${n & 255}`],
      securityGroupIds: [sgId],
      hostId: s.hostId,
      interfaceName: `tap${i}`,
    });
  });
  const createSeconds = (Date.now() - t0) / 1000;
  console.log(
    `  created ${ports} ports at ${s.name} in ${createSeconds.toFixed(1)} s (load ${loadavg()[0]!.toFixed(1)})`,
  );
  const settleSeconds = await b.settle(Math.max(120_000, ports * 60));
  const quietSeconds = await waitQuiet(b, QUIET_MS, Math.max(120_000, ports * 30));
  console.log(
    `  settled ${settleSeconds.toFixed(1)} s after, quiet ${quietSeconds.toFixed(1)} s later (load ${loadavg()[0]!.toFixed(1)})`,
  );
  const out: SnapshotResult = {
    ports,
    counts: {},
    bytes: 0,
    parts: 0,
    ms: [],
    attempts: [],
    createSeconds: Number(createSeconds.toFixed(1)),
    settleSeconds: Number(settleSeconds.toFixed(1)),
    quietSeconds: Number(quietSeconds.toFixed(1)),
    load1: 0,
  };
  for (let k = 0; k < tries; k++) {
    const quiet = await b.machineQuiet();
    // The site agent's own watch client, store and simulator view (its channel settings: 4 MiB per
    // message, an 8 MiB flow-control window), in a new process each try, as a new agent.
    const r = await timeSnapshotFresh(s.proc.address, s.hostId, s.hostToken);
    const attempt = {
      ms: Number(r.ms.toFixed(1)),
      load1: Number(loadavg()[0]!.toFixed(2)),
      cpuMs: r.cpuMs,
      quiet: {
        ...quiet,
        seconds: Number(quiet.seconds.toFixed(1)),
        lastBusy: Number(quiet.lastBusy.toFixed(2)),
      },
    };
    console.log(
      `  snapshot try ${k + 1}: ${attempt.ms} ms (load ${attempt.load1}, cpu ${r.cpuMs} ms; ${quietText(quiet)})`,
    );
    out.ms.push(attempt.ms);
    out.attempts!.push(attempt);
    out.counts = r.counts;
    out.bytes = r.bytes;
    out.parts = r.parts;
  }
  out.load1 = Number(loadavg()[0]!.toFixed(2));
  return out;
}

/** Runs the step, logging its result; a failure is recorded in the result, not thrown. */
export async function snapshotStep(b: SnapshotBench, ports: number, tries: number): Promise<SnapshotResult> {
  try {
    const snapshot = await timeSiteSnapshot(b, ports, tries);
    console.log(
      `  snapshot of ${ports} ports (${snapshot.counts.port ?? 0} ports, ${snapshot.counts.rule ?? 0} rules, ` +
        `${(snapshot.bytes / 1e6).toFixed(1)} MB in ${snapshot.parts} messages): ${snapshot.ms.join(", ")} ms`,
    );
    return snapshot;
  } catch (err) {
    console.log(`  snapshot failed: ${(err as Error).message}`);
    return {
      ports,
      counts: {},
      bytes: 0,
      parts: 0,
      ms: [],
      error: (err as Error).message,
      load1: loadavg()[0]!,
    };
  }
}

function quietText(q: QuietResult): string {
  return q.quiet
    ? `machine quiet after ${q.seconds.toFixed(0)} s`
    : `machine NOT quiet after ${q.seconds.toFixed(0)} s (${notQuietWhy(q)})`;
}

/** The results section's line on the snapshot (none when the step did not run). */
export function snapshotMarkdown(s: SnapshotResult | undefined, ratio: number | null): string[] {
  if (s?.error) return [`- snapshot: failed — ${s.error}`];
  if (!s) return [];
  return [
    `- first snapshot of ${s.ports.toLocaleString("en-US")} ports (${(s.counts.port ?? 0).toLocaleString("en-US")} ports, ` +
      `${(s.counts.rule ?? 0).toLocaleString("en-US")} rules, ${Object.values(s.counts)
        .reduce((a, b) => a + b, 0)
        .toLocaleString("en-US")} objects, ` +
      `${(s.bytes / 1e6).toFixed(1)} MB encoded, in ${s.parts} messages), Watch call → snapshot in the agent's topology store and simulator view (the agent can simulate), a new process each try: ${s.ms.join(", ")} ms (load ${s.load1})` +
      (ratio === null ? "." : `; best / 1 s goal = **${ratio}**.`) +
      (s.attempts && s.attempts.length > 0
        ? ` Each try (ms, load): ${s.attempts.map((a) => `${a.ms} (${a.load1})`).join(", ")}.` +
          (s.attempts.some((a) => a.quiet)
            ? ` Before each, the machine was waited for (under ${DEFAULT_QUIET.maxBusy * 100} % of its CPUs for ${DEFAULT_QUIET.windows} s, under ${DEFAULT_QUIET.maxDirtyBytes / 1048576} MB of dirty page cache): ${s.attempts.map((a) => (a.quiet ? quietText(a.quiet) : "not waited for")).join("; ")}.`
            : "")
        : "") +
      (s.createSeconds !== undefined
        ? ` Creating the ports through SiteService took ${s.createSeconds} s, the sites settled ${s.settleSeconds} s after` +
          (s.quietSeconds !== undefined
            ? ` and the site was quiet (no write for ${QUIET_MS / 1000} s) ${s.quietSeconds} s after that; the snapshots were timed then.`
            : ".")
        : ""),
  ];
}
