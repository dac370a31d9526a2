// `isthmus agent`: runs this host's edge agent (site-agent's entry point, loaded only here) until
// SIGTERM/SIGINT.
import {
  createLogger,
  logMemoryReducer,
  memoryReducerChoice,
  memoryReducerFlags,
  onShutdown,
  withMallocHugePages,
} from "@isthmus/schema";
import { stopWhenSupervisorLeaves, supervisedLogDestination } from "./parent-watch.js";
import { reexecNode } from "./reexec.js";

export interface AgentCommandOptions {
  config?: string;
  host?: string;
  name?: string;
  adminTokenFile?: string;
  controller?: string;
  tokenFile?: string;
  tunnelIp?: string;
  tunnelPort?: string;
  role?: string;
  wanIp?: string;
  wanPort?: string;
  metricsListen?: string;
  adminListen?: string;
  datapath?: string;
  upcallBusyPollUs?: string;
}

/**
 * The young generation's floor (MB) for a kernel-path agent. V8 shrinks an idle process's young
 * generation to 1 MB and a first packet then meets a scavenge every ~100 new flows; with a floor
 * it meets one every ~900, which leaves a p99 of flow setup almost untouched (measured in
 * docs/kernel-datapath.md, seventh pass). V8 reads it only at start-up and node refuses it in
 * NODE_OPTIONS, so the agent re-executes node with it.
 */
export const KERNEL_AGENT_MIN_SEMI_SPACE_MB = 8;
const REEXEC_ENV = "ISTHMUS_AGENT_REEXEC";

/** What the agent re-executes node with: V8 flags and an environment. */
export interface AgentReexec {
  flags: string[];
  env: NodeJS.ProcessEnv;
}

/**
 * How to re-execute, or undefined when this process already runs as the agent should: the young
 * generation's floor on the kernel path, V8's memory reducer off (memory-reducer.ts: its compacting
 * collections would come 8 s after a first snapshot, in the middle of flow set-ups) unless
 * ISTHMUS_MEMORY_REDUCER=1, and glibc's huge pages for malloc'd memory (malloc-env.ts: a first
 * snapshot's buffers, read once at start-up) on Linux unless GLIBC_TUNABLES already says.
 * A launcher that sets both itself (isthmus dev, the tests' harness) spares the extra process.
 */
export function agentReexec(
  datapath: string,
  execArgv: readonly string[],
  env: NodeJS.ProcessEnv,
  platform: NodeJS.Platform = process.platform,
): AgentReexec | undefined {
  if (env[REEXEC_ENV] === "1") return undefined;
  const flags = [
    ...(datapath === "kernel" && !execArgv.some((a) => a.startsWith("--min-semi-space-size"))
      ? [`--min-semi-space-size=${KERNEL_AGENT_MIN_SEMI_SPACE_MB}`]
      : []),
    ...memoryReducerFlags(memoryReducerChoice(execArgv, env)),
  ];
  const hugePages = withMallocHugePages(env, platform);
  if (flags.length === 0 && hugePages === undefined) return undefined;
  return { flags, env: hugePages ?? env };
}

export async function runAgent(opts: AgentCommandOptions): Promise<void> {
  const { startAgent, loadAgentConfig } = await import("@isthmus/site-agent");
  const again = agentReexec(loadAgentConfig(opts).datapath, process.execArgv, process.env);
  if (again) {
    process.exitCode = await reexecNode(again.flags, { ...again.env, [REEXEC_ENV]: "1" });
    return;
  }
  const log = createLogger({
    name: "agent",
    base: { host: opts.host ?? opts.name },
    destination: supervisedLogDestination(),
  });
  logMemoryReducer(log, memoryReducerChoice(process.execArgv, process.env));
  // Signals are handled from the start: one that comes while the agent is still starting (its
  // controller not reachable yet, say) abandons the start, which removes what it had set up —
  // the kernel path's programs and devices — rather than leaving it for the next start to reclaim.
  const abort = new AbortController();
  const starting = startAgent(opts, { log, signal: abort.signal });
  onShutdown(log, [
    async () => {
      abort.abort();
      await (await starting.catch(() => undefined))?.stop();
    },
  ]);
  try {
    await starting;
  } catch (err) {
    if (abort.signal.aborted) return; // the shutdown hook finishes and exits
    throw err;
  }
  stopWhenSupervisorLeaves();
}
