// `isthmus site add NAME`: the single-use onboarding token a new site presents to Join. Two ways:
// through the AddSite RPC (the site is registered as pending and a coordinator holding the signing
// key mints the token), or offline with --key-dir (minted here; the site appears when it joins).
// Either way single use is enforced by the coordinators, which record the token's jti when it is used.
import type { federationpb } from "@isthmus/schema";
import { formatDuration, loadSigningKeyDir, mintOnboardingToken, parseDuration } from "../auth/index.js";
import { writeSecretFile } from "../auth/secret-file.js";
import { type ConnectionFlags, describeError, FederationClient, loadClientConfig } from "./connection.js";

export interface SiteAddFlags extends ConnectionFlags {
  keyDir?: string;
  ttl: string;
  out?: string;
  output: string;
  region?: string;
  description?: string;
}

async function mintLocally(
  name: string,
  keyDir: string,
  ttlSec: number,
): Promise<{ token: string; exp: number }> {
  const { signer, settings } = await loadSigningKeyDir(keyDir);
  const { token, grant } = await mintOnboardingToken(signer, settings, { site: name, ttlSec });
  return { token, exp: grant.exp };
}

async function addThroughCoordinator(
  name: string,
  f: SiteAddFlags,
  ttlSec: number,
): Promise<{ token: string; exp: number; index: number }> {
  const client = new FederationClient(loadClientConfig(f));
  try {
    const res = await client.rpc<federationpb.AddSiteRequest, federationpb.AddSiteResponse>(
      (c) => c.addSite,
      {
        name,
        region: f.region ?? "",
        description: f.description ?? "",
        labels: {},
        tokenTtlSeconds: ttlSec,
      },
    );
    return { token: res.onboardingToken, exp: Math.floor(res.tokenExpiresUnixMs / 1000), index: res.index };
  } finally {
    client.close();
  }
}

export async function runSiteAdd(name: string, f: SiteAddFlags): Promise<number> {
  if (f.output !== "text" && f.output !== "json") {
    console.error(`isthmus site add: -o must be text or json, got "${f.output}"`);
    return 2;
  }
  const ttlSec = parseDuration(f.ttl, "--ttl");
  let minted: { token: string; exp: number; index?: number };
  try {
    minted = f.keyDir
      ? await mintLocally(name, f.keyDir, ttlSec)
      : await addThroughCoordinator(name, f, ttlSec);
  } catch (err) {
    console.error(`isthmus site add ${name}: ${describeError(err)}`);
    return 1;
  }
  const { token, exp } = minted;
  const expiresAt = new Date(exp * 1000).toISOString();
  if (f.out) await writeSecretFile(f.out, `${token}\n`);
  if (f.output === "json") {
    const jti = (
      JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString()) as { jti?: string }
    ).jti;
    console.log(
      JSON.stringify({
        site: name,
        jti,
        expiresAt,
        ...(minted.index !== undefined ? { index: minted.index } : {}),
        ...(f.out ? { file: f.out } : { token }),
      }),
    );
    return 0;
  }
  if (!f.out) console.log(token);
  console.error(
    `onboarding token for site "${name}" (single use, expires ${expiresAt}, in ${formatDuration(ttlSec)})` +
      `${minted.index !== undefined ? `; site registered as pending at log index ${minted.index}` : ""}` +
      `${f.out ? `; written to ${f.out}` : ""}; at the site run:\n` +
      "  isthmus site join --token <token> --federation <coordinator host:port> --key-dir <dir>",
  );
  return 0;
}
