// Runs a PostgreSQL server as a child process from a directory of server binaries (the embedded
// npm package's, or Debian's /usr/lib/postgresql/N/bin): initdb on first use, then `postgres`
// on a loopback port. PostgreSQL refuses to run as root, so as root it runs as an unprivileged
// system user (by default "postgres") and the data directory is handed to that user.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import type { Logger } from "@isthmus/schema";
import pg from "pg";
import { clearStalePostmaster } from "./stale-postmaster.js";

export interface PostgresServerOptions {
  binDir: string;
  /** A directory owned by this server alone: data in `dir/data`, the superuser password in
   *  `dir/password`. As root it is handed to the unprivileged user. */
  dir: string;
  /** 0 = pick a free loopback port. */
  port?: number;
  /** Extra server settings (-c name=value), e.g. default_transaction_isolation. */
  settings?: Record<string, string>;
  /** Skip fsync (throwaway test clusters only). */
  unsafeNoSync?: boolean;
  /** When running as root, the user the server runs as. */
  runAsUser?: string;
  log: Logger;
  startTimeoutMs?: number;
}

export interface RunningPostgres {
  url: string;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

const SUPERUSER = "isthmus";

interface UserIds {
  uid: number;
  gid: number;
}

function lookupUser(name: string): UserIds | undefined {
  try {
    const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim());
    return { uid, gid };
  } catch {
    return undefined;
  }
}

function chownTree(path: string, ids: UserIds): void {
  chownSync(path, ids.uid, ids.gid);
  if (statSync(path).isDirectory()) {
    for (const name of readdirSync(path)) chownTree(join(path, name), ids);
  }
}

