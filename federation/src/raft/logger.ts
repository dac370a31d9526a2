// raft-ts logging: the minimal interface the library logs through. pino's Logger satisfies it, so
// the coordinator passes its component logger in while raft-ts itself imports no logging library.
export interface RaftLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** Drops everything; the default when the caller passes no logger. */
export const silentRaftLogger: RaftLogger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};
