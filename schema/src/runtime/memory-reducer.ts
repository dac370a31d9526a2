// Whether a coordinator, site controller or agent runs with V8's memory reducer. The reducer
// watches for a process going from allocating a lot to allocating little, waits 8 s, and then
// runs up to three full, compacting collections to hand memory back to the OS. For a browser tab
// that is idle time; for a federation server it is the moment after a catch-up (a site restoring
// a 100k-object snapshot, a bulk load through the coordinators, an agent's first snapshot) when
// it is back to serving changes one at a time — and every process that took part goes through it
// at once. In the propagation benchmark at 100k objects those collections paused a site
// controller 114 ms plus a 99 ms marking step, and coordinators 52–206 ms each, up to three in a
// row, within the same two seconds on two CPUs, as the measured changes began or were about to.
// Without the reducer the garbage goes at the next ordinary collection, whose marking is
// incremental and concurrent; the heap is larger in between (bounded by V8's usual
// old-generation limit). V8 reads the flag only when the heap is set up, and node refuses it in
// NODE_OPTIONS, so a process started without it re-executes itself with it (the CLI), or its
// launcher passes it (isthmus dev, the tests' harness).

import type { Logger } from "./logger.js";

/** The environment variable that keeps V8's memory reducer ("1"); "0" or unset turns it off. */
export const MEMORY_REDUCER_ENV = "ISTHMUS_MEMORY_REDUCER";

/** The node flag coordinators, site controllers and agents run with unless told otherwise. */
export const NO_MEMORY_REDUCER_FLAG = "--no-memory-reducer";

export interface MemoryReducerChoice {
  /** Whether the process should run with V8's memory reducer. */
  on: boolean;
  /** Whether its node flags already say so (false: it must be restarted with NO_MEMORY_REDUCER_FLAG). */
  inEffect: boolean;
  reason: string;
}

/** Decides from node's flags and the environment (pure); throws on a malformed variable. */
export function memoryReducerChoice(
  execArgv: readonly string[],
  env: NodeJS.ProcessEnv,
): MemoryReducerChoice {
  const explicit = execArgv.findLast((a) => /^--(no-)?memory[-_]reducer$/.test(a));
  if (explicit !== undefined)
    return { on: !explicit.startsWith("--no-"), inEffect: true, reason: `node flag ${explicit}` };
  const value = env[MEMORY_REDUCER_ENV];
  if (value !== undefined && value !== "" && value !== "0" && value !== "1")
    throw new Error(`${MEMORY_REDUCER_ENV} must be 0 or 1, got ${JSON.stringify(value)}`);
  if (value === "1") return { on: true, inEffect: true, reason: `${MEMORY_REDUCER_ENV}=1` };
  return {
    on: false,
    inEffect: false,
    reason: `the default for coordinators and site controllers (${MEMORY_REDUCER_ENV}=1 keeps it)`,
  };
}

/** The node flags to re-execute with so the choice takes effect ([] when it already has). */
export function memoryReducerFlags(choice: MemoryReducerChoice): string[] {
  return choice.inEffect ? [] : [NO_MEMORY_REDUCER_FLAG];
}

/** Logs what a process runs with and why (once at start-up). */
export function logMemoryReducer(log: Logger, choice: MemoryReducerChoice): void {
  log.info({ memoryReducer: choice.on }, `V8 memory reducer: ${choice.on ? "on" : "off"} (${choice.reason})`);
}
