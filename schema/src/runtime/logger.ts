// The one way Isthmus processes log: pino, JSON lines, one child logger per component.
// The level comes from config, else ISTHMUS_LOG_LEVEL, else "info".
import { type DestinationStream, type Logger, pino } from "pino";

export type { Logger } from "pino";

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  /** Process-level name, e.g. "coordinator" or "agent". */
  name: string;
  level?: LogLevel;
  /** Fields added to every line (node id, site, host). */
  base?: Record<string, unknown>;
  /** Where lines go; stdout by default. Tests pass a stream to read them back. */
  destination?: DestinationStream;
}

export function levelFromEnv(env: NodeJS.ProcessEnv = process.env): LogLevel {
  const raw = env.ISTHMUS_LOG_LEVEL?.trim().toLowerCase();
  if (raw === undefined || raw === "") return "info";
  if ((LOG_LEVELS as readonly string[]).includes(raw)) return raw as LogLevel;
  throw new Error(`ISTHMUS_LOG_LEVEL=${raw} is not a log level; expected one of ${LOG_LEVELS.join(", ")}`);
}

export function createLogger(opts: LoggerOptions): Logger {
  const level = opts.level ?? levelFromEnv();
  const options = {
    name: opts.name,
    level,
    base: { pid: process.pid, ...opts.base },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  return opts.destination ? pino(options, opts.destination) : pino(options);
}

/** A child logger for one component of a process ("raft", "api", "flow-table", ...). */
export function componentLogger(
  parent: Logger,
  component: string,
  fields: Record<string, unknown> = {},
): Logger {
  return parent.child({ component, ...fields });
}

/** A logger that drops everything, for pure code under test that requires one. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
