// One mapping from everything the coordinator can refuse to a gRPC status a person can act on:
// IntentError codes, NotLeaderError (UNAVAILABLE with the leader's address in the message and in
// the `isthmus-leader` trailer), auth errors (already ServiceErrors) and unexpected failures.
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { IntentError, type IntentErrorCode } from "../intent/index.js";
import { NotLeaderError, UnsupportedError } from "./replicator.js";

export const LEADER_TRAILER = "isthmus-leader";
export const LEADER_ID_TRAILER = "isthmus-leader-id";

const CODES: Record<IntentErrorCode, status> = {
  invalid_argument: status.INVALID_ARGUMENT,
  not_found: status.NOT_FOUND,
  already_exists: status.ALREADY_EXISTS,
  revision_conflict: status.ABORTED,
  failed_precondition: status.FAILED_PRECONDITION,
  permission_denied: status.PERMISSION_DENIED,
  unauthenticated: status.UNAUTHENTICATED,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
};

export function serviceError(code: status, details: string, metadata = new Metadata()): ServiceError {
  return Object.assign(new Error(details), { code, details, metadata });
}

function isServiceError(err: unknown): err is ServiceError {
  return (
    err instanceof Error &&
    typeof (err as Partial<ServiceError>).code === "number" &&
    typeof (err as Partial<ServiceError>).details === "string"
  );
}

export function toServiceError(err: unknown): ServiceError {
  if (err instanceof IntentError) return serviceError(CODES[err.code], err.message);
  if (err instanceof NotLeaderError) {
    const md = new Metadata();
    if (err.leaderAddress) md.set(LEADER_TRAILER, err.leaderAddress);
    if (err.leaderId) md.set(LEADER_ID_TRAILER, err.leaderId);
    return serviceError(status.UNAVAILABLE, err.message, md);
  }
  if (err instanceof UnsupportedError) return serviceError(status.UNIMPLEMENTED, err.message);
  if (isServiceError(err)) return err;
  return serviceError(status.INTERNAL, `internal error: ${(err as Error)?.message ?? String(err)}`);
}

/** True for errors worth logging at error level (bugs, not refusals). */
export function isInternal(err: ServiceError): boolean {
  return err.code === status.INTERNAL || err.code === status.UNKNOWN;
}
