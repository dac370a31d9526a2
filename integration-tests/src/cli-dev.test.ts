// The README's run command: `isthmus dev` as its own process runs a whole local federation (3
// coordinators; per site a controller on its embedded PostgreSQL, a host agent and a gateway
// agent). Intent applied at the federation reaches both sites, a killed child comes back, SIGTERM
// leaves no process behind (databases included), and a restart reuses the data directory.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { credentials, Metadata } from "@grpc/grpc-js";
import { topologypb } from "@isthmus/schema";
import { CLI, runCli } from "./harness/cli.js";

const EXAMPLE = fileURLToPath(new URL("../../docs/examples/two-site-web.yaml", import.meta.url));

interface Rec {
  msg?: string;
  proc?: string;
  pid?: number;
  childPid?: number;
  serverPid?: number;
  [k: string]: unknown;
}

interface UpRecord {
  health: string;
  server: string;
  dataDir: string;
  adminTokenFile: string;
  sites: {
    name: string;
    controller: string;
    adminTokenFile: string;
    agents: { name: string; role: string; admin: string; tunnel: string }[];
  }[];
}

/** `isthmus dev` as a child process whose JSON log lines we keep and can wait on. */
class Dev {
  readonly records: Rec[] = [];
  readonly exited: Promise<number | null>;
  private waiters: (() => void)[] = [];

  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      try {
        this.records.push(JSON.parse(line) as Rec);
      } catch {
        return;
      }
      for (const w of this.waiters) w();
    });
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  }

  static start(args: string[]): Dev {
    return new Dev(spawn(process.execPath, [CLI, "dev", ...args], { stdio: ["ignore", "pipe", "pipe"] }));
  }

  /** Resolves with the first record (from `from` on) matching, or fails after `ms`. */
  async waitFor(what: string, match: (r: Rec) => boolean, ms: number, from = 0): Promise<Rec> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.records.slice(from).find(match);
      if (found) return found;
      if (this.child.exitCode !== null) throw new Error(`isthmus dev exited while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 1_000));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
      this.waiters = [];
    }
  }

  /** Every process dev started and every database those started. */
  pids(): number[] {
    const pids = new Set<number>();
    for (const r of this.records) {
      if (r.msg === "started child process" && r.childPid) pids.add(r.childPid);
      if (r.proc && r.serverPid) pids.add(r.serverPid);
    }
    return [...pids];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

async function until<T>(
  what: string,
  ms: number,
  f: () => Promise<T | undefined> | T | undefined,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Bridges in the first snapshot the site controller serves to a watcher. */
function bridgeNames(controller: string, token: string): Promise<string[]> {
  const client = new topologypb.TopologyServiceClient(controller, credentials.createInsecure());
  const md = new Metadata();
  md.set("authorization", `Bearer ${token}`);
  return new Promise<string[]>((resolve, reject) => {
    const stream = client.watch({ hostId: "cli-dev-test", fromRevision: 0 }, md, {
      deadline: Date.now() + 5_000,
    });
    stream.on("data", (e: topologypb.WatchTopologyResponse) => {
      if (!e.snapshot) return;
      resolve(e.snapshot.objects.flatMap((o) => (o.bridge ? [o.bridge.name] : [])).sort());
      stream.cancel();
    });
    stream.on("error", (err) => reject(err));
  }).finally(() => client.close());
}

async function siteStatus(controller: string, tokenFile: string) {
  const r = await runCli(["site", "status", "--controller", controller, "--token-file", tokenFile, "--json"]);
  if (r.code !== 0) return undefined;
  return JSON.parse(r.stdout) as { hosts?: number; federationConnected?: boolean; appliedIndex?: string };
}

/** Both agents of a site answer on their admin endpoint and follow the controller. */
async function agentsConnected(site: UpRecord["sites"][number]): Promise<boolean> {
  for (const a of site.agents) {
    const res = await fetch(`http://${a.admin}/status`, { signal: AbortSignal.timeout(3_000) });
    const s = (await res.json()) as { controllerConnected?: boolean; role?: string };
    if (!s.controllerConnected || s.role !== a.role) return false;
  }
  return true;
}

