// The coordinator's signing keys as JWKs: generating a pair, naming it (kid = RFC 7638 thumbprint),
// importing the private half for signing and checking a JWKS before trusting it for verification.
// No files here; key-dir.ts stores these.
import {
  type CryptoKey,
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JSONWebKeySet,
  type JWK,
} from "jose";
import { SIGNING_ALGORITHMS, type SigningAlgorithm } from "./token-kinds.js";

export interface SigningKey {
  kid: string;
  alg: SigningAlgorithm;
  privateKey: CryptoKey;
}

export interface GeneratedKeyPair {
  privateJwk: JWK;
  publicJwk: JWK;
}

export function isSigningAlgorithm(alg: unknown): alg is SigningAlgorithm {
  return typeof alg === "string" && (SIGNING_ALGORITHMS as readonly string[]).includes(alg);
}

/** A fresh key pair with kid, alg and use set on both halves. */
export async function generateSigningKeyPair(alg: SigningAlgorithm): Promise<GeneratedKeyPair> {
  const pair =
    alg === "EdDSA"
      ? await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true })
      : await generateKeyPair("ES256", { extractable: true });
  const publicJwk = await exportJWK(pair.publicKey);
  const kid = await calculateJwkThumbprint(publicJwk, "sha256");
  const meta = { kid, alg, use: "sig" };
  return {
    privateJwk: { ...(await exportJWK(pair.privateKey)), ...meta },
    publicJwk: { ...publicJwk, ...meta },
  };
}

/** Imports a stored private JWK for signing; `where` names the file in errors. */
export async function importSigningKey(jwk: JWK, where: string): Promise<SigningKey> {
  if (!isSigningAlgorithm(jwk.alg)) {
    throw new Error(
      `${where}: alg ${JSON.stringify(jwk.alg)} is not one of ${SIGNING_ALGORITHMS.join(", ")}`,
    );
  }
  if (typeof jwk.kid !== "string" || jwk.kid === "") throw new Error(`${where}: the key has no kid`);
  if (typeof jwk.d !== "string")
    throw new Error(`${where}: this is a public key; signing needs the private key`);
  const key = await importJWK(jwk, jwk.alg);
  if (key instanceof Uint8Array) throw new Error(`${where}: not an asymmetric private key`);
  return { kid: jwk.kid, alg: jwk.alg, privateKey: key };
}

/**
 * Checks a verification key set: only public keys, each with a unique kid and an allowed alg.
 * Returns the algorithms it contains (the set verification pins to).
 */
export function checkVerificationKeys(jwks: JSONWebKeySet, where: string): SigningAlgorithm[] {
  if (!Array.isArray(jwks?.keys) || jwks.keys.length === 0) {
    throw new Error(`${where}: expected {"keys": [...]} with at least one public key`);
  }
  const kids = new Set<string>();
  const algs = new Set<SigningAlgorithm>();
  for (const [i, k] of jwks.keys.entries()) {
    if ("d" in k)
      throw new Error(`${where}: keys[${i}] contains a private key; a JWKS holds public keys only`);
    if (!isSigningAlgorithm(k.alg)) {
      throw new Error(
        `${where}: keys[${i}].alg ${JSON.stringify(k.alg)} is not one of ${SIGNING_ALGORITHMS.join(", ")}`,
      );
    }
    if (typeof k.kid !== "string" || k.kid === "") throw new Error(`${where}: keys[${i}] has no kid`);
    if (kids.has(k.kid)) throw new Error(`${where}: kid "${k.kid}" appears twice`);
    kids.add(k.kid);
    algs.add(k.alg);
  }
  return [...algs];
}
