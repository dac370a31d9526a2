// The three kinds of JWT a federation accepts, and the defaults that tell them apart. Each kind
// has its own `typ` header and its own audience, so a token of one kind can never pass as another.
// The site token's `typ` is repeated in site-agent/src/controller/site-credential.ts (site-agent
// never imports federation); a cross-package test keeps the two in step.

export type Role = "admin" | "viewer";
export const ROLES: readonly Role[] = ["admin", "viewer"];

export type TokenKind = "admin" | "onboarding" | "site";

/** `typ` protected-header value per token kind (RFC 8725 §3.11: explicit typing). */
export const TOKEN_TYPES: Readonly<Record<TokenKind, string>> = {
  admin: "isthmus-admin+jwt",
  onboarding: "isthmus-onboarding+jwt",
  site: "isthmus-site+jwt",
};

/** Signature algorithms the federation accepts for any token; `none` and HMAC never. */
export type SigningAlgorithm = "EdDSA" | "ES256";
export const SIGNING_ALGORITHMS: readonly SigningAlgorithm[] = ["EdDSA", "ES256"];

/** Issuer and audiences of one federation; stored in the key dir so every node and the CLI agree. */
export interface AuthSettings {
  /** `iss` of admin and onboarding tokens (the coordinator). */
  issuer: string;
  adminAudience: string;
  onboardingAudience: string;
  /** `aud` a site puts in its own tokens (returned to the site by Join). */
  siteAudience: string;
}

export const DEFAULT_AUTH_SETTINGS: Readonly<AuthSettings> = {
  issuer: "isthmus-coordinator",
  adminAudience: "isthmus-federation-api",
  onboardingAudience: "isthmus-site-onboarding",
  siteAudience: "isthmus-site-sync",
};

/** Default lifetimes, in seconds. */
export const DEFAULT_TTL_SEC = {
  /** `isthmus token create` without --ttl. */
  admin: 3600,
  /** The first admin token written by bootstrap. */
  bootstrapAdmin: 24 * 3600,
  /** `isthmus site add` without --ttl: long enough to copy it to the site, short enough to leak safely. */
  onboarding: 15 * 60,
  /** What a site's SiteTokenSource mints. */
  site: 5 * 60,
};

/** Upper bounds enforced when minting and (via iat) when verifying. */
export const MAX_TTL_SEC = {
  admin: 366 * 24 * 3600,
  onboarding: 24 * 3600,
  /** A site token older than this (by its iat) is refused even if its exp says otherwise. */
  site: 15 * 60,
};

/** Default allowance for clocks that disagree between a token's signer and its verifier. */
export const DEFAULT_CLOCK_SKEW_SEC = 30;
