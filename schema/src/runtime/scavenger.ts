// Which young-generation collector a long-running Isthmus process uses. V8 scavenges in parallel
// on helper threads by default, and the main thread waits at the end of each scavenge until every
// helper has finished its share. Where the federation's processes share a few CPUs — a small
// site, `isthmus dev`, several replicas on one host — a helper that lost its CPU holds the main
// thread for as long as it waits to run again: in the propagation benchmark (2 vCPUs, a dozen
// processes) scavenges of a site controller at 100k objects took 20–100 ms each, and they were
// most of the slowest changes. One thread does the same work without that wait (and ~20 % less
// CPU in a micro-benchmark here), so coordinators and site controllers scavenge on the main
// thread unless told otherwise.
import v8 from "node:v8";
import type { Logger } from "./logger.js";

/** The environment variable that keeps V8's parallel scavenger. */
export const PARALLEL_SCAVENGE_ENV = "ISTHMUS_PARALLEL_SCAVENGE";

export interface ScavengerChoice {
  parallel: boolean;
  reason: string;
}

/** Decides from node's flags and the environment (pure). */
export function scavengerChoice(execArgv: readonly string[], env: NodeJS.ProcessEnv): ScavengerChoice {
  const flags = [...execArgv, ...(env.NODE_OPTIONS?.split(/\s+/) ?? [])];
  const explicit = flags.findLast((a) => /^--(no-)?parallel[-_]scavenge$/.test(a));
  if (explicit !== undefined)
    return { parallel: !explicit.startsWith("--no-"), reason: `node flag ${explicit}` };
  const value = env[PARALLEL_SCAVENGE_ENV];
  if (value !== undefined && value !== "") {
    if (value !== "0" && value !== "1")
      throw new Error(`${PARALLEL_SCAVENGE_ENV} must be 0 or 1, got ${JSON.stringify(value)}`);
    return { parallel: value === "1", reason: `${PARALLEL_SCAVENGE_ENV}=${value}` };
  }
  return {
    parallel: false,
    reason: `the default for coordinators and site controllers (${PARALLEL_SCAVENGE_ENV}=1 keeps V8's parallel scavenger)`,
  };
}

/**
 * Applies scavengerChoice at start-up (V8 reads the flag at every scavenge, so setting it now
 * takes effect from the next one) and logs what was chosen and why.
 */
export function chooseScavenger(
  log: Logger,
  execArgv: readonly string[] = process.execArgv,
  env: NodeJS.ProcessEnv = process.env,
  setFlags: (flags: string) => void = v8.setFlagsFromString,
): ScavengerChoice {
  const choice = scavengerChoice(execArgv, env);
  if (!choice.parallel) setFlags("--no-parallel-scavenge");
  log.info(
    { parallelScavenge: choice.parallel },
    `young-generation GC: ${choice.parallel ? "parallel" : "on the main thread"} (${choice.reason})`,
  );
  return choice;
}
