// `isthmus site-controller`: runs one controller replica of a site (site-agent's entry point,
// loaded only here) until SIGTERM/SIGINT.
import {
  chooseScavenger,
  createLogger,
  logMemoryReducer,
  memoryReducerChoice,
  memoryReducerFlags,
} from "@isthmus/schema";
import { stopWhenSupervisorLeaves, supervisedLogDestination } from "./parent-watch.js";
import { reexecNode } from "./reexec.js";

export interface SiteControllerCommandOptions {
  config?: string;
  site?: string;
  db?: string;
  dataDir?: string;
  federation?: string;
  credential?: string;
  listen?: string;
  metricsListen?: string;
  adminTokenFile?: string;
  controllerId?: string;
}

export async function runSiteController(opts: SiteControllerCommandOptions): Promise<void> {
  const reducer = memoryReducerChoice(process.execArgv, process.env);
  if (!reducer.inEffect) {
    process.exitCode = await reexecNode(memoryReducerFlags(reducer), process.env);
    return;
  }
  const { startSiteController } = await import("@isthmus/site-agent");
  const log = createLogger({
    name: "site-controller",
    base: opts.site ? { site: opts.site } : {},
    destination: supervisedLogDestination(),
  });
  chooseScavenger(log);
  logMemoryReducer(log, reducer);
  await startSiteController(opts, { log });
  stopWhenSupervisorLeaves();
}