/** The superuser's URL of a server in this layout (password beside the data directory). */
function serverUrl(password: string, port: number): string {
  return `postgres://${SUPERUSER}:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;
}

/**
 * The URL of the server running on `dir` (startPostgresServer's layout): its password from
 * `dir/password`, its port from `dir/data/postmaster.pid`. For tools beside a running controller
 * (the benchmark's maintenance); throws naming the file when the server is not running.
 */
export async function runningPostgresUrl(dir: string): Promise<string> {
  const pidFile = join(dir, "data", "postmaster.pid");
  const [pid, password] = await Promise.all([
    readFile(pidFile, "utf8").catch(() => {
      throw new Error(`no PostgreSQL server is running on ${dir} (${pidFile} is missing)`);
    }),
    readFile(join(dir, "password"), "utf8"),
  ]);
  // postmaster.pid: pid, data directory, start time, port, ...
  const port = Number(pid.split("\n")[3]);
  if (!Number.isInteger(port) || port <= 0) throw new Error(`${pidFile} names no port`);
  return serverUrl(password.trim(), port);
}

export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Starts (initialising when needed) a server; resolves once it accepts connections. */
export async function startPostgresServer(opts: PostgresServerOptions): Promise<RunningPostgres> {
  const log = opts.log;
  const initdb = join(opts.binDir, "initdb");
  const postgres = join(opts.binDir, "postgres");
  for (const bin of [initdb, postgres]) {
    if (!existsSync(bin)) throw new Error(`PostgreSQL binary ${bin} not found`);
  }
  let ids: UserIds | undefined;
  if (process.getuid?.() === 0) {
    const user = opts.runAsUser ?? "postgres";
    ids = lookupUser(user);
    if (!ids) {
      throw new Error(
        `PostgreSQL refuses to run as root and there is no "${user}" user to run it as; create one (useradd --system ${user}) or run as a non-root user`,
      );
    }
  }
  const dataDir = join(opts.dir, "data");
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  if (ids) {
    // The unprivileged user must be able to reach its directory: let it traverse (not list)
    // the parent we own, typically the controller's data directory or a temp directory.
    const parent = dirname(opts.dir);
    const st = statSync(parent);
    if (st.uid === 0 && (st.mode & 0o001) === 0) chmodSync(parent, (st.mode & 0o7777) | 0o711);
  }
  const passwordFile = join(opts.dir, "password");
  const initialised = existsSync(join(dataDir, "PG_VERSION"));
  if (!initialised) {
    const password = randomBytes(18).toString("base64url");
    writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
    chmodSync(opts.dir, 0o700);
    chmodSync(dataDir, 0o700);
    if (ids) chownTree(opts.dir, ids);
    const args = [
      `--pgdata=${dataDir}`,
      `--username=${SUPERUSER}`,
      `--pwfile=${passwordFile}`,
      "--auth=scram-sha-256",
      "--encoding=UTF8",
      "--locale=C",
    ];
    if (opts.unsafeNoSync) args.push("--no-sync");
    log.info({ dataDir: dataDir }, "initialising PostgreSQL data directory");
    try {
      execFileSync(initdb, args, { ...ids, stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" });
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      const hint = ids
        ? ` (it runs as ${opts.runAsUser ?? "postgres"}; every directory above ${opts.dir} must be searchable by that user)`
        : "";
      throw new Error(`initdb failed for ${dataDir}: ${e.stderr?.trim() || e.message}${hint}`);
    }
  }
  if (!existsSync(passwordFile)) {
    throw new Error(`password file ${passwordFile} for the database in ${dataDir} is missing`);
  }
  const password = readFileSync(passwordFile, "utf8").trim();
  // A server a SIGKILLed controller left running (or its stale lock) would block this start.
  await clearStalePostmaster(dataDir, log);
  const port = opts.port && opts.port > 0 ? opts.port : await freeLoopbackPort();
  const settings: Record<string, string> = {
    listen_addresses: "127.0.0.1",
    unix_socket_directories: "",
    max_connections: "100",
    ...opts.settings,
  };
  if (opts.unsafeNoSync)
    Object.assign(settings, { fsync: "off", synchronous_commit: "off", full_page_writes: "off" });
  const args = ["-D", dataDir, "-p", String(port)];
  for (const [k, v] of Object.entries(settings)) args.push("-c", `${k}=${v}`);
  const child: ChildProcess = spawn(postgres, args, { ...ids, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  const relay = postgresLogRelay(log);
  child.stderr?.on("data", (chunk: Buffer) => {
    const text = chunk.toString("utf8");
    stderr = (stderr + text).slice(-4000);
    relay(text);
  });
  let exited = false;
  const exitPromise = new Promise<void>((resolve) =>
    child.once("exit", () => {
      exited = true;
      resolve();
    }),
  );
  const url = serverUrl(password, port);
  const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
  for (;;) {
    if (exited) throw new Error(`postgres exited during start-up: ${stderr.trim()}`);
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1_000 });
    try {
      await c.connect();
      await c.end();
      break;
    } catch {
      await c.end().catch(() => undefined);
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`postgres did not accept connections on port ${port} in time: ${stderr.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  log.info({ port, serverPid: child.pid }, "PostgreSQL server started");
  return {
    url,
    port,
    pid: child.pid ?? 0,
    async stop() {
      if (exited) return;
      child.kill("SIGINT"); // fast shutdown: roll back open transactions, checkpoint, exit
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exitPromise;
      clearTimeout(timer);
    },
  };
}

/** Longest server log line relayed whole; longer ones are cut (a statement can be megabytes). */
const MAX_RELAYED_LINE = 4096;

/** PostgreSQL's severities, as pino levels: routine ERRORs (a statement's own failure, a
 *  serialization conflict the controller retries) are the controller's to report, so debug. */
const SEVERITY_LEVELS: Record<string, "debug" | "info" | "warn" | "error"> = {
  DEBUG: "debug",
  LOG: "info",
  INFO: "info",
  NOTICE: "info",
  WARNING: "warn",
  ERROR: "debug",
  FATAL: "error",
  PANIC: "error",
};

/**
 * Relays the server's stderr into the controller's log, a JSON line per server line with its
 * severity as the level (checkpoints, shutdowns, warnings: what an operator of the embedded
 * database would otherwise never see). Splits on newlines across chunks; bounded per line.
 */
export function postgresLogRelay(
  log: Pick<Logger, "debug" | "info" | "warn" | "error">,
): (text: string) => void {
  let partial = "";
  const emit = (line: string) => {
    if (line.trim() === "") return;
    // log_line_prefix '%m [%p] ': "2026-11-25 16:00:00.123 UTC [1234] LOG:  checkpoint starting: time"
    const m = /^(?:\S+ \S+ \S+ \[(\d+)\] )?([A-Z]+\d?):\s+(.*)$/.exec(line);
    const severity = m?.[2]?.replace(/\d$/, "") ?? "";
    const level = SEVERITY_LEVELS[severity] ?? "info";
    const fields = {
      postgres: true,
      ...(m?.[1] ? { serverPid: Number(m[1]) } : {}),
      ...(m ? { severity: m[2] } : {}),
    };
    log[level](fields, m?.[3] ?? line);
  };
  const cut = (line: string) =>
    line.length > MAX_RELAYED_LINE ? `${line.slice(0, MAX_RELAYED_LINE)} …(cut)` : line;
  // Past the bound, the rest of that line is dropped up to its newline.
  let skipping = false;
  return (text: string) => {
    const lines = text.split("\n");
    const last = lines.pop() ?? "";
    for (const piece of lines) {
      if (skipping) skipping = false;
      else emit(cut(partial + piece));
      partial = "";
    }
    if (skipping) return;
    partial += last;
    if (partial.length > MAX_RELAYED_LINE) {
      emit(cut(partial));
      partial = "";
      skipping = true;
    }
  };
}
