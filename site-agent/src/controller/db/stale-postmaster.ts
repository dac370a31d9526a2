// A PostgreSQL server outlives a controller that was SIGKILLed: it keeps running and its
// postmaster.pid keeps the data directory locked, so the next start would fail. Before starting,
// this looks at the pid file: a live postgres serving this very directory is stopped (fast
// shutdown, then SIGKILL); a file naming a dead process, a zombie or someone else is removed.
import { readFileSync, readlinkSync, realpathSync, unlinkSync } from "node:fs";
import { basename, resolve } from "node:path";
import type { Logger } from "@isthmus/schema";

export type StaleOutcome = "none" | "removed-stale-pid-file" | "stopped-left-running";

export interface ClearStaleOptions {
  /** How long the left-running server gets for a fast shutdown before SIGKILL. */
  stopTimeoutMs?: number;
}

/** Whether `pid` is a running (not zombie) process. */
export function processRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  try {
    // "pid (comm) S …": the state follows the last ')' (comm may hold spaces or parentheses).
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** The command line of a process (undefined when gone or unreadable). */
function commandLine(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return undefined;
  }
}

function isPostgres(args: string[] | undefined): boolean {
  return basename(args?.[0] ?? "") === "postgres";
}

function realOrResolved(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return resolve(path);
  }
}

/** Whether `pid` is a postgres postmaster started with `-D` naming `dataDir`. */
export function isPostmasterOf(pid: number, dataDir: string): boolean {
  const args = commandLine(pid);
  if (!args || !isPostgres(args)) return false;
  const i = args.indexOf("-D");
  const d = i >= 0 ? args[i + 1] : undefined;
  if (!d) return false;
  let cwd: string;
  try {
    cwd = readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    cwd = process.cwd(); // not ours to read; the controller starts it from its own cwd
  }
  return realOrResolved(resolve(cwd, d)) === realOrResolved(dataDir);
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (processRunning(pid)) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/** Makes `dataDir` startable again after a controller died without stopping its server. */
export async function clearStalePostmaster(
  dataDir: string,
  log: Logger,
  opts: ClearStaleOptions = {},
): Promise<StaleOutcome> {
  const pidFile = `${dataDir}/postmaster.pid`;
  let text: string;
  try {
    text = readFileSync(pidFile, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "none";
    throw err;
  }
  const pid = Number(text.split("\n")[0]);
  if (Number.isInteger(pid) && pid > 0 && processRunning(pid) && isPostmasterOf(pid, dataDir)) {
    log.warn({ pid, dataDir }, "a PostgreSQL server left running on this data directory; stopping it");
    // SIGINT is PostgreSQL's fast shutdown: it ends the dead controller's sessions and exits
    // cleanly, where SIGTERM (smart shutdown) would wait for every client to leave.
    process.kill(pid, "SIGINT");
    if (!(await waitGone(pid, opts.stopTimeoutMs ?? 10_000))) {
      log.warn({ pid }, "the left-running PostgreSQL server did not stop in time; killing it");
      process.kill(pid, "SIGKILL");
      if (!(await waitGone(pid, 5_000))) {
        throw new Error(`cannot stop PostgreSQL (pid ${pid}) still running on ${dataDir}`);
      }
    }
    // A clean shutdown removes the file; after SIGKILL it is stale.
    removeIfPresent(pidFile);
    return "stopped-left-running";
  }
  if (Number.isInteger(pid) && pid > 0 && processRunning(pid) && isPostgres(commandLine(pid))) {
    // A postgres we cannot tie to this directory: removing its lock could let two servers share
    // the data, so leave it to the operator.
    throw new Error(
      `${pidFile} names a running PostgreSQL (pid ${pid}) that does not look like this directory's server; stop it, or remove the file if it is not`,
    );
  }
  // Dead, a zombie, or a reused pid that is not a postgres: the lock is stale.
  log.warn({ pid, dataDir }, "removing a stale postmaster.pid (its process is gone)");
  removeIfPresent(pidFile);
  return "removed-stale-pid-file";
}

function removeIfPresent(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}
