// The one error type auth raises. It is already a grpc-js ServiceError (code, details, metadata),
// so a handler can pass it straight to its callback or emit it on a stream.
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";

export type AuthFailure = "unauthenticated" | "permission_denied" | "invalid_argument";

const CODES: Record<AuthFailure, status> = {
  unauthenticated: status.UNAUTHENTICATED,
  permission_denied: status.PERMISSION_DENIED,
  invalid_argument: status.INVALID_ARGUMENT,
};

export class AuthError extends Error implements ServiceError {
  readonly code: status;
  readonly details: string;
  readonly metadata = new Metadata();

  constructor(
    readonly failure: AuthFailure,
    message: string,
  ) {
    super(message);
    this.name = "AuthError";
    this.code = CODES[failure];
    this.details = message;
  }
}

export function unauthenticated(message: string): AuthError {
  return new AuthError("unauthenticated", message);
}

export function permissionDenied(message: string): AuthError {
  return new AuthError("permission_denied", message);
}
