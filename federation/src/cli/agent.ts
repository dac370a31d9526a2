// `isthmus agent`: runs this host's edge agent (site-agent's entry point, loaded only here) until
// SIGTERM/SIGINT.
import { createLogger, onShutdown } from "@isthmus/schema";
import { stopWhenSupervisorLeaves, supervisedLogDestination } from "./parent-watch.js";

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
}

export async function runAgent(opts: AgentCommandOptions): Promise<void> {
  const { startAgent } = await import("@isthmus/site-agent");
  const log = createLogger({
    name: "agent",
    base: { host: opts.host ?? opts.name },
    destination: supervisedLogDestination(),
  });
  const agent = await startAgent(opts, { log });
  onShutdown(log, [() => agent.stop()]);
  stopWhenSupervisorLeaves();
}
