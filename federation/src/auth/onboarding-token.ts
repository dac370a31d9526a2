// Onboarding tokens: single-use, short-lived JWTs that let one named site join. Verification here is
// only cryptographic; single use is enforced by the replicated state machine, which records each
// consumed jti so a replay fails on every coordinator node.
import type { SigningKey } from "./coordinator-keys.js";
import { mintCoordinatorToken, type VerifyOptions, verifyCoordinatorToken } from "./coordinator-token.js";
import { type AuthSettings, MAX_TTL_SEC } from "./token-kinds.js";
import type { TrustedKeys } from "./trusted-keys.js";

export interface OnboardingGrant {
  /** Unique token id; the state machine refuses a jti it has already consumed. */
  jti: string;
  /** The site this token may register (its `sub`). */
  site: string;
  /** Expiry, unix seconds; the state machine may forget a consumed jti once this has passed. */
  exp: number;
}

/** Site names: what a DNS label allows, so they fit in logs, file names and metrics labels. */
export const SITE_NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function checkSiteName(name: string): void {
  if (!SITE_NAME_PATTERN.test(name)) {
    throw new Error(
      `site name "${name}" is invalid: use 1-63 lowercase letters, digits and '-', not starting or ending with '-'`,
    );
  }
}

export async function mintOnboardingToken(
  signer: SigningKey,
  settings: AuthSettings,
  o: { site: string; ttlSec: number; nowMs?: number },
): Promise<{ token: string; grant: OnboardingGrant }> {
  checkSiteName(o.site);
  if (o.ttlSec > MAX_TTL_SEC.onboarding) {
    throw new Error(
      `onboarding token ttl ${o.ttlSec}s is longer than the maximum ${MAX_TTL_SEC.onboarding}s`,
    );
  }
  const token = await mintCoordinatorToken(signer, "onboarding", {
    issuer: settings.issuer,
    audience: settings.onboardingAudience,
    subject: o.site,
    ttlSec: o.ttlSec,
    nowMs: o.nowMs,
  });
  // Read back what was signed so the caller can show the exact expiry and id.
  const body = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()) as {
    jti: string;
    exp: number;
  };
  return { token, grant: { jti: body.jti, site: o.site, exp: body.exp } };
}

export async function verifyOnboardingToken(
  token: string,
  keys: TrustedKeys,
  settings: AuthSettings,
  o: VerifyOptions = {},
): Promise<OnboardingGrant> {
  const { payload } = await verifyCoordinatorToken(
    token,
    "onboarding",
    keys,
    { issuer: settings.issuer, audience: settings.onboardingAudience, maxAgeSec: MAX_TTL_SEC.onboarding },
    o,
  );
  return { jti: payload.jti, site: payload.sub, exp: payload.exp };
}
