// Which database errors mean "run the transaction again", and the capped exponential backoff with
// full jitter between attempts. Pure: the random source is passed in.

/** SQLSTATEs after which a transaction can safely be re-run from the start. */
const RETRYABLE_SQLSTATES = new Set([
  "40001", // serialization_failure (PostgreSQL SERIALIZABLE; every CockroachDB restart error)
  "40P01", // deadlock_detected
]);

export interface RetryPolicy {
  /** Attempts in total, including the first; at least 1. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { maxAttempts: 12, baseDelayMs: 5, maxDelayMs: 500 };

export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

export function isRetryable(err: unknown, extraCodes: ReadonlySet<string> = new Set()): boolean {
  const code = sqlState(err);
  if (code !== undefined && (RETRYABLE_SQLSTATES.has(code) || extraCodes.has(code))) return true;
  // CockroachDB wraps some restarts so that only the message says so.
  const msg = (err as Error | null)?.message ?? "";
  return /restart transaction|TransactionRetryWithProtoRefreshError/i.test(msg);
}

/** Delay before attempt `attempt` (1 = the first retry): uniform in [0, min(max, base·2^attempt)). */
export function backoffDelayMs(policy: RetryPolicy, attempt: number, random: () => number): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/** Thrown when a transaction kept conflicting after every allowed attempt. */
export class TransactionRetriesExhausted extends Error {
  constructor(
    readonly label: string,
    readonly attempts: number,
    readonly lastError: unknown,
  ) {
    super(
      `transaction "${label}" failed after ${attempts} attempts; last error: ${(lastError as Error)?.message ?? String(lastError)} (SQLSTATE ${sqlState(lastError) ?? "none"})`,
    );
    this.name = "TransactionRetriesExhausted";
  }
}
