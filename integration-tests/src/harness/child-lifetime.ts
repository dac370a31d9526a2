// What the multi-process harness does for the coordinators and controllers it spawns: a JSON log kept
// under ISTHMUS_BENCH_LOG_DIR when that is set (the directory is created), and a SIGTERM when the test
// or benchmark process exits without having stopped the child — an uncaught error must not leave
// them (and a controller's embedded PostgreSQL) running with nobody to stop them.
import type { ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import { join } from "node:path";

/** An appending stream for `<ISTHMUS_BENCH_LOG_DIR>/<name>.log`, or undefined when it is unset. */
export function benchLogStream(name: string): WriteStream | undefined {
  const dir = process.env.ISTHMUS_BENCH_LOG_DIR;
  if (!dir) return undefined;
  mkdirSync(dir, { recursive: true });
  return createWriteStream(join(dir, `${name}.log`), { flags: "a" });
}

const running = new Set<ChildProcess>();
let hooked = false;

/**
 * SIGTERMs `child` if this process exits while it still runs (an 'exit' handler can only send the
 * signal, not wait): the child then shuts down as it would under an operator's SIGTERM — a
 * controller stops its PostgreSQL, which a SIGKILL would leave behind.
 */
export function stopOnExit(child: ChildProcess): void {
  running.add(child);
  child.once("exit", () => running.delete(child));
  if (hooked) return;
  hooked = true;
  process.once("exit", () => {
    for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
  });
}
