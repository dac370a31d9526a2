// `isthmus site join`, run at the site: makes the site's key pair here (the private key never leaves
// this machine), registers the public key with SiteSyncService.Join using the onboarding token as
// bearer, and writes the credential file the site controller reads (`--credential`).
// It loads only site-agent's light credential entry point, not the agent datapath.

import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { type ChannelCredentials, credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { isLoopbackAddress, sitesyncpb } from "@isthmus/schema";
import {
  generateSiteKeyPair,
  loadSiteSigningKey,
  publicJwkOf,
  writePrivateFile,
  writeSiteCredential,
} from "@isthmus/site-agent/credential";
import { decodeJwt, decodeProtectedHeader, type JWK } from "jose";
import { TOKEN_TYPES } from "../auth/index.js";
import { exists, readSecretFile } from "../auth/secret-file.js";

export interface SiteJoinFlags {
  token?: string;
  tokenFile?: string;
  federation: string;
  keyDir: string;
  credential?: string;
  ca?: string;
  insecure?: boolean;
  force?: boolean;
  timeout: string;
}

export const SITE_KEY_FILE = "site-key.jwk";
export const CREDENTIAL_FILE = "credential.json";

/** Codes after which another coordinator address may succeed; anything else is final. */
const TRY_NEXT = new Set<number>([status.UNAVAILABLE, status.DEADLINE_EXCEEDED]);

function fail(msg: string): never {
  throw new Error(msg);
}

/** Reads the site name and expiry from the onboarding token without trusting it (the coordinator verifies). */
function describeToken(token: string): { site: string; exp: number } {
  let typ: string | undefined;
  let body: ReturnType<typeof decodeJwt>;
  try {
    typ = decodeProtectedHeader(token).typ;
    body = decodeJwt(token);
  } catch {
    return fail("the onboarding token is not a JWT; pass the token `isthmus site add` printed");
  }
  if (typ !== TOKEN_TYPES.onboarding) {
    fail(`this is not an onboarding token (typ "${typ ?? ""}"); get one with \`isthmus site add NAME\``);
  }
  if (typeof body.sub !== "string" || typeof body.exp !== "number")
    fail("the onboarding token lacks sub or exp");
  return { site: body.sub, exp: body.exp };
}

async function channelCredentials(address: string, f: SiteJoinFlags): Promise<ChannelCredentials> {
  if (f.insecure || (isLoopbackAddress(address) && !f.ca)) return credentials.createInsecure();
  return credentials.createSsl(f.ca ? await readFile(f.ca) : null);
}

async function callJoin(
  address: string,
  f: SiteJoinFlags,
  req: sitesyncpb.JoinRequest,
  token: string,
  timeoutMs: number,
): Promise<sitesyncpb.JoinResponse> {
  const client = new sitesyncpb.SiteSyncServiceClient(address, await channelCredentials(address, f));
  const md = new Metadata();
  md.set("authorization", `Bearer ${token}`);
  try {
    return await new Promise((resolve, reject) =>
      client.join(req, md, { deadline: Date.now() + timeoutMs }, (err, res) =>
        err ? reject(err) : resolve(res),
      ),
    );
  } finally {
    client.close();
  }
}

export interface JoinedSite {
  site: string;
  credentialFile: string;
  /** Coordinator that answered. */
  address: string;
  /** Log index of the join. */
  index: number;
  /** An earlier attempt's key that was reused. */
  reusedKey?: { kid: string; file: string };
}

/** The join itself, without printing: `isthmus site join` and `isthmus dev` both call it. */
export async function joinSite(f: SiteJoinFlags): Promise<JoinedSite> {
  if ((f.token === undefined) === (f.tokenFile === undefined))
    fail("give exactly one of --token and --token-file");
  const token = (f.token ?? (await readSecretFile(f.tokenFile!))).trim();
  const { site, exp } = describeToken(token);
  if (exp * 1000 < Date.now()) {
    fail(
      `the onboarding token for "${site}" expired at ${new Date(exp * 1000).toISOString()}; ask for a new one`,
    );
  }
  const addresses = f.federation
    .split(",")
    .map((a) => a.trim())
    .filter((a) => a !== "");
  if (addresses.length === 0) fail("--federation needs at least one coordinator address (host:port)");
  const timeoutMs = Number(f.timeout);
  if (!(timeoutMs > 0)) fail(`--timeout must be a positive number of milliseconds, got "${f.timeout}"`);

  const keyDir = resolve(f.keyDir);
  const keyFile = join(keyDir, SITE_KEY_FILE);
  const credentialFile = resolve(f.credential ?? join(keyDir, CREDENTIAL_FILE));
  if ((await exists(credentialFile)) && !f.force) {
    fail(`${credentialFile} exists: this site has joined already; use --force to join again with a new key`);
  }
  // Reuse a key left by an earlier attempt that never got an answer; --force always makes a new one.
  let publicJwk: JWK;
  let reusedKey: { kid: string; file: string } | undefined;
  if ((await exists(keyFile)) && !f.force) {
    const key = await loadSiteSigningKey(keyFile); // checks mode 0600 and that it is a usable private key
    publicJwk = {
      ...publicJwkOf(JSON.parse(await readSecretFile(keyFile)) as JWK),
      kid: key.kid,
      alg: key.alg,
    };
    reusedKey = { kid: key.kid, file: keyFile };
  } else {
    const pair = await generateSiteKeyPair();
    await writePrivateFile(keyFile, `${JSON.stringify(pair.privateJwk, null, 2)}\n`);
    publicJwk = pair.publicJwk;
  }

  const req: sitesyncpb.JoinRequest = { site, publicKeyJwk: JSON.stringify(publicJwk) };
  const errors: string[] = [];
  for (const address of addresses) {
    try {
      const res = await callJoin(address, f, req, token, timeoutMs);
      await writeSiteCredential(credentialFile, {
        version: 1,
        site,
        siteId: res.siteId,
        federation: addresses,
        audience: res.audience,
        keyFile,
        tls: { ...(f.ca ? { caFile: resolve(f.ca) } : {}), ...(f.insecure ? { insecure: true } : {}) },
        joinedIndex: res.index,
      });
      return { site, credentialFile, address, index: res.index, ...(reusedKey ? { reusedKey } : {}) };
    } catch (err) {
      const e = err as ServiceError;
      errors.push(
        typeof e.code === "number"
          ? `${address}: ${status[e.code]}: ${e.details}`
          : `${address}: ${e.message}`,
      );
      if (typeof e.code !== "number" || !TRY_NEXT.has(e.code)) break;
    }
  }
  return fail(`could not join "${site}":\n  ${errors.join("\n  ")}`);
}

export async function runSiteJoin(f: SiteJoinFlags): Promise<number> {
  let joined: JoinedSite;
  try {
    joined = await joinSite(f);
  } catch (err) {
    const msg = (err as Error).message;
    // Argument and file problems keep their old form (thrown to main); a refused join is exit 1.
    if (!msg.startsWith("could not join")) throw err;
    console.error(`isthmus site join: ${msg}`);
    return 1;
  }
  if (joined.reusedKey)
    console.error(`reusing site key ${joined.reusedKey.kid} from ${joined.reusedKey.file}`);
  console.log(
    `site "${joined.site}" joined through ${joined.address} (log index ${joined.index}); credential: ${joined.credentialFile}`,
  );
  console.log(`start the controller with --credential ${joined.credentialFile}`);
  return 0;
}
