// Runs `isthmus agent` as a separate process and learns its ports from its "agent started" log line.
import { type ChildProcess, spawn } from "node:child_process";
import { mallocHugePagesEnv, NO_MEMORY_REDUCER_FLAG } from "@isthmus/schema";
import { benchLogStream } from "./child-lifetime.js";
import { CLI } from "./cli.js";

export interface AgentProc {
  child: ChildProcess;
  metricsPort: number;
  adminPort: number;
  logs: string[];
  /** Sends SIGTERM and resolves with the exit code. */
  stop(): Promise<number | null>;
}

/**
 * The flags of an agent for host `h` of `controller`: its tunnel endpoint (`tunnelPort`, default
 * the host's registered one) and metrics and admin servers on ephemeral loopback ports.
 */
export function hostAgentArgs(
  h: { id: string; tunnelIp: string; tunnelPort: number },
  controller: string,
  tunnelPort = h.tunnelPort,
): string[] {
  return [
    "--host",
    h.id,
    "--controller",
    controller,
    "--tunnel-ip",
    h.tunnelIp,
    "--tunnel-port",
    String(tunnelPort),
    "--metrics-listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
  ];
}

/**
 * `nodeArgs` go to node before the CLI (V8 flags such as --trace-gc for a probe). The start-up
 * deadline is generous: on a loaded 2-core machine node alone can take seconds to load the CLI.
 */
export function spawnAgent(args: string[], timeoutMs = 60_000, nodeArgs: string[] = []): Promise<AgentProc> {
  // With the environment and node flag the agent would otherwise re-execute itself with (agentReexec).
  const child = spawn(process.execPath, [NO_MEMORY_REDUCER_FLAG, ...nodeArgs, CLI, "agent", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: mallocHugePagesEnv(process.env),
  });
  const logs: string[] = [];
  // ISTHMUS_BENCH_LOG_DIR keeps each agent's output (its JSON log, and what node flags such as
  // --trace-gc print) in a file per process.
  const host = args.includes("--host") ? args[args.indexOf("--host") + 1] : undefined;
  const out = benchLogStream(`agent-${host ?? "unnamed"}-${child.pid}`);
  if (out) {
    child.stdout?.on("data", (d) => out.write(d));
    child.stderr?.on("data", (d) => out.write(d));
    child.once("close", () => out.end());
  }
  let buf = "";
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`agent did not start in ${timeoutMs} ms:\n${logs.join("\n")}`));
    }, timeoutMs);
    child.stderr?.on("data", (d) => logs.push(String(d)));
    child.stdout?.on("data", (d) => {
      buf += d;
      let i = buf.indexOf("\n");
      while (i >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        i = buf.indexOf("\n");
        if (logs.length < 2000) logs.push(line);
        try {
          const j = JSON.parse(line) as { msg?: string; metrics?: number; admin?: number };
          if (j.msg === "agent started") {
            clearTimeout(timer);
            resolve({
              child,
              metricsPort: j.metrics ?? 0,
              adminPort: j.admin ?? 0,
              logs,
              stop: () => {
                child.kill("SIGTERM");
                return exited;
              },
            });
          }
        } catch {
          // not a JSON log line
        }
      }
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited with ${code} before starting:\n${logs.join("\n")}`));
    });
  });
}
