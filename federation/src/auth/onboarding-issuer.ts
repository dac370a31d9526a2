// Mints onboarding tokens inside a coordinator that holds the private signing key, for the AddSite
// RPC (the API's OnboardingIssuer). Coordinators without the private key have no issuer; admins then
// mint with `isthmus site add --key-dir` where the key directory is.
import type { SigningKey } from "./coordinator-keys.js";
import { loadSigningKeyDir } from "./key-dir.js";
import { mintOnboardingToken } from "./onboarding-token.js";
import type { AuthSettings } from "./token-kinds.js";

export class OnboardingTokenIssuer {
  constructor(
    private readonly signer: SigningKey,
    private readonly settings: AuthSettings,
    private readonly now: () => number = Date.now,
  ) {}

  static async fromKeyDir(dir: string): Promise<OnboardingTokenIssuer> {
    const { signer, settings } = await loadSigningKeyDir(dir);
    return new OnboardingTokenIssuer(signer, settings);
  }

  /** A token for `site`; `exp` is unix seconds. Throws for an invalid site name or too long a TTL. */
  async issue(site: string, ttlSec: number): Promise<{ token: string; jti: string; exp: number }> {
    const { token, grant } = await mintOnboardingToken(this.signer, this.settings, {
      site,
      ttlSec,
      nowMs: this.now(),
    });
    return { token, jti: grant.jti, exp: grant.exp };
  }
}