async function stopAndCheck(dev: Dev): Promise<void> {
  const pids = dev.pids();
  assert.ok(pids.length >= 2, `child pids seen: ${pids.join(",")}`);
  dev.child.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([
    dev.exited,
    new Promise<string>((r) => {
      timer = setTimeout(() => r("still running after 60 s"), 60_000);
    }),
  ]);
  clearTimeout(timer);
  assert.equal(code, 0, "isthmus dev exits 0 after SIGTERM");
  const left = pids.filter(alive);
  assert.deepEqual(left, [], `processes left behind: ${left.join(", ")}`);
}

test("isthmus dev runs two sites with agents; intent reaches both; SIGTERM leaves nothing behind", async (t) => {
  // Port 0: dev takes every port from the same below-the-ephemeral-range picker as fixedPort
  // (harness/ports.ts), so nothing collides with concurrent tests or a developer's `npm start`.
  const dev = Dev.start(["--listen", "127.0.0.1:0", "--ephemeral"]);
  const stderr: string[] = [];
  createInterface({ input: dev.child.stderr! }).on("line", (l) => stderr.push(l));
  t.after(() => {
    if (dev.child.exitCode === null) dev.child.kill("SIGKILL");
  });
  const up = (await dev.waitFor(
    "the dev federation",
    (r) => r.msg?.startsWith("isthmus dev is up") ?? false,
    150_000,
  )) as unknown as UpRecord;
  assert.deepEqual(
    up.sites.map((s) => s.name),
    ["ams", "fra"],
  );
  const usage = await until("the usage text on stderr", 10_000, () => {
    const text = stderr.join("\n");
    return text.includes("site status --controller") ? text : undefined;
  });
  assert.match(usage, /ISTHMUS_SERVER=127\.0\.0\.1:\d+/, "prints how to use it");
  assert.match(usage, /apply -f docs\/examples\/two-site-web\.yaml/);
  for (const s of up.sites) {
    assert.deepEqual(
      s.agents.map((a) => a.role),
      ["host", "gateway"],
    );
  }
  const probe = await until("health SERVING", 60_000, async () => {
    const r = await runCli(["health", "--address", up.health]);
    return r.code === 0 ? r.stdout : undefined;
  });
  assert.match(probe, /SERVING_STATUS_SERVING/);

  // Both sites are registered, follow the federation, and their two agents follow them.
  const conn = ["--server", up.server, "--token-file", up.adminTokenFile];
  for (const s of up.sites) {
    await until(`${s.name} following the federation with 2 hosts`, 60_000, async () => {
      const st = await siteStatus(s.controller, s.adminTokenFile);
      return st?.federationConnected && st.hosts === 2 ? st : undefined;
    });
    await until(`${s.name}'s agents connected`, 60_000, async () =>
      (await agentsConnected(s)) ? true : undefined,
    );
  }
  const sites = await runCli(["site", "list", "-o", "json", ...conn]);
  assert.equal(sites.code, 0, sites.stderr);
  const listed = (JSON.parse(sites.stdout) as { sites: { name: string; state: string }[] }).sites;
  assert.deepEqual(listed.map((s) => [s.name, s.state]).sort(), [
    ["ams", "active"],
    ["fra", "active"],
  ]);

  // The README's example: the stretched network reaches both sites, the db network only fra.
  const applied = await runCli(["apply", "-f", EXAMPLE, ...conn]);
  assert.equal(applied.code, 0, applied.stderr);
  assert.match(applied.stdout, /network\/web created/);
  const [ams, fra] = up.sites as [UpRecord["sites"][number], UpRecord["sites"][number]];
  const tokenOf = (s: UpRecord["sites"][number]) => readFileSync(s.adminTokenFile, "utf8").trim();
  await until("web at ams", 60_000, async () => {
    const b = await bridgeNames(ams.controller, tokenOf(ams));
    return b.length === 1 ? b : undefined;
  });
  await until("web and db at fra", 60_000, async () => {
    const b = await bridgeNames(fra.controller, tokenOf(fra));
    return b.length === 2 ? b : undefined;
  });
  // Each site's gateway endpoint went up to the federation (realized state).
  const gateways = await until("both gateways reported", 60_000, async () => {
    const r = await runCli(["get", "gateways", "-o", "json", ...conn]);
    return r.code === 0 && r.stdout.includes("ams-gw-1") && r.stdout.includes("fra-gw-1")
      ? r.stdout
      : undefined;
  });
  assert.match(gateways, new RegExp(ams.agents[1]!.tunnel.split(":")[0]!.replaceAll(".", "\\.")));

  await stopAndCheck(dev);
  assert.equal(existsSync(up.dataDir), false, "--ephemeral removes its data directory");
});

