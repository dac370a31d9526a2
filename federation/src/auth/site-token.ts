// Verifying the short-lived JWTs a site signs with its own key (registered at join). The key and the
// site's state come from the replicated state machine through an injected lookup, so a revoked site
// is refused on every node as soon as the revocation is applied there.
import { intentpb } from "@isthmus/schema";
import { type CryptoKey, calculateJwkThumbprint, decodeJwt, importJWK, type JWK, jwtVerify } from "jose";
import { AuthError, permissionDenied, unauthenticated } from "./auth-error.js";
import type { VerifyOptions } from "./coordinator-token.js";
import { checkHeader, explainVerifyError } from "./jwt-checks.js";
import { DEFAULT_CLOCK_SKEW_SEC, MAX_TTL_SEC, type SigningAlgorithm, TOKEN_TYPES } from "./token-kinds.js";

/** What the state machine knows about a site, as far as authentication cares. */
export interface RegisteredSite {
  /** The public JWK (JSON text) the site registered at join; empty while pending. */
  publicKeyJwk: string;
  state: intentpb.SiteState;
}

export type SiteLookup = (site: string) => RegisteredSite | undefined | Promise<RegisteredSite | undefined>;

export interface SitePrincipal {
  site: string;
  jti: string | undefined;
  exp: number;
}

export interface SitePublicKey {
  jwk: JWK;
  alg: SigningAlgorithm;
  /** RFC 7638 thumbprint; stable name of the key for logs and `site list`. */
  thumbprint: string;
}

function algorithmFor(jwk: JWK): SigningAlgorithm | undefined {
  if (jwk.kty === "OKP" && jwk.crv === "Ed25519") return "EdDSA";
  if (jwk.kty === "EC" && jwk.crv === "P-256") return "ES256";
  return undefined;
}

/**
 * Checks a public key a site presents at Join: JSON, a public (not private) Ed25519 or P-256 key.
 * Throws INVALID_ARGUMENT naming `public_key_jwk`.
 */
export async function parseSitePublicKey(jwkJson: string): Promise<SitePublicKey> {
  const bad = (why: string) => new AuthError("invalid_argument", `public_key_jwk: ${why}`);
  let jwk: JWK;
  try {
    jwk = JSON.parse(jwkJson) as JWK;
  } catch {
    throw bad("not JSON; expected a JWK object");
  }
  if (typeof jwk !== "object" || jwk === null || Array.isArray(jwk)) throw bad("expected a JWK object");
  if ("d" in jwk)
    throw bad('contains a private key ("d"); send only the public half and keep the private key at the site');
  const alg = algorithmFor(jwk);
  if (alg === undefined) {
    throw bad(
      `kty ${JSON.stringify(jwk.kty)} crv ${JSON.stringify(jwk.crv)} is not supported; use an Ed25519 (OKP) or P-256 (EC) key`,
    );
  }
  if (jwk.alg !== undefined && jwk.alg !== alg)
    throw bad(`alg "${jwk.alg}" does not match the key type (expected ${alg})`);
  try {
    await importJWK({ ...jwk, alg }, alg);
  } catch (err) {
    throw bad(`not a usable key: ${(err as Error).message}`);
  }
  return { jwk, alg, thumbprint: await calculateJwkThumbprint(jwk, "sha256") };
}

export interface SiteVerifierOptions extends VerifyOptions {
  audience: string;
  lookup: SiteLookup;
  /** Imported site keys kept; oldest forgotten first (default 4096). */
  maxCachedKeys?: number;
}

/** Verifies site tokens; keeps imported public keys (keyed by the JWK text, never by site name). */
export class SiteTokenVerifier {
  private readonly keys = new Map<string, { key: CryptoKey; alg: SigningAlgorithm }>();
  private readonly maxCachedKeys: number;

  constructor(private readonly o: SiteVerifierOptions) {
    this.maxCachedKeys = o.maxCachedKeys ?? 4096;
    if (!(this.maxCachedKeys >= 1)) throw new Error("maxCachedKeys must be at least 1");
  }

  /**
   * Returns the site that signed `token`. With `actingFor`, also requires that the request is
   * about that same site (PERMISSION_DENIED otherwise).
   */
  async verify(token: string, actingFor?: string, o: VerifyOptions = {}): Promise<SitePrincipal> {
    checkHeader(token, "site", ["EdDSA", "ES256"]);
    let claimed: unknown;
    try {
      claimed = decodeJwt(token).iss;
    } catch {
      throw unauthenticated("site token is malformed: its payload is not base64url JSON");
    }
    if (typeof claimed !== "string" || claimed === "") {
      throw unauthenticated("site token has no iss claim; it must name the site that signed it");
    }
    const site = claimed;
    const record = await this.o.lookup(site);
    if (record === undefined) {
      throw unauthenticated(
        `site "${site}" is not registered with this federation; an admin runs \`isthmus site add ${site}\` ` +
          "and the site runs `isthmus site join` with that token",
      );
    }
    if (record.state === intentpb.SiteState.SITE_STATE_REVOKED) {
      throw unauthenticated(
        `site "${site}" has been revoked; an admin must onboard it again (isthmus site add)`,
      );
    }
    if (record.state !== intentpb.SiteState.SITE_STATE_ACTIVE || record.publicKeyJwk === "") {
      throw unauthenticated(
        `site "${site}" has not completed join yet; run \`isthmus site join\` at the site`,
      );
    }
    const { key, alg } = await this.importKey(site, record.publicKeyJwk);
    const now = new Date(o.nowMs ?? this.o.nowMs ?? Date.now());
    const skewSec = o.clockSkewSec ?? this.o.clockSkewSec ?? DEFAULT_CLOCK_SKEW_SEC;
    let exp: number;
    let jti: unknown;
    try {
      const { payload } = await jwtVerify(token, key, {
        algorithms: [alg],
        typ: TOKEN_TYPES.site,
        issuer: site,
        subject: site,
        audience: this.o.audience,
        clockTolerance: skewSec,
        currentDate: now,
        maxTokenAge: MAX_TTL_SEC.site,
        requiredClaims: ["exp", "iat"],
      });
      exp = payload.exp as number;
      jti = payload.jti;
    } catch (err) {
      throw explainVerifyError(err, "site", {
        expected: { issuer: site, audience: this.o.audience },
        now,
        skewSec,
      });
    }
    if (actingFor !== undefined && actingFor !== site) {
      throw permissionDenied(`site "${site}" may only act for itself, not for site "${actingFor}"`);
    }
    return { site, jti: typeof jti === "string" ? jti : undefined, exp };
  }

  private async importKey(site: string, jwkJson: string): Promise<{ key: CryptoKey; alg: SigningAlgorithm }> {
    const hit = this.keys.get(jwkJson);
    if (hit) return hit;
    let parsed: SitePublicKey;
    try {
      parsed = await parseSitePublicKey(jwkJson);
    } catch (err) {
      // The state machine holds a key Join should have refused: say so rather than blame the token.
      throw unauthenticated(
        `site "${site}" has an unusable registered key (${(err as Error).message}); re-onboard it`,
      );
    }
    const key = (await importJWK({ ...parsed.jwk, alg: parsed.alg }, parsed.alg)) as CryptoKey;
    if (this.keys.size >= this.maxCachedKeys) {
      const oldest = this.keys.keys().next().value;
      if (oldest !== undefined) this.keys.delete(oldest);
    }
    const entry = { key, alg: parsed.alg };
    this.keys.set(jwkJson, entry);
    return entry;
  }
}
