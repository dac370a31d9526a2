// A real site for multi-site tests and benchmarks: onboarding with `isthmus site add` / `site join`
// as an operator would, then an `isthmus site-controller` process with its own embedded
// PostgreSQL (from the npm package), found by the address it logs at start-up.
import { type ChildProcess, spawn } from "node:child_process";
import { chmod, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { NO_MEMORY_REDUCER_FLAG } from "@isthmus/schema";
import { runningPostgresUrl } from "@isthmus/site-agent";
import pg from "pg";
import { benchLogStream, stopOnExit } from "./child-lifetime.js";
import { CLI, runCli } from "./cli.js";

/** Runs `site add` at `via` and `site join` against every coordinator; returns the credential file. */
export async function onboardSite(
  site: string,
  dir: string,
  coordinators: string[],
  adminTokenFile: string,
): Promise<string> {
  const add = await runCli(
    ["site", "add", site, "--server", coordinators.join(","), "--token-file", adminTokenFile, "-o", "json"],
    { timeoutMs: 120_000 },
  );
  if (add.code !== 0) throw new Error(`isthmus site add ${site} failed: ${add.stderr}`);
  const token = (JSON.parse(add.stdout) as { token: string }).token;
  const joined = await runCli(
    ["site", "join", "--token", token, "--federation", coordinators.join(","), "--key-dir", dir],
    { timeoutMs: 120_000 },
  );
  if (joined.code !== 0) throw new Error(`isthmus site join (${site}) failed: ${joined.stderr}`);
  return join(dir, "credential.json");
}

export interface SiteProcessOptions {
  site: string;
  /** The site's directory (credential, embedded database, admin token). */
  dir: string;
  credential: string;
  /** Extra environment (e.g. ISTHMUS_SITE_CONTROLLER__* tuning). */
  env?: NodeJS.ProcessEnv;
  /** Extra node flags (e.g. --cpu-prof to profile the controller). */
  nodeArgs?: string[];
  startTimeoutMs?: number;
}

/** One `isthmus site-controller` process on the embedded database. */
export class SiteProcess {
  private constructor(
    readonly site: string,
    readonly address: string,
    readonly adminToken: string,
    private readonly child: ChildProcess,
    /** The embedded database's server, killed too if the controller has to be killed. */
    private readonly postgresPid: number,
    private readonly metrics: { address: string },
    /** The site's directory (its controller's data directory is `data` under it). */
    private readonly dir: string,
  ) {}

  /**
   * VACUUM (ANALYZE) of the site's embedded database, as PostgreSQL's documentation advises after
   * a bulk load; returns the seconds it took. Left to autovacuum, the same work came a minute or
   * two after the load, in every site's database at once: on the benchmark's shared 2-CPU machine
   * that was seconds with the CPUs full in the middle of the 100k phase (docs/site-controller.md).
   */
  async vacuum(): Promise<number> {
    const url = await runningPostgresUrl(join(this.dir, "data", "postgres"));
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
    await c.connect();
    try {
      const t0 = Date.now();
      await c.query("VACUUM (ANALYZE)");
      return (Date.now() - t0) / 1000;
    } finally {
      await c.end();
    }
  }

  /** The controller's Prometheus endpoint (host:port; "" until it has said). */
  get metricsAddress(): string {
    return this.metrics.address;
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  static async start(o: SiteProcessOptions): Promise<SiteProcess> {
    await mkdir(o.dir, { recursive: true });
    // As root the database runs as the postgres user, which must reach its directory.
    await chmod(o.dir, 0o755);
    const tokenFile = join(o.dir, "site-admin.token");
    const child = spawn(
      process.execPath,
      [
        // As `isthmus site-controller` would re-execute itself (memory-reducer.ts), without the extra process.
        NO_MEMORY_REDUCER_FLAG,
        ...(o.nodeArgs ?? []),
        CLI,
        "site-controller",
        "--site",
        o.site,
        "--credential",
        o.credential,
        "--data-dir",
        join(o.dir, "data"),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--admin-token-file",
        tokenFile,
      ],
      { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ...o.env } },
    );
    stopOnExit(child);
    const exited = new Promise<never>((_, reject) =>
      child.once("exit", (code) => reject(new Error(`site-controller ${o.site} exited with ${code}`))),
    );
    exited.catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(new Error(`site-controller ${o.site} did not start in ${o.startTimeoutMs ?? 300_000} ms`)),
        o.startTimeoutMs ?? 300_000,
      );
    });
    // Reads the JSON log: where the controller listens (gRPC, then metrics); every line is read
    // (and dropped) so the pipe never fills.
    const lines = createInterface({ input: child.stdout! });
    // ISTHMUS_BENCH_LOG_DIR keeps each controller's JSON log (to read after a failed run).
    const out = benchLogStream(o.site);
    if (out) {
      lines.on("line", (line) => out.write(`${line}\n`));
      lines.on("close", () => out.end());
    }
    let postgresPid = 0;
    const metrics = { address: "" };
    const started = new Promise<string>((resolve, reject) => {
      lines.on("line", (line) => {
        if (!line.startsWith("{")) return;
        let rec: { msg?: string; address?: string; serverPid?: number; metricsAddress?: string };
        try {
          rec = JSON.parse(line) as typeof rec;
        } catch {
          return;
        }
        if (rec.msg === "PostgreSQL server started") postgresPid = rec.serverPid ?? 0;
        if (rec.msg === "site controller started" && rec.address) resolve(rec.address);
        if (rec.msg === "metrics listening" && rec.metricsAddress) metrics.address = rec.metricsAddress;
      });
      lines.on("close", () => reject(new Error(`site-controller ${o.site} ended its log before starting`)));
    });
    started.catch(() => undefined); // the race below reports whichever comes first
    try {
      const address = await Promise.race([started, exited, timeout]);
      // The token file is written right after the "started" line; wait for it (bounded).
      const end = Date.now() + 10_000;
      let token = "";
      while (!token) {
        token = await readFile(tokenFile, "utf8").then(
          (t) => t.trim(),
          () => "",
        );
        if (token) break;
        if (Date.now() > end) throw new Error(`site-controller ${o.site} wrote no admin token`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return new SiteProcess(o.site, address, token, child, postgresPid, metrics, o.dir);
    } catch (err) {
      child.kill("SIGKILL");
      killQuietly(postgresPid);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM (the controller also stops its database); SIGKILL after 20 s. */
  stop(): Promise<void> {
    const c = this.child;
    if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
    return new Promise<void>((resolve) => {
      c.once("exit", () => resolve());
      c.kill("SIGTERM");
      setTimeout(() => {
        c.kill("SIGKILL");
        killQuietly(this.postgresPid);
      }, 20_000).unref();
    });
  }
}

function killQuietly(pid: number): void {
  if (pid <= 0) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}
