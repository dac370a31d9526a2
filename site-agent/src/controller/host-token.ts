// Tokens the site controller issues: host tokens (an agent presents one to TopologyService.Watch
// and to the site API calls a host may make) and admin tokens (site operators, `isthmus status`).
// Signed with a controller key kept in the site database, so either replica verifies them.
import { Metadata, status } from "@grpc/grpc-js";
import { type CryptoKey, exportJWK, generateKeyPair, importJWK, type JWK, jwtVerify, SignJWT } from "jose";
import type { Database } from "./db/database.js";
import { grpcError } from "./topology-watch.js";

export const HOST_TOKEN_TYPE = "isthmus-host+jwt";
export type TokenRole = "host" | "admin";

export interface TokenClaims {
  role: TokenRole;
  /** Host id for host tokens, "admin" for admin tokens. */
  subject: string;
}

const ALG = "ES256";

/** Verified tokens remembered (each host's and operator's token: far more than a site has). */
const MAX_VERIFIED_TOKENS = 20_000;

export class HostTokens {
  private constructor(
    readonly site: string,
    private readonly kid: string,
    private readonly privateKey: CryptoKey,
    private readonly publicKey: CryptoKey,
  ) {}

  /** Loads the site's controller key, creating it on first use (first writer wins). */
  static async load(db: Database, site: string): Promise<HostTokens> {
    const existing = await HostTokens.read(db);
    if (existing) return HostTokens.fromJwk(site, existing);
    const pair = await generateKeyPair(ALG, { extractable: true });
    const kid = `ctl-${Date.now().toString(36)}`;
    const privateJwk = { ...(await exportJWK(pair.privateKey)), kid };
    const publicJwk = { ...(await exportJWK(pair.publicKey)), kid };
    await db.tx("controller-key", (tx) =>
      tx.query(
        `INSERT INTO controller_keys (id, private_jwk, public_jwk, created_at) VALUES ('signing', $1, $2, now())
         ON CONFLICT (id) DO NOTHING`,
        [JSON.stringify(privateJwk), JSON.stringify(publicJwk)],
      ),
    );
    return HostTokens.fromJwk(site, (await HostTokens.read(db))!);
  }

  private static async read(db: Database): Promise<JWK | undefined> {
    const r = await db.pool.query("SELECT private_jwk FROM controller_keys WHERE id = 'signing'");
    return r.rows[0] ? (JSON.parse(r.rows[0].private_jwk as string) as JWK) : undefined;
  }

  private static async fromJwk(site: string, jwk: JWK): Promise<HostTokens> {
    const priv = (await importJWK(jwk, ALG)) as CryptoKey;
    const { d: _d, ...pub } = jwk;
    const publicKey = (await importJWK(pub, ALG)) as CryptoKey;
    return new HostTokens(site, jwk.kid ?? "ctl", priv, publicKey);
  }

  private get audience(): string {
    return `isthmus-site:${this.site}`;
  }

  async issue(
    role: TokenRole,
    subject: string,
    ttlSec: number,
  ): Promise<{ token: string; expiresUnixMs: number }> {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ role })
      .setProtectedHeader({ alg: ALG, kid: this.kid, typ: HOST_TOKEN_TYPE })
      .setIssuer(this.audience)
      .setAudience(this.audience)
      .setSubject(subject)
      .setIssuedAt(now)
      .setExpirationTime(now + ttlSec)
      .sign(this.privateKey);
    return { token, expiresUnixMs: (now + ttlSec) * 1000 };
  }

  /** Checks a call's bearer token; throws UNAUTHENTICATED / PERMISSION_DENIED with the reason. */
  /**
   * Tokens already verified, until they expire: an ES256 verification costs about a millisecond
   * of CPU, and agents and operators present the same token on every call. Bounded (cleared
   * when full); tokens are not revocable before they expire, so a hit is as good as a check.
   */
  private readonly verified = new Map<string, { claims: TokenClaims; expMs: number }>();

  async verify(metadata: Metadata, allowed: readonly TokenRole[]): Promise<TokenClaims> {
    const header = metadata.get("authorization")[0];
    const m = typeof header === "string" ? /^Bearer\s+(\S+)$/i.exec(header) : null;
    if (!m)
      throw grpcError(
        status.UNAUTHENTICATED,
        "missing authorization: Bearer <token> (a host or admin token)",
      );
    const hit = this.verified.get(m[1]!);
    if (hit && hit.expMs > Date.now()) return this.permit(hit.claims, allowed);
    let claims: TokenClaims;
    try {
      const { payload, protectedHeader } = await jwtVerify(m[1]!, this.publicKey, {
        issuer: this.audience,
        audience: this.audience,
        algorithms: [ALG],
      });
      if (protectedHeader.typ !== HOST_TOKEN_TYPE)
        throw new Error(`token type ${protectedHeader.typ} is not ${HOST_TOKEN_TYPE}`);
      const role = payload.role;
      if (role !== "host" && role !== "admin") throw new Error(`token role ${String(role)} is unknown`);
      claims = { role, subject: payload.sub ?? "" };
      if (payload.exp !== undefined) {
        if (this.verified.size >= MAX_VERIFIED_TOKENS) this.verified.clear();
        this.verified.set(m[1]!, { claims, expMs: payload.exp * 1000 });
      }
    } catch (err) {
      throw grpcError(
        status.UNAUTHENTICATED,
        `invalid token for site ${this.site}: ${(err as Error).message}`,
      );
    }
    return this.permit(claims, allowed);
  }

  private permit(claims: TokenClaims, allowed: readonly TokenRole[]): TokenClaims {
    if (!allowed.includes(claims.role)) {
      throw grpcError(
        status.PERMISSION_DENIED,
        `a ${claims.role} token may not make this call (needs ${allowed.join(" or ")})`,
      );
    }
    return claims;
  }
}

export function bearer(token: string): Metadata {
  const md = new Metadata();
  md.set("authorization", `Bearer ${token}`);
  return md;
}
