// Keeps the agent's host token current: renews it with SiteService.RenewHostToken when half of
// its remaining lifetime has passed, writes the new one to the token file, and retries with
// backoff while the controller is unreachable. A token that expired anyway (the controller was
// away too long) is replaced by registering again when the agent has an admin token.
import { writeFileSync } from "node:fs";
import { credentials, Metadata, status } from "@grpc/grpc-js";
import type { Logger, sitepb as SitePb } from "@isthmus/schema";
import { sitepb } from "@isthmus/schema";
import { decodeJwt } from "jose";

export interface HostTokenRefreshOptions {
  controller: string;
  token: string;
  /** Where to keep the current token (mode 0600). */
  tokenFile?: string;
  log: Logger;
  /** Called when the token could not be renewed (expired, host unknown): gets a new one. */
  reRegister?: () => Promise<string>;
  /** Floor of the wait between attempts (tests use short-lived tokens). */
  minDelayMs?: number;
  maxBackoffMs?: number;
}

/** Unix ms a JWT expires at, or undefined if it carries no expiry (never refreshed). */
export function tokenExpiry(token: string): number | undefined {
  try {
    const exp = decodeJwt(token).exp;
    return typeof exp === "number" ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

export class HostTokenRefresher {
  private current: string;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private backoffMs: number;
  private readonly client: SitePb.SiteServiceClient;
  /** Renewals done, and the last failure (for status). */
  renewals = 0;
  lastError = "";

  constructor(private readonly o: HostTokenRefreshOptions) {
    this.current = o.token;
    this.backoffMs = this.minDelay;
    this.client = new sitepb.SiteServiceClient(o.controller, credentials.createInsecure());
  }

  private get minDelay(): number {
    return this.o.minDelayMs ?? 1000;
  }

  get token(): string {
    return this.current;
  }

  get expiresUnixMs(): number | undefined {
    return tokenExpiry(this.current);
  }

  start(): void {
    this.schedule(this.renewDelay());
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.client.close();
  }

  /** Half of what is left of the current token's life. */
  private renewDelay(): number {
    const exp = this.expiresUnixMs;
    if (exp === undefined) return -1;
    return Math.max(this.minDelay, (exp - Date.now()) / 2);
  }

  private schedule(ms: number): void {
    if (this.stopped || ms < 0) return;
    this.timer = setTimeout(() => void this.renew(), ms);
    this.timer.unref();
  }

  /** One renewal attempt; reschedules itself. Exposed for tests. */
  async renew(): Promise<void> {
    try {
      const res = await this.call();
      this.adopt(res.hostToken);
      this.o.log.info({ expiresUnixMs: res.tokenExpiresUnixMs }, "host token renewed");
    } catch (err) {
      const e = err as Error & { code?: number };
      this.lastError = e.message;
      const expired = e.code === status.UNAUTHENTICATED || e.code === status.NOT_FOUND;
      if (expired && this.o.reRegister) {
        try {
          this.adopt(await this.o.reRegister());
          this.o.log.warn({ err: e.message }, "host token could not be renewed; registered again");
        } catch (err2) {
          this.failed(`re-registration failed: ${(err2 as Error).message}`);
        }
      } else {
        this.failed(e.message);
      }
    }
  }

  private adopt(token: string): void {
    this.current = token;
    this.renewals++;
    this.lastError = "";
    this.backoffMs = this.minDelay;
    if (this.o.tokenFile) writeFileSync(this.o.tokenFile, `${token}\n`, { mode: 0o600 });
    this.schedule(this.renewDelay());
  }

  private failed(why: string): void {
    const exp = this.expiresUnixMs;
    const left = exp === undefined ? Number.POSITIVE_INFINITY : exp - Date.now();
    this.o.log.warn({ err: why, tokenLeftMs: Math.round(left) }, "host token renewal failed; retrying");
    // Retry sooner than the token's end, never faster than the floor.
    const wait = Math.max(this.minDelay, Math.min(this.backoffMs, left > 0 ? left / 2 : this.backoffMs));
    this.backoffMs = Math.min(this.backoffMs * 2, this.o.maxBackoffMs ?? 30_000);
    this.schedule(wait);
  }

  private call(): Promise<SitePb.RenewHostTokenResponse> {
    const md = new Metadata();
    md.set("authorization", `Bearer ${this.current}`);
    return new Promise((resolve, reject) =>
      this.client.renewHostToken({}, md, { deadline: Date.now() + 5000 }, (err, r) =>
        err ? reject(err) : resolve(r),
      ),
    );
  }
}
