// Runs the child processes of `isthmus dev` (site controllers, agents) and keeps them running:
// each child's JSON log lines are relayed to our stdout tagged with `proc`, a child that dies is
// reported with its last stderr lines and restarted with capped exponential backoff (optionally,
// one that keeps dying stops everything instead). Stop order is by tier (agents first).
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import type { Logger } from "@isthmus/schema";

/** One parsed child log line (pino JSON); fields we look at are optional. */
export interface ChildRecord {
  msg?: string;
  [field: string]: unknown;
}

export interface ChildSpec {
  /** Shown in every relayed line as `proc`, e.g. "ams/controller". */
  name: string;
  /** Arguments after the `isthmus` binary. */
  args: string[];
  /** The line that means the child is up (e.g. msg "agent started"). */
  ready: (rec: ChildRecord) => boolean;
  /** Sees every parsed line (e.g. to learn the pid of a database the child started). */
  onRecord?: (rec: ChildRecord) => void;
  /** Runs after every exit, before a restart (e.g. stop a database the child left behind). */
  afterExit?: () => Promise<void>;
  /** Higher tiers stop first. */
  tier: number;
  startTimeoutMs?: number;
  /** The child's environment, instead of the supervisor's. */
  env?: (base: NodeJS.ProcessEnv) => NodeJS.ProcessEnv;
  /** Node flags ahead of the `isthmus` binary (those it would otherwise re-execute itself with). */
  nodeArgs?: string[];
}

export interface SupervisorOptions {
  log: Logger;
  /** Node script of the `isthmus` binary. */
  cli: string;
  /** Relayed child lines go here (the same stream as our own log, so lines never interleave). */
  write: (line: string) => void;
  /** Called once when a child cannot be kept running; the caller stops everything. */
  onFatal: (err: Error) => void;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Restarts in a row (each up less than `stableMs`) before giving up; 0 = never give up. */
  maxRestarts?: number;
  /** A child up this long has its failure count reset. */
  stableMs?: number;
  /** SIGTERM, then SIGKILL after this long. */
  stopTimeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

const STDERR_TAIL = 20;
const MAX_LINE = 64 * 1024;

/** Whether a process runs (a zombie, exited but not yet reaped, counts as gone). */
export function pidAlive(pid: number): boolean {
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  // A zombie (exited, not yet reaped by its new parent) holds nothing; count it as gone.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true;
  }
}

/** Comm name of a live process ("" when unknown), to check a pid still is what we think. */
export function processName(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}

