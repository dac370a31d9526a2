// One site's agent watch stream in its own small process (agent-watch-child.ts): the rules'
// arrival times are taken there, so the benchmark's own heap and event loop (which would also
// decode every site's catch-up) are not on the path it measures. Same surface as AgentWatch.
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { NO_MEMORY_REDUCER_FLAG, type PauseReport } from "@isthmus/schema";
import type { FromWatcher, ToWatcher } from "./agent-watch-child.js";

const CHILD = fileURLToPath(new URL("./agent-watch-child.js", import.meta.url));

export class AgentWatchProcess {
  /** Rule intent id → Unix ms it arrived in the child's stream (while recording). */
  readonly arrivals = new Map<string, number>();
  revision = -1;
  error: string | undefined;
  private readonly child: ChildProcess;
  private seq = 0;
  private closed = false;
  private readonly waiting = new Map<number, (m: FromWatcher) => void>();

  constructor(
    readonly site: string,
    address: string,
    hostId: string,
    hostToken: string,
  ) {
    this.child = fork(CHILD, [site, address, hostId, hostToken], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      // As an agent runs (agent.ts: agentReexec): no compacting collections 8 s after its snapshot.
      execArgv: [...process.execArgv, NO_MEMORY_REDUCER_FLAG],
    });
    this.child.on("message", (m: FromWatcher) => {
      if (m.type === "arrival") this.arrivals.set(m.id, m.at);
      else if (m.type === "revision") {
        this.revision = m.revision;
        if (m.error) this.error = m.error;
      } else this.waiting.get(m.seq)?.(m);
    });
    this.child.on("exit", (code, signal) => {
      if (!this.closed) this.error ??= `watcher process exited (${signal ?? code})`;
      for (const w of this.waiting.values()) w({ type: "ack", seq: -1 });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  private ask(
    m: { type: "recording"; on: boolean } | { type: "pauses"; after: number },
    ms = 10_000,
  ): Promise<FromWatcher> {
    const seq = ++this.seq;
    return new Promise<FromWatcher>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(seq);
        reject(new Error(`${this.site} watcher did not answer ${m.type} in ${ms} ms`));
      }, ms);
      this.waiting.set(seq, (r) => {
        clearTimeout(timer);
        this.waiting.delete(seq);
        if (r.type === "ack" && r.seq === -1) reject(new Error(`${this.site} watcher exited`));
        else resolve(r);
      });
      this.child.send({ ...m, seq } as ToWatcher);
    });
  }

  /** Starts or stops timestamping rules; resolves once the child has it. */
  async setRecording(on: boolean): Promise<void> {
    await this.ask({ type: "recording", on });
  }

  /** The child's GC pauses and event-loop stalls that ended after Unix ms `after`. */
  async pauses(after: number): Promise<PauseReport> {
    const r = await this.ask({ type: "pauses", after });
    if (r.type !== "pauses") throw new Error(`${this.site} watcher: unexpected ${r.type}`);
    return r.report;
  }

  close(): void {
    this.closed = true;
    if (this.child.connected) this.child.disconnect();
    const c = this.child;
    setTimeout(() => {
      if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    }, 5_000).unref();
  }
}
