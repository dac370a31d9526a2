// Signing and verifying the tokens the coordinator itself issues (admin and onboarding). Verification
// pins the algorithm to the trusted keys', requires exp, iat and the kind's typ, and checks issuer,
// audience, expiry and not-before within a bounded clock skew.
import { randomUUID } from "node:crypto";
import { type JWTPayload, jwtVerify, SignJWT } from "jose";
import { unauthenticated } from "./auth-error.js";
import type { SigningKey } from "./coordinator-keys.js";
import { checkHeader, explainVerifyError } from "./jwt-checks.js";
import { DEFAULT_CLOCK_SKEW_SEC, TOKEN_TYPES, type TokenKind } from "./token-kinds.js";
import type { TrustedKeys } from "./trusted-keys.js";

export interface MintOptions {
  issuer: string;
  audience: string;
  subject: string;
  ttlSec: number;
  /** Unix ms; the wall clock when absent. */
  nowMs?: number;
  claims?: Record<string, unknown>;
}

export async function mintCoordinatorToken(
  signer: SigningKey,
  kind: TokenKind,
  o: MintOptions,
): Promise<string> {
  const iat = Math.floor((o.nowMs ?? Date.now()) / 1000);
  return new SignJWT({ ...o.claims })
    .setProtectedHeader({ alg: signer.alg, kid: signer.kid, typ: TOKEN_TYPES[kind] })
    .setIssuer(o.issuer)
    .setAudience(o.audience)
    .setSubject(o.subject)
    .setJti(randomUUID())
    .setIssuedAt(iat)
    .setNotBefore(iat)
    .setExpirationTime(iat + o.ttlSec)
    .sign(signer.privateKey);
}

export interface VerifyOptions {
  /** Allowed disagreement between clocks, in seconds (default 30). */
  clockSkewSec?: number;
  /** Unix ms; the wall clock when absent. */
  nowMs?: number;
}

export interface VerifiedToken {
  payload: JWTPayload & { exp: number; iat: number; sub: string; jti: string };
  kid: string | undefined;
}

export async function verifyCoordinatorToken(
  token: string,
  kind: TokenKind,
  keys: TrustedKeys,
  expected: { issuer: string; audience: string; maxAgeSec: number },
  o: VerifyOptions = {},
): Promise<VerifiedToken> {
  const header = checkHeader(token, kind, keys.algorithms, keys.kids);
  const now = new Date(o.nowMs ?? Date.now());
  const skewSec = o.clockSkewSec ?? DEFAULT_CLOCK_SKEW_SEC;
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, keys.getKey, {
      algorithms: keys.algorithms,
      typ: TOKEN_TYPES[kind],
      issuer: expected.issuer,
      audience: expected.audience,
      clockTolerance: skewSec,
      currentDate: now,
      maxTokenAge: expected.maxAgeSec,
      requiredClaims: ["exp", "iat", "sub", "jti"],
    }));
  } catch (err) {
    throw explainVerifyError(err, kind, {
      expected,
      now,
      skewSec,
      kid: header.kid,
      maxAgeSec: expected.maxAgeSec,
    });
  }
  for (const claim of ["sub", "jti"] as const) {
    if (typeof payload[claim] !== "string" || payload[claim] === "") {
      throw unauthenticated(`${kind} token's ${claim} claim must be a non-empty string`);
    }
  }
  return { payload: payload as VerifiedToken["payload"], kid: header.kid };
}