/** Sends `signal`, waits up to `ms` for the pid to go, then SIGKILL. Resolves when gone. */
export async function stopPid(pid: number, signal: NodeJS.Signals, ms: number): Promise<void> {
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  const deadline = Date.now() + ms;
  while (pidAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (pidAlive(pid)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
}

export class SupervisedChild {
  child: ChildProcess | undefined;
  restarts = 0;
  private failures = 0;
  /** Restarts are for children that ran once; a first start that fails fails `isthmus dev`. */
  private everReady = false;
  private upSince = 0;
  private stopping = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private exited: Promise<void> = Promise.resolve();
  private readonly stderrTail: string[] = [];

  constructor(
    readonly spec: ChildSpec,
    private readonly sup: Supervisor,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Spawns the child; resolves when it logs its ready line, rejects if it exits or times out first. */
  launch(): Promise<void> {
    const { spec } = this;
    const { opts } = this.sup;
    const child = spawn(process.execPath, [...(spec.nodeArgs ?? []), opts.cli, ...spec.args], {
      // Own process group: a terminal's Ctrl-C reaches only `isthmus dev`, which stops children in
      // order. The IPC channel closes if we die, and the child then stops itself (parent-watch.ts).
      detached: true,
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      env: spec.env ? spec.env(opts.env ?? process.env) : (opts.env ?? process.env),
    });
    this.child = child;
    this.stderrTail.length = 0;
    const log = opts.log;
    let readyResolve!: () => void;
    let readyReject!: (err: Error) => void;
    let isReady = false;
    const ready = new Promise<void>((res, rej) => {
      readyResolve = res;
      readyReject = rej;
    });
    const timer = setTimeout(() => {
      if (isReady) return;
      readyReject(
        new Error(`${spec.name} did not start within ${spec.startTimeoutMs ?? 60_000} ms${this.lastWords()}`),
      );
      child.kill("SIGKILL");
    }, spec.startTimeoutMs ?? 60_000);
    timer.unref();

    const prefix = `{"proc":${JSON.stringify(spec.name)},`;
    createInterface({ input: child.stdout! }).on("line", (raw) => {
      const line = raw.length > MAX_LINE ? raw.slice(0, MAX_LINE) : raw;
      let rec: ChildRecord | undefined;
      if (line.startsWith("{") && line.endsWith("}")) {
        try {
          rec = JSON.parse(line) as ChildRecord;
        } catch {
          rec = undefined;
        }
      }
      if (!rec) {
        log.info({ proc: spec.name, stream: "stdout" }, line);
        return;
      }
      opts.write(`${prefix}${line.slice(1)}\n`);
      spec.onRecord?.(rec);
      if (!isReady && spec.ready(rec)) {
        isReady = true;
        this.everReady = true;
        this.upSince = Date.now();
        clearTimeout(timer);
        readyResolve();
      }
    });
    createInterface({ input: child.stderr! }).on("line", (line) => {
      this.stderrTail.push(line);
      if (this.stderrTail.length > STDERR_TAIL) this.stderrTail.shift();
      log.warn({ proc: spec.name, stream: "stderr" }, line.slice(0, MAX_LINE));
    });
    child.on("error", (err) => log.error({ proc: spec.name, err }, "could not spawn"));
    this.exited = new Promise<void>((resolveExit) => {
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        void (async () => {
          await spec
            .afterExit?.()
            .catch((err) => log.error({ proc: spec.name, err }, "clean-up after exit failed"));
          resolveExit();
          if (!isReady) {
            readyReject(
              new Error(
                `${spec.name} exited (${signal ?? `code ${code}`}) before it was ready${this.lastWords()}`,
              ),
            );
          }
          if (!this.stopping && this.everReady) this.died(code, signal, isReady);
        })();
      });
    });
    log.info({ proc: spec.name, childPid: child.pid, args: spec.args }, "started child process");
    return ready;
  }

  private lastWords(): string {
    return this.stderrTail.length > 0 ? `; its last stderr lines:\n  ${this.stderrTail.join("\n  ")}` : "";
  }

  /** An unexpected exit: report, then restart with backoff or give up. */
  private died(code: number | null, signal: NodeJS.Signals | null, wasReady: boolean): void {
    const { opts } = this.sup;
    const stableMs = opts.stableMs ?? 30_000;
    if (wasReady && Date.now() - this.upSince >= stableMs) this.failures = 0;
    this.failures++;
    const maxRestarts = opts.maxRestarts ?? 0;
    const exit = signal ?? `code ${code}`;
    if (maxRestarts > 0 && this.failures > maxRestarts) {
      opts.onFatal(
        new Error(
          `${this.spec.name} exited (${exit}) ${this.failures} times in a row; giving up${this.lastWords()}`,
        ),
      );
      return;
    }
    const delay = Math.min(
      (opts.backoffInitialMs ?? 1_000) * 2 ** (this.failures - 1),
      opts.backoffMaxMs ?? 30_000,
    );
    opts.log.error(
      { proc: this.spec.name, exit, restartInMs: delay, failures: this.failures, stderr: this.stderrTail },
      `${this.spec.name} exited unexpectedly; restarting`,
    );
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopping) return;
      this.restarts++;
      // A start that fails is another exit, which lands in died() again.
      this.launch().catch((err: Error) =>
        opts.log.warn({ proc: this.spec.name, err: err.message }, "restart failed"),
      );
    }, delay);
    this.restartTimer.unref();
  }

  /** SIGTERM (SIGKILL after the stop timeout) and wait for exit and clean-up. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null && child.pid) {
      const killer = setTimeout(() => {
        this.sup.opts.log.warn({ proc: this.spec.name }, "did not stop in time; SIGKILL");
        child.kill("SIGKILL");
      }, this.sup.opts.stopTimeoutMs ?? 15_000);
      child.kill("SIGTERM");
      await this.exited;
      clearTimeout(killer);
    } else {
      await this.exited;
    }
  }
}

export class Supervisor {
  private readonly children: SupervisedChild[] = [];
  private stopped = false;

  constructor(readonly opts: SupervisorOptions) {}

  /** Starts a child and resolves once it is ready (it is supervised from then on). */
  async start(spec: ChildSpec): Promise<SupervisedChild> {
    if (this.stopped) throw new Error("the supervisor is stopping");
    const c = new SupervisedChild(spec, this);
    this.children.push(c);
    await c.launch();
    return c;
  }

  list(): readonly SupervisedChild[] {
    return this.children;
  }

  /** Stops every child, highest tier first, a tier's children in parallel. */
  async stopAll(): Promise<void> {
    this.stopped = true;
    const tiers = [...new Set(this.children.map((c) => c.spec.tier))].sort((a, b) => b - a);
    for (const tier of tiers) {
      await Promise.all(this.children.filter((c) => c.spec.tier === tier).map((c) => c.stop()));
    }
  }
}
