// Why an intent command was refused. Codes map one to one onto gRPC status codes in the API;
// `field` is the dotted path of the offending input (e.g. "network.subnets[1].cidr").

export type IntentErrorCode =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "revision_conflict"
  | "failed_precondition"
  | "permission_denied"
  | "unauthenticated"
  | "resource_exhausted";

export class IntentError extends Error {
  constructor(
    readonly code: IntentErrorCode,
    message: string,
    readonly field = "",
  ) {
    super(field ? `${field}: ${message}` : message);
    this.name = "IntentError";
  }
}

export function invalid(field: string, message: string): IntentError {
  return new IntentError("invalid_argument", message, field);
}
