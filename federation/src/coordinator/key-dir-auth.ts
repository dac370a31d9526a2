// Call authentication for a coordinator node from a key directory made by `isthmus bootstrap`:
// verify admin, onboarding and site tokens (site keys and revocations come from the replicated
// state), and — when the directory holds the private signing key — mint onboarding tokens.
import type { Logger } from "@isthmus/schema";
import type { CallAuth, OnboardingIssuer } from "../api/authenticator.js";
import { Authenticator, loadSigningKeyDir, loadTrustedKeyDir, mintOnboardingToken } from "../auth/index.js";
import type { IntentStateMachine } from "../intent/index.js";

export interface KeyDirAuth {
  auth: (sm: IntentStateMachine) => Promise<CallAuth>;
  issuer?: OnboardingIssuer;
  siteAudience: string;
}

export async function authFromKeyDir(dir: string, log: Logger): Promise<KeyDirAuth> {
  const { settings } = await loadTrustedKeyDir(dir);
  let issuer: OnboardingIssuer | undefined;
  try {
    const { signer } = await loadSigningKeyDir(dir);
    issuer = {
      async issue(site, ttlSec) {
        const { token, grant } = await mintOnboardingToken(signer, settings, { site, ttlSec });
        return { token, jti: grant.jti, exp: grant.exp };
      },
    };
  } catch (err) {
    log.info(
      { dir, reason: (err as Error).message },
      "no usable signing key: AddSite cannot mint onboarding tokens here",
    );
  }
  return {
    issuer,
    siteAudience: settings.siteAudience,
    auth: (sm) =>
      Authenticator.fromKeyDir(dir, {
        lookupSite: (name) => {
          const s = sm.site(name);
          return s ? { publicKeyJwk: s.publicKeyJwk, state: s.state } : undefined;
        },
        isTokenRevoked: (jti) => sm.isTokenRevoked(jti),
      }),
  };
}
