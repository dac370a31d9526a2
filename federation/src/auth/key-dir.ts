// The coordinator's key directory: the current private signing key, the set of public keys every
// node trusts (several during rotation), the federation's issuer/audiences and the first admin
// token. Created by `isthmus bootstrap`; copied to every coordinator node.

import { join } from "node:path";
import type { JSONWebKeySet, JWK } from "jose";
import { mintAdminToken } from "./admin-token.js";
import { generateSigningKeyPair, importSigningKey, type SigningKey } from "./coordinator-keys.js";
import { ensureSecretDir, exists, readJsonFile, writeSecretFile } from "./secret-file.js";
import {
  type AuthSettings,
  DEFAULT_AUTH_SETTINGS,
  DEFAULT_TTL_SEC,
  type SigningAlgorithm,
} from "./token-kinds.js";
import { TrustedKeys } from "./trusted-keys.js";

export const KEY_DIR_FILES = {
  signingKey: "signing-key.jwk",
  trustedKeys: "jwks.json",
  settings: "auth-settings.json",
  adminToken: "admin.token",
} as const;

export interface BootstrapOptions {
  alg?: SigningAlgorithm;
  force?: boolean;
  /** `sub` of the first admin token. */
  subject?: string;
  adminTtlSec?: number;
  settings?: Partial<AuthSettings>;
  nowMs?: number;
}

export interface BootstrapResult {
  kid: string;
  alg: SigningAlgorithm;
  files: string[];
  adminTokenPath: string;
}

export async function bootstrapKeyDir(dir: string, o: BootstrapOptions = {}): Promise<BootstrapResult> {
  const paths = Object.values(KEY_DIR_FILES).map((f) => join(dir, f));
  if (!o.force) {
    const present: string[] = [];
    for (const p of paths) if (await exists(p)) present.push(p);
    if (present.length > 0) {
      throw new Error(
        `refusing to overwrite existing ${present.join(", ")}: replacing the signing key invalidates every ` +
          "token and onboarding in flight; use --force to do it anyway, or `isthmus auth rotate` to add a new key",
      );
    }
  }
  const alg = o.alg ?? "EdDSA";
  const settings: AuthSettings = { ...DEFAULT_AUTH_SETTINGS, ...o.settings };
  const pair = await generateSigningKeyPair(alg);
  const signer = await importSigningKey(pair.privateJwk, "generated key");
  const token = await mintAdminToken(signer, settings, {
    subject: o.subject ?? "bootstrap-admin",
    role: "admin",
    ttlSec: o.adminTtlSec ?? DEFAULT_TTL_SEC.bootstrapAdmin,
    nowMs: o.nowMs,
  });
  await ensureSecretDir(dir);
  await writeSecretFile(join(dir, KEY_DIR_FILES.signingKey), `${JSON.stringify(pair.privateJwk, null, 2)}\n`);
  await writeSecretFile(join(dir, KEY_DIR_FILES.trustedKeys), jwksText({ keys: [pair.publicJwk] }));
  await writeSecretFile(join(dir, KEY_DIR_FILES.settings), `${JSON.stringify(settings, null, 2)}\n`);
  await writeSecretFile(join(dir, KEY_DIR_FILES.adminToken), `${token}\n`);
  return { kid: signer.kid, alg, files: paths, adminTokenPath: join(dir, KEY_DIR_FILES.adminToken) };
}

function jwksText(jwks: JSONWebKeySet): string {
  return `${JSON.stringify(jwks, null, 2)}\n`;
}

export interface LoadedKeyDir {
  settings: AuthSettings;
  trusted: TrustedKeys;
}

/** What a coordinator node needs to verify tokens (no private key). */
export async function loadTrustedKeyDir(dir: string): Promise<LoadedKeyDir> {
  const settingsPath = join(dir, KEY_DIR_FILES.settings);
  const raw = await readJsonFile<Partial<AuthSettings>>(settingsPath, false).catch((err: Error) => {
    throw new Error(`${err.message}; is ${dir} a key directory made by \`isthmus bootstrap\`?`);
  });
  const settings = { ...DEFAULT_AUTH_SETTINGS, ...raw };
  for (const [k, v] of Object.entries(settings)) {
    if (typeof v !== "string" || v === "")
      throw new Error(`${settingsPath}: ${k} must be a non-empty string`);
  }
  const jwksPath = join(dir, KEY_DIR_FILES.trustedKeys);
  const jwks = await readJsonFile<JSONWebKeySet>(jwksPath, false);
  return { settings, trusted: new TrustedKeys(jwks, jwksPath) };
}

/** Everything, including the private signing key (for minting tokens). */
export async function loadSigningKeyDir(dir: string): Promise<LoadedKeyDir & { signer: SigningKey }> {
  const loaded = await loadTrustedKeyDir(dir);
  const keyPath = join(dir, KEY_DIR_FILES.signingKey);
  const jwk = await readJsonFile<JWK>(keyPath, true);
  const signer = await importSigningKey(jwk, keyPath);
  if (!loaded.trusted.kids.has(signer.kid)) {
    throw new Error(
      `${keyPath}: key "${signer.kid}" is not in ${KEY_DIR_FILES.trustedKeys}; tokens it signs would be refused`,
    );
  }
  return { ...loaded, signer };
}

/**
 * Rotation, step 1: a new signing key becomes current; the old public keys stay trusted so tokens
 * they signed keep working until they are retired (step 2, `retireKey`) after the longest token TTL.
 */
export async function rotateSigningKey(
  dir: string,
  alg?: SigningAlgorithm,
): Promise<{ kid: string; trusted: string[] }> {
  const { trusted, signer } = await loadSigningKeyDir(dir);
  const pair = await generateSigningKeyPair(alg ?? signer.alg);
  const keys = [...trusted.jwks.keys, pair.publicJwk];
  // Trust the new key before signing with it, so no node ever sees a token from an unknown key
  // (once jwks.json has been copied to every node).
  await writeSecretFile(join(dir, KEY_DIR_FILES.trustedKeys), jwksText({ keys }));
  await writeSecretFile(join(dir, KEY_DIR_FILES.signingKey), `${JSON.stringify(pair.privateJwk, null, 2)}\n`);
  return { kid: pair.publicJwk.kid as string, trusted: keys.map((k) => k.kid as string) };
}

/** Rotation, step 2: stop trusting an old key; tokens it signed are refused from then on. */
export async function retireKey(dir: string, kid: string): Promise<{ trusted: string[] }> {
  const { trusted, signer } = await loadSigningKeyDir(dir);
  if (kid === signer.kid)
    throw new Error(`key "${kid}" is the current signing key; rotate first, then retire it`);
  if (!trusted.kids.has(kid)) {
    throw new Error(`key "${kid}" is not trusted in ${dir}; trusted keys: ${[...trusted.kids].join(", ")}`);
  }
  const keys = trusted.jwks.keys.filter((k) => k.kid !== kid);
  await writeSecretFile(join(dir, KEY_DIR_FILES.trustedKeys), jwksText({ keys }));
  return { trusted: keys.map((k) => k.kid as string) };
}
