// `isthmus bootstrap` / `isthmus auth bootstrap`: creates the coordinator's key directory (signing
// key, trusted public keys, issuer/audiences) and a first admin token, all owner-only.
import { bootstrapKeyDir, isSigningAlgorithm, parseDuration } from "../auth/index.js";

export interface BootstrapFlags {
  dir: string;
  alg: string;
  force?: boolean;
  subject: string;
  adminTtl: string;
  issuer?: string;
}

export async function runBootstrap(f: BootstrapFlags): Promise<number> {
  if (!isSigningAlgorithm(f.alg)) {
    console.error(`isthmus bootstrap: --alg must be EdDSA or ES256, got "${f.alg}"`);
    return 2;
  }
  const adminTtlSec = parseDuration(f.adminTtl, "--admin-ttl");
  const r = await bootstrapKeyDir(f.dir, {
    alg: f.alg,
    force: f.force,
    subject: f.subject,
    adminTtlSec,
    settings: f.issuer ? { issuer: f.issuer } : {},
  });
  console.log(`created coordinator signing key ${r.kid} (${r.alg}) in ${f.dir}`);
  for (const file of r.files) console.log(`  ${file}`);
  console.log(`first admin token (role admin, ttl ${f.adminTtl}): ${r.adminTokenPath}`);
  console.log("copy this directory to every coordinator node (--key-dir); keep it owner-only");
  return 0;
}
