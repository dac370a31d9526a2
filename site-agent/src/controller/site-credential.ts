// A site's identity toward the federation: its own key pair (made locally at join; the private key
// never leaves the site), the credential file `isthmus site join` writes, and SiteTokenSource, which
// signs the short-lived JWTs the site controller presents as `authorization: Bearer`.
// The token format matches federation/src/auth (site tokens); site-agent never imports federation.
import { randomBytes, randomUUID } from "node:crypto";
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { type ChannelCredentials, credentials, Metadata } from "@grpc/grpc-js";
import { isLoopbackAddress } from "@isthmus/schema";
import {
  type CryptoKey,
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  SignJWT,
} from "jose";
import { z } from "zod";

/** `typ` header of site tokens; the coordinator refuses any other kind of token from a site. */
export const SITE_TOKEN_TYPE = "isthmus-site+jwt";
/** Lifetime of each site token (the coordinator refuses site tokens older than 15 minutes). */
export const DEFAULT_SITE_TOKEN_TTL_SEC = 300;
/** A cached token is replaced this long before it expires, so no call carries one about to lapse. */
export const DEFAULT_SITE_TOKEN_REFRESH_SEC = 60;

export interface SiteSigningKey {
  kid: string;
  alg: "EdDSA" | "ES256";
  privateKey: CryptoKey;
}

/** A new Ed25519 key pair for a site; kid is the RFC 7638 thumbprint of the public key. */
export async function generateSiteKeyPair(): Promise<{ privateJwk: JWK; publicJwk: JWK }> {
  const pair = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  const publicJwk = await exportJWK(pair.publicKey);
  const meta = { kid: await calculateJwkThumbprint(publicJwk, "sha256"), alg: "EdDSA", use: "sig" };
  return {
    privateJwk: { ...(await exportJWK(pair.privateKey)), ...meta },
    publicJwk: { ...publicJwk, ...meta },
  };
}

/** The public half of a private JWK (drops every private member). */
export function publicJwkOf(privateJwk: JWK): JWK {
  const {
    d: _d,
    p: _p,
    q: _q,
    dp: _dp,
    dq: _dq,
    qi: _qi,
    oth: _oth,
    ...pub
  } = privateJwk as JWK & {
    oth?: unknown;
  };
  return pub;
}

/** Writes a file only its owner can read (0600), atomically. */
export async function writePrivateFile(path: string, data: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  const fh = await open(tmp, "wx", 0o600);
  try {
    await fh.writeFile(data);
    await fh.chmod(0o600);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

async function readPrivateFile(path: string): Promise<string> {
  const st = await stat(path);
  if ((st.mode & 0o077) !== 0) {
    throw new Error(
      `${path} is accessible by other users (mode ${(st.mode & 0o777).toString(8)}); run \`chmod 600 ${path}\``,
    );
  }
  return readFile(path, "utf8");
}

export async function loadSiteSigningKey(path: string): Promise<SiteSigningKey> {
  let jwk: JWK;
  try {
    jwk = JSON.parse(await readPrivateFile(path)) as JWK;
  } catch (err) {
    throw new Error(`site key ${path}: ${(err as Error).message}`);
  }
  const alg =
    jwk.kty === "OKP" && jwk.crv === "Ed25519"
      ? "EdDSA"
      : jwk.kty === "EC" && jwk.crv === "P-256"
        ? "ES256"
        : undefined;
  if (alg === undefined) throw new Error(`site key ${path}: expected an Ed25519 or P-256 private JWK`);
  if (typeof jwk.d !== "string")
    throw new Error(`site key ${path}: this is a public key; the private key is needed`);
  const kid = jwk.kid ?? (await calculateJwkThumbprint(publicJwkOf(jwk), "sha256"));
  const key = await importJWK({ ...jwk, alg }, alg);
  if (key instanceof Uint8Array) throw new Error(`site key ${path}: not an asymmetric key`);
  return { kid, alg, privateKey: key };
}

const credentialSchema = z.object({
  version: z.literal(1),
  site: z.string().min(1),
  siteId: z.string(),
  /** Coordinator addresses (host:port), tried in order. */
  federation: z.array(z.string().min(1)).min(1),
  /** `aud` of the site's tokens, as Join returned it. */
  audience: z.string().min(1),
  /** Private key file; relative paths are relative to the credential file. */
  keyFile: z.string().min(1),
  tls: z.object({ caFile: z.string().optional(), insecure: z.boolean().optional() }).default({}),
  joinedIndex: z.number().int().nonnegative(),
});

export type SiteCredential = z.infer<typeof credentialSchema>;

export async function writeSiteCredential(path: string, cred: SiteCredential): Promise<void> {
  await writePrivateFile(path, `${JSON.stringify(credentialSchema.parse(cred), null, 2)}\n`);
}

/** Reads and checks a credential file; errors name the file and the bad field. */
export async function readSiteCredential(path: string): Promise<SiteCredential> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readPrivateFile(path));
  } catch (err) {
    throw new Error(`credential ${path}: ${(err as Error).message}`);
  }
  const r = credentialSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new Error(`credential ${path}: field "${issue.path.join(".")}": ${issue.message}`);
  }
  const cred = r.data;
  return isAbsolute(cred.keyFile) ? cred : { ...cred, keyFile: resolve(dirname(path), cred.keyFile) };
}

