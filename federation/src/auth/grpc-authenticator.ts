// The one object gRPC handlers call: it reads `authorization: Bearer <jwt>` from call metadata and
// returns who is calling, or throws an AuthError (a grpc-js ServiceError with UNAUTHENTICATED or
// PERMISSION_DENIED) that the handler passes to its callback or emits on its stream unchanged.
import type { Metadata } from "@grpc/grpc-js";
import { type Access, type AdminPrincipal, requireAccess, verifyAdminToken } from "./admin-token.js";
import { permissionDenied, unauthenticated } from "./auth-error.js";
import type { VerifyOptions } from "./coordinator-token.js";
import { loadTrustedKeyDir } from "./key-dir.js";
import { type OnboardingGrant, verifyOnboardingToken } from "./onboarding-token.js";
import { type SiteLookup, type SitePrincipal, SiteTokenVerifier } from "./site-token.js";
import { type AuthSettings, DEFAULT_CLOCK_SKEW_SEC } from "./token-kinds.js";
import type { TrustedKeys } from "./trusted-keys.js";

/** A call (anything with `.metadata`) or its metadata. */
export type MetadataSource = Metadata | { metadata: Metadata };

/** Longest bearer value read at all; a JWT of ours is well under 2 KiB. */
export const MAX_BEARER_LENGTH = 8192;

export function bearerToken(source: MetadataSource): string {
  const md = "metadata" in source ? source.metadata : source;
  const values = md.get("authorization");
  if (values.length === 0) {
    throw unauthenticated(
      "no credentials: send metadata `authorization: Bearer <token>` (admins: a token from `isthmus token create`)",
    );
  }
  if (values.length > 1) throw unauthenticated("more than one authorization header; send exactly one");
  const raw = values[0];
  if (typeof raw !== "string") throw unauthenticated("authorization header must be text, not binary");
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(raw);
  if (!m) throw unauthenticated('authorization header must have the form "Bearer <token>"');
  const token = m[1]!;
  if (token.length > MAX_BEARER_LENGTH) {
    throw unauthenticated(`bearer token is ${token.length} bytes; the limit is ${MAX_BEARER_LENGTH}`);
  }
  return token;
}

export interface AuthenticatorOptions {
  settings: AuthSettings;
  trusted: TrustedKeys;
  /** The state machine's view of a site (its registered key and state). */
  lookupSite: SiteLookup;
  /** Allowed clock disagreement in seconds (default 30). */
  clockSkewSec?: number;
  /**
   * Token ids revoked by a log entry (admin tokens, unused onboarding tokens). Optional: without it
   * only expiry ends a token. Consumed onboarding jtis are checked by the state machine itself.
   */
  isTokenRevoked?: (jti: string) => boolean;
  maxCachedSiteKeys?: number;
  /** Unix ms clock; `Date.now` by default (tests pass a fixed one). */
  now?: () => number;
}

export class Authenticator {
  private trusted: TrustedKeys;
  private readonly sites: SiteTokenVerifier;
  private readonly now: () => number;

  constructor(private readonly o: AuthenticatorOptions) {
    this.trusted = o.trusted;
    this.now = o.now ?? Date.now;
    this.sites = new SiteTokenVerifier({
      audience: o.settings.siteAudience,
      lookup: o.lookupSite,
      maxCachedKeys: o.maxCachedSiteKeys,
    });
  }

  /** Reads `auth-settings.json` and `jwks.json` from a key directory made by `isthmus bootstrap`. */
  static async fromKeyDir(
    dir: string,
    o: Omit<AuthenticatorOptions, "settings" | "trusted">,
  ): Promise<Authenticator> {
    const { settings, trusted } = await loadTrustedKeyDir(dir);
    return new Authenticator({ ...o, settings, trusted });
  }

  get settings(): AuthSettings {
    return this.o.settings;
  }

  /** Replaces the trusted coordinator keys (after rotation) without a restart. */
  setTrustedKeys(trusted: TrustedKeys): void {
    this.trusted = trusted;
  }

  private verifyOptions(): VerifyOptions {
    return { nowMs: this.now(), clockSkewSec: this.o.clockSkewSec ?? DEFAULT_CLOCK_SKEW_SEC };
  }

  private checkNotRevoked(kind: string, jti: string): void {
    if (this.o.isTokenRevoked?.(jti)) throw unauthenticated(`${kind} token ${jti} has been revoked`);
  }

  /** An admin or viewer; `write` access additionally requires role admin (else PERMISSION_DENIED). */
  async admin(source: MetadataSource, access: Access = "read", action?: string): Promise<AdminPrincipal> {
    const p = await verifyAdminToken(
      bearerToken(source),
      this.trusted,
      this.o.settings,
      this.verifyOptions(),
    );
    this.checkNotRevoked("admin", p.jti);
    requireAccess(p, access, action);
    return p;
  }

  /** A joined, active site; with `actingFor`, the request must be about that same site. */
  async site(source: MetadataSource, actingFor?: string): Promise<SitePrincipal> {
    return this.sites.verify(bearerToken(source), actingFor, this.verifyOptions());
  }

  /**
   * An onboarding token, verified cryptographically. The caller (Join) must still check and record
   * `jti` in the replicated state so the token works once across all nodes.
   */
  async onboarding(source: MetadataSource, requestedSite?: string): Promise<OnboardingGrant> {
    const g = await verifyOnboardingToken(
      bearerToken(source),
      this.trusted,
      this.o.settings,
      this.verifyOptions(),
    );
    this.checkNotRevoked("onboarding", g.jti);
    if (requestedSite !== undefined && requestedSite !== g.site) {
      throw permissionDenied(
        `this onboarding token is for site "${g.site}", not "${requestedSite}"; ask for a token for "${requestedSite}"`,
      );
    }
    return g;
  }
}
