// Lets a process started by `isthmus dev` stop itself cleanly when its supervisor is gone. The
// supervisor spawns children with an IPC channel; the channel closes when the supervisor exits
// for any reason (even SIGKILL), and the child then runs its normal SIGTERM shutdown, so an
// embedded PostgreSQL is never left behind. Processes started any other way have no channel.
import type { LoggerOptions } from "@isthmus/schema";

/** Whether this process was started by `isthmus dev` (with an IPC channel to it). */
function supervised(): boolean {
  return process.channel !== undefined;
}

/**
 * Where a supervised child logs: stdout, the pipe its supervisor reads. When the supervisor is gone
 * that pipe is broken, and pino's own stdout writer would retry the failed write forever at exit;
 * this one drops lines nobody can read, so the shutdown that follows can finish.
 */
export function supervisedLogDestination(): LoggerOptions["destination"] {
  if (!supervised()) return undefined;
  process.stdout.on("error", () => undefined);
  process.stderr.on("error", () => undefined);
  return {
    write(line: string) {
      if (!process.stdout.destroyed) process.stdout.write(line);
    },
  };
}

export function stopWhenSupervisorLeaves(): void {
  if (!process.channel) return;
  // The channel must not keep the process alive by itself; the servers do that.
  process.channel.unref();
  process.once("disconnect", () => process.kill(process.pid, "SIGTERM"));
}
