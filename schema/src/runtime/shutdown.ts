// SIGTERM/SIGINT handling shared by every long-running process: run the registered stop hooks
// in reverse order once, log, and exit 0 (or 1 if a hook failed or the deadline passed).
import type { Logger } from "pino";

export type StopHook = () => Promise<void> | void;

export function onShutdown(log: Logger, hooks: StopHook[], deadlineMs = 10_000): void {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    const timer = setTimeout(() => {
      log.error({ deadlineMs }, "shutdown did not finish in time; exiting");
      process.exit(1);
    }, deadlineMs);
    timer.unref();
    let code = 0;
    for (const hook of [...hooks].reverse()) {
      try {
        await hook();
      } catch (err) {
        code = 1;
        log.error({ err }, "stop hook failed");
      }
    }
    clearTimeout(timer);
    log.info("stopped");
    log.flush?.();
    process.exit(code);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
}
