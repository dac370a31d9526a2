// `isthmus auth rotate` and `isthmus auth retire`: the two steps of replacing the coordinator's
// signing key without invalidating tokens that are still in use.
import { isSigningAlgorithm, retireKey, rotateSigningKey } from "../auth/index.js";

export async function runRotate(f: { dir: string; alg?: string }): Promise<number> {
  if (f.alg !== undefined && !isSigningAlgorithm(f.alg)) {
    console.error(`isthmus auth rotate: --alg must be EdDSA or ES256, got "${f.alg}"`);
    return 2;
  }
  const r = await rotateSigningKey(f.dir, f.alg);
  console.log(`new signing key ${r.kid}; trusted keys: ${r.trusted.join(", ")}`);
  console.log("copy jwks.json to every coordinator node; retire the old key once its tokens have expired");
  return 0;
}

export async function runRetire(f: { dir: string; kid: string }): Promise<number> {
  const r = await retireKey(f.dir, f.kid);
  console.log(`key ${f.kid} is no longer trusted; trusted keys: ${r.trusted.join(", ")}`);
  return 0;
}