/**
 * Channel credentials for the coordinators named in a credential: TLS (with its CA file, or the
 * system roots), plaintext only when every address is loopback or the credential says `insecure`.
 */
export async function federationChannelCredentials(cred: SiteCredential): Promise<ChannelCredentials> {
  if (cred.tls.insecure) return credentials.createInsecure();
  if (!cred.tls.caFile && cred.federation.every((a) => isLoopbackAddress(a)))
    return credentials.createInsecure();
  let ca: Buffer | null = null;
  if (cred.tls.caFile) {
    try {
      ca = await readFile(cred.tls.caFile);
    } catch (err) {
      throw new Error(`CA file ${cred.tls.caFile} named in the site credential: ${(err as Error).message}`);
    }
  }
  return credentials.createSsl(ca);
}

export interface SiteTokenSourceOptions {
  site: string;
  audience: string;
  key: SiteSigningKey;
  ttlSec?: number;
  refreshBeforeSec?: number;
  /** Unix ms clock; `Date.now` by default. */
  now?: () => number;
}

/** Signs the site's tokens and reuses each until shortly before it expires. */
export class SiteTokenSource {
  private cached: { token: string; exp: number } | undefined;
  private readonly ttlSec: number;
  private readonly refreshBeforeSec: number;
  private readonly now: () => number;

  constructor(private readonly o: SiteTokenSourceOptions) {
    this.ttlSec = o.ttlSec ?? DEFAULT_SITE_TOKEN_TTL_SEC;
    this.refreshBeforeSec = o.refreshBeforeSec ?? DEFAULT_SITE_TOKEN_REFRESH_SEC;
    this.now = o.now ?? Date.now;
    if (!(this.ttlSec > this.refreshBeforeSec && this.refreshBeforeSec >= 0)) {
      throw new Error(
        `site token ttl (${this.ttlSec}s) must be longer than its refresh margin (${this.refreshBeforeSec}s)`,
      );
    }
  }

  static async fromCredential(
    path: string,
    o: Partial<SiteTokenSourceOptions> = {},
  ): Promise<SiteTokenSource> {
    const cred = await readSiteCredential(path);
    const key = await loadSiteSigningKey(cred.keyFile);
    return new SiteTokenSource({ site: cred.site, audience: cred.audience, key, ...o });
  }

  get site(): string {
    return this.o.site;
  }

  /** A valid token for the next call; signs a new one when the cached one is near expiry. */
  async token(): Promise<string> {
    const nowSec = Math.floor(this.now() / 1000);
    if (this.cached && this.cached.exp - this.refreshBeforeSec > nowSec) return this.cached.token;
    const exp = nowSec + this.ttlSec;
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: this.o.key.alg, kid: this.o.key.kid, typ: SITE_TOKEN_TYPE })
      .setIssuer(this.o.site)
      .setSubject(this.o.site)
      .setAudience(this.o.audience)
      .setJti(randomUUID())
      .setIssuedAt(nowSec)
      .setNotBefore(nowSec)
      .setExpirationTime(exp)
      .sign(this.o.key.privateKey);
    this.cached = { token, exp };
    return token;
  }

  /** Call metadata carrying the current token. */
  async metadata(): Promise<Metadata> {
    const md = new Metadata();
    md.set("authorization", `Bearer ${await this.token()}`);
    return md;
  }

  /** Drops the cached token (e.g. after the coordinator answered UNAUTHENTICATED). */
  invalidate(): void {
    this.cached = undefined;
  }
}
