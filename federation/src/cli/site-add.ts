// `isthmus site add NAME`: mints the single-use onboarding token a new site presents to Join.
// Single use is enforced by the coordinators (they record the token's jti in the log when it is used).
import { formatDuration, loadSigningKeyDir, mintOnboardingToken, parseDuration } from "../auth/index.js";
import { writeSecretFile } from "../auth/secret-file.js";

export interface SiteAddFlags {
  keyDir: string;
  ttl: string;
  out?: string;
  output: string;
}

export async function runSiteAdd(name: string, f: SiteAddFlags): Promise<number> {
  if (f.output !== "text" && f.output !== "json") {
    console.error(`isthmus site add: -o must be text or json, got "${f.output}"`);
    return 2;
  }
  const ttlSec = parseDuration(f.ttl, "--ttl");
  const { signer, settings } = await loadSigningKeyDir(f.keyDir);
  const { token, grant } = await mintOnboardingToken(signer, settings, { site: name, ttlSec });
  const expiresAt = new Date(grant.exp * 1000).toISOString();
  if (f.out) await writeSecretFile(f.out, `${token}\n`);
  if (f.output === "json") {
    console.log(
      JSON.stringify({ site: name, jti: grant.jti, expiresAt, ...(f.out ? { file: f.out } : { token }) }),
    );
    return 0;
  }
  if (!f.out) console.log(token);
  console.error(
    `onboarding token for site "${name}" (single use, expires ${expiresAt}, in ${formatDuration(ttlSec)})` +
      `${f.out ? ` written to ${f.out}` : ""}; at the site run:\n` +
      `  isthmus site join --token <token> --federation <coordinator host:port> --key-dir <dir>`,
  );
  return 0;
}
