// The site database handle: a `pg` pool where every transaction runs SERIALIZABLE and is re-run
// on serialization failures (SQLSTATE 40001, CockroachDB restarts) with capped, jittered
// backoff, up to a bound. Callers write transaction bodies that are safe to run more than once.

import type { Logger } from "@isthmus/schema";
import pg from "pg";
import { assertPortableStatement, SQL_PORTABILITY_CHECK_ENV } from "./portable-sql.js";
import {
  backoffDelayMs,
  DEFAULT_RETRY_POLICY,
  isRetryable,
  type RetryPolicy,
  sqlState,
  TransactionRetriesExhausted,
} from "./retry.js";

export type Tx = pg.PoolClient;

export interface DatabaseOptions {
  url: string;
  /** Pool size bound. */
  maxConnections?: number;
  retry?: Partial<RetryPolicy>;
  log: Logger;
  /** Called with every retry (tests and metrics count them). */
  onRetry?: (label: string, err: unknown) => void;
}

export interface TxOptions {
  readOnly?: boolean;
  /** Extra SQLSTATEs to treat as retryable for this transaction (migrations add 23505). */
  retryCodes?: ReadonlySet<string>;
}

/**
 * Makes `client` check every statement it sends with assertPortableStatement (a statement that
 * fails the check is refused before it reaches the database, as CockroachDB would refuse it).
 */
function checkPortability(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  (client as { query: unknown }).query = (...args: unknown[]) => {
    const q = args[0];
    const text = typeof q === "string" ? q : (q as { text?: unknown } | undefined)?.text;
    if (typeof text === "string") assertPortableStatement(text);
    return query(...args);
  };
}

export class Database {
  readonly pool: pg.Pool;
  private readonly policy: RetryPolicy;
  private readonly log: Logger;
  private retries = 0;

  constructor(private readonly opts: DatabaseOptions) {
    this.pool = new pg.Pool({
      ...serializableByDefault(opts.url),
      max: opts.maxConnections ?? 8,
      connectionTimeoutMillis: 5_000,
      idleTimeoutMillis: 30_000,
    });
    // An idle client's connection dying (database restarted) must not crash the process.
    this.pool.on("error", (err) => opts.log.warn({ err: err.message }, "idle database connection failed"));
    // A connection dying while checked out surfaces as the query's rejection; without a listener
    // the client's 'error' event would also crash the process. Added once per connection, here:
    // a listener added inside tx() would close over that transaction's scope — its body and all
    // the body holds (a 100k-object snapshot) — for the connection's lifetime.
    this.pool.on("connect", (client) =>
      client.on("error", (err) => opts.log.warn({ err: err.message }, "database connection failed")),
    );
    if (process.env[SQL_PORTABILITY_CHECK_ENV] === "1") this.pool.on("connect", checkPortability);
    this.policy = { ...DEFAULT_RETRY_POLICY, ...opts.retry };
    if (this.policy.maxAttempts < 1) throw new Error("database retry.maxAttempts must be at least 1");
    this.log = opts.log;
  }

  /** Transactions re-run after a serialization conflict since start (a metric). */
  get retryCount(): number {
    return this.retries;
  }

  /**
   * Runs `body` in a SERIALIZABLE transaction, re-running it on retryable errors. The body may run
   * several times; it must not have side effects outside the transaction.
   */
  async tx<T>(label: string, body: (tx: Tx) => Promise<T>, options: TxOptions = {}): Promise<T> {
    return this.retrying(label, options.retryCodes, async () => {
      const client = await this.pool.connect();
      let broken = false;
      try {
        await client.query(
          options.readOnly
            ? "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY"
            : "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        );
        const result = await body(client);
        await client.query("COMMIT");
        return result;
      } catch (err) {
        try {
          await client.query("ROLLBACK");
        } catch {
          broken = true; // the connection is gone; do not return it to the pool
        }
        throw err;
      } finally {
        client.release(broken ? true : undefined);
      }
    });
  }

  /**
   * Runs one statement on its own — an implicit transaction, SERIALIZABLE as every session's
   * default is (serializableByDefault) — re-running it on retryable errors. One round trip where
   * BEGIN, the statement and COMMIT are three: for a write that fits in one statement.
   */
  statement(label: string, text: string, params: unknown[] = []): Promise<pg.QueryResult> {
    return this.retrying(label, undefined, () => this.pool.query(text, params));
  }

  /** Runs `attempt` until it succeeds, fails with a non-retryable error, or the attempts run out. */
  private async retrying<T>(
    label: string,
    retryCodes: ReadonlySet<string> | undefined,
    attempt: () => Promise<T>,
  ): Promise<T> {
    let lastError: unknown;
    for (let n = 1; n <= this.policy.maxAttempts; n++) {
      try {
        return await attempt();
      } catch (err) {
        lastError = err;
        if (!isRetryable(err, retryCodes)) throw err;
        this.retries++;
        this.opts.onRetry?.(label, err);
        this.log.debug({ label, attempt: n, sqlstate: sqlState(err) }, "transaction conflict; retrying");
        if (n < this.policy.maxAttempts) await sleep(backoffDelayMs(this.policy, n, Math.random));
      }
    }
    throw new TransactionRetriesExhausted(label, this.policy.maxAttempts, lastError);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** The session option that makes every implicit (one-statement) transaction SERIALIZABLE too. */
const SERIALIZABLE_OPTION = "-c default_transaction_isolation=serializable";

/**
 * Connection settings for `url` whose sessions default to SERIALIZABLE (PostgreSQL and CockroachDB
 * both take `-c` in the startup `options`). A URL's own `options` parameter would replace the
 * client's, so ours is appended to it there.
 */
export function serializableByDefault(url: string): { connectionString: string; options?: string } {
  const own = /([?&]options=)([^&#]*)/;
  if (own.test(url))
    return {
      connectionString: url.replace(
        own,
        (_, key, value) => `${key}${value}${encodeURIComponent(` ${SERIALIZABLE_OPTION}`)}`,
      ),
    };
  return { connectionString: url, options: SERIALIZABLE_OPTION };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
