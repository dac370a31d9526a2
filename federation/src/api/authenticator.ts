// What the API asks of auth, as an interface so services are testable without keys. The
// coordinator passes federation/src/auth's Authenticator, which satisfies it; failures are thrown
// as grpc-js ServiceErrors (UNAUTHENTICATED / PERMISSION_DENIED) and passed through unchanged.
import type { Metadata } from "@grpc/grpc-js";

export type Access = "read" | "write";

export interface CallAuth {
  admin(
    source: { metadata: Metadata },
    access?: Access,
    action?: string,
  ): Promise<{ subject: string; role: string; jti: string }>;
  /** A joined site; with `actingFor`, the call must be about that same site. */
  site(source: { metadata: Metadata }, actingFor?: string): Promise<{ site: string }>;
  /** A cryptographically valid onboarding token (single use is enforced by the state machine). */
  onboarding(
    source: { metadata: Metadata },
    requestedSite?: string,
  ): Promise<{ jti: string; site: string; exp: number }>;
}

/** Mints onboarding tokens for AddSite; absent when the coordinator holds no signing key. */
export interface OnboardingIssuer {
  issue(site: string, ttlSec: number): Promise<{ token: string; jti: string; exp: number }>;
}