test("isthmus dev restarts a killed site controller (its database too), reuses .isthmus on restart, and leaves nothing when killed", async (t) => {
  const base = await mkdtemp(join(tmpdir(), "isthmus-dev-restart-"));
  await chmod(base, 0o755); // as root the database runs as another user, which must reach it
  t.after(() => rm(base, { recursive: true, force: true }));
  const dataDir = join(base, "state");
  const args = ["--listen", "127.0.0.1:0", "--data-dir", dataDir, "--sites", "1"];
  const first = Dev.start(args);
  t.after(() => {
    if (first.child.exitCode === null) first.child.kill("SIGKILL");
  });
  const up = (await first.waitFor(
    "the dev federation",
    (r) => r.msg?.startsWith("isthmus dev is up") ?? false,
    150_000,
  )) as unknown as UpRecord;
  const site = up.sites[0]!;
  assert.equal(site.name, "ams");

  // SIGKILL the controller: its database is stopped for it, and it comes back on the same data.
  const started = first.records.find((r) => r.msg === "started child process" && r.proc === "ams/controller");
  const dbStarted = first.records.find(
    (r) => r.proc === "ams/controller" && r.msg === "PostgreSQL server started",
  );
  assert.ok(started?.childPid && dbStarted?.serverPid);
  const mark = first.records.length;
  process.kill(started.childPid, "SIGKILL");
  await first.waitFor(
    "the controller restarted",
    (r) => r.proc === "ams/controller" && r.msg === "site controller started",
    60_000,
    mark,
  );
  assert.equal(alive(dbStarted.serverPid), false, "the orphaned database was stopped");
  assert.ok(
    first.records.slice(mark).some((r) => r.msg === "ams/controller exited unexpectedly; restarting"),
    "the death is reported",
  );
  await until("ams following the federation again", 60_000, async () => {
    const st = await siteStatus(site.controller, site.adminTokenFile);
    return st?.federationConnected && st.hosts === 2 ? st : undefined;
  });
  await stopAndCheck(first);

  // A second start finds the keys, the site's credential and its database where it left them.
  const second = Dev.start(args);
  t.after(() => {
    if (second.child.exitCode === null) second.child.kill("SIGKILL");
  });
  const up2 = (await second.waitFor(
    "the dev federation again",
    (r) => r.msg?.startsWith("isthmus dev is up") ?? false,
    150_000,
  )) as unknown as UpRecord;
  assert.ok(second.records.some((r) => r.msg === "site joined on an earlier start; reusing its credential"));
  assert.ok(!second.records.some((r) => r.msg === "initialising PostgreSQL data directory"));
  const site2 = up2.sites[0]!;
  await until("ams following the restarted federation", 60_000, async () => {
    const st = await siteStatus(site2.controller, site2.adminTokenFile);
    return st?.federationConnected && st.hosts === 2 ? st : undefined;
  });

  // Even a supervisor killed outright leaves nothing: each child sees its IPC channel close and
  // runs its own SIGTERM shutdown, which stops the database.
  const pids = second.pids();
  second.child.kill("SIGKILL");
  await second.exited;
  await until("every child of the killed supervisor gone", 60_000, () =>
    pids.some(alive) ? undefined : true,
  );
});

test("isthmus dev names a bad --listen value", async () => {
  const r = await runCli(["dev", "--listen", "not-an-address"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /field "listen"/);
  assert.match(r.stderr, /flag --listen/);
});

test("isthmus dev names a bad --sites value", async () => {
  const r = await runCli(["dev", "--ephemeral", "--sites", "Bad_Name"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--sites: "Bad_Name" is not a valid site name/);
});
