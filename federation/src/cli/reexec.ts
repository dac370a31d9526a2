// Runs this command again as a child with node flags that V8 reads only at start-up (and node
// refuses in NODE_OPTIONS): the agent's young-generation floor and malloc tunables, a server's
// --no-memory-reducer. The parent stays as a thin supervisor: it passes on SIGTERM/SIGINT/SIGHUP
// and exits with the child's status. The child gets an IPC channel, so it stops cleanly when the
// parent dies however it dies (parent-watch.ts); the parent stops the child when its own
// supervisor leaves.
import { spawn } from "node:child_process";
import { constants } from "node:os";

/** Re-executes with `flags` ahead of this process's own and `env`; resolves with the exit status. */
export async function reexecNode(flags: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const child = spawn(process.execPath, [...flags, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: ["inherit", "inherit", "inherit", "ipc"],
    env,
  });
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    process.on(sig, () => child.kill(sig));
  }
  if (process.channel) process.once("disconnect", () => child.kill("SIGTERM"));
  const code = await new Promise<number>((resolve) => {
    child.on("exit", (code, signal) => {
      // A child killed by a signal: 128 + its number, as a shell reports it.
      resolve(code ?? (signal ? 128 + (constants.signals[signal] ?? 0) : 0));
    });
  });
  process.channel?.unref();
  return code;
}
