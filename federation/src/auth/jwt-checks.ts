// What every token kind shares before and after the signature check: reading the protected header
// (to refuse `alg: none`, unknown algorithms and the wrong token kind with a precise message) and
// turning jose's verification errors into UNAUTHENTICATED errors a person can act on.
import { decodeProtectedHeader, errors, type ProtectedHeaderParameters } from "jose";
import { type AuthError, unauthenticated } from "./auth-error.js";
import { SIGNING_ALGORITHMS, TOKEN_TYPES, type TokenKind } from "./token-kinds.js";

/** What to tell a person to do to get a valid token of each kind. */
const REMEDY: Record<TokenKind, string> = {
  admin: "create one with `isthmus token create`",
  onboarding: "ask an admin for a new one with `isthmus site add`",
  site: "the site controller signs a fresh one with its registered key (check its clock and credential)",
};

function article(kind: TokenKind): string {
  return kind === "site" ? "a" : "an";
}

function kindOf(typ: string | undefined): TokenKind | undefined {
  for (const [kind, t] of Object.entries(TOKEN_TYPES)) if (t === typ) return kind as TokenKind;
  return undefined;
}

/** Reads and checks the protected header without trusting anything else in the token. */
export function checkHeader(
  token: string,
  kind: TokenKind,
  allowed: readonly string[],
  trustedKids?: ReadonlySet<string>,
): ProtectedHeaderParameters {
  if (token.split(".").length !== 3) {
    throw unauthenticated(`${kind} token is not a signed JWT (expected three dot-separated parts)`);
  }
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    throw unauthenticated(`${kind} token is malformed: its header is not base64url JSON`);
  }
  const alg = header.alg;
  if (alg === undefined || alg.toLowerCase() === "none") {
    throw unauthenticated(
      `${kind} token is unsigned (alg "${alg ?? ""}"); unsigned tokens are never accepted`,
    );
  }
  if (!(SIGNING_ALGORITHMS as readonly string[]).includes(alg)) {
    throw unauthenticated(
      `${kind} token is signed with alg "${alg}"; only ${allowed.join(", ")} is accepted here`,
    );
  }
  if (trustedKids !== undefined && (typeof header.kid !== "string" || !trustedKids.has(header.kid))) {
    throw unauthenticated(
      `${kind} token is signed by key ${header.kid === undefined ? "(no kid)" : JSON.stringify(header.kid)}, ` +
        `which this coordinator does not trust (another federation's key, or one retired after rotation); ${REMEDY[kind]}`,
    );
  }
  if (!allowed.includes(alg)) {
    throw unauthenticated(
      `${kind} token is signed with alg "${alg}"; only ${allowed.join(", ")} is accepted here`,
    );
  }
  if (header.typ !== TOKEN_TYPES[kind]) {
    const other = kindOf(header.typ);
    if (other !== undefined) {
      throw unauthenticated(
        `this is ${article(other)} ${other} token, but this call needs ${article(kind)} ${kind} token; ${REMEDY[kind]}`,
      );
    }
    throw unauthenticated(
      `${kind} token has typ "${header.typ ?? ""}", expected "${TOKEN_TYPES[kind]}"; ${REMEDY[kind]}`,
    );
  }
  return header;
}

function iso(sec: unknown): string {
  return typeof sec === "number" ? new Date(sec * 1000).toISOString() : String(sec);
}

/** Maps a jose verification failure to UNAUTHENTICATED with what went wrong and what to do. */
export function explainVerifyError(
  err: unknown,
  kind: TokenKind,
  ctx: {
    expected: { issuer?: string; audience?: string };
    now: Date;
    skewSec: number;
    kid?: string;
    maxAgeSec?: number;
  },
): AuthError {
  const remedy = REMEDY[kind];
  if (err instanceof errors.JWTExpired && err.claim === "iat") {
    return unauthenticated(
      `${kind} token was issued at ${iso(err.payload.iat)}, too old: ${kind} tokens are accepted for at most ` +
        `${ctx.maxAgeSec ?? "?"}s after issue whatever their exp says; ${remedy}`,
    );
  }
  if (err instanceof errors.JWTExpired) {
    return unauthenticated(
      `${kind} token expired at ${iso(err.payload.exp)} (now ${ctx.now.toISOString()}, ` +
        `allowed clock skew ${ctx.skewSec}s); ${remedy}`,
    );
  }
  if (err instanceof errors.JWTClaimValidationFailed) {
    const p = err.payload;
    switch (`${err.claim}:${err.reason}`) {
      case "exp:missing":
        return unauthenticated(`${kind} token has no exp claim; tokens without an expiry are refused`);
      case "aud:check_failed":
      case "aud:missing":
        return unauthenticated(
          `${kind} token is for audience ${JSON.stringify(p.aud ?? null)}, expected ` +
            `"${ctx.expected.audience}" (a token for another service, token kind or federation)`,
        );
      case "iss:check_failed":
      case "iss:missing":
        return unauthenticated(
          `${kind} token was issued by ${JSON.stringify(p.iss ?? null)}, expected "${ctx.expected.issuer}"`,
        );
      case "nbf:check_failed":
        return unauthenticated(
          `${kind} token is not valid before ${iso(p.nbf)} (now ${ctx.now.toISOString()}, ` +
            `allowed clock skew ${ctx.skewSec}s); check the clocks of the signer and this node`,
        );
      case "iat:check_failed":
        return unauthenticated(
          `${kind} token's iat ${iso(p.iat)} is in the future ` +
            `(now ${ctx.now.toISOString()}, allowed clock skew ${ctx.skewSec}s); ${remedy}`,
        );
      default:
        return unauthenticated(`${kind} token's ${err.claim} claim is ${err.reason}: ${err.message}`);
    }
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) {
    return unauthenticated(
      `${kind} token's signature does not verify: it was altered or signed by a different key`,
    );
  }
  if (err instanceof errors.JWKSNoMatchingKey) {
    return unauthenticated(
      `${kind} token is signed by key ${ctx.kid ? `"${ctx.kid}"` : "(no kid)"}, which this coordinator ` +
        `does not trust (another federation's key, or one retired after rotation); ${remedy}`,
    );
  }
  if (err instanceof errors.JOSEAlgNotAllowed) {
    return unauthenticated(`${kind} token's algorithm is not allowed for its key; ${remedy}`);
  }
  if (err instanceof errors.JWTInvalid || err instanceof errors.JWSInvalid) {
    return unauthenticated(`${kind} token is malformed: ${err.message}`);
  }
  return unauthenticated(`${kind} token rejected: ${(err as Error).message ?? String(err)}`);
}
