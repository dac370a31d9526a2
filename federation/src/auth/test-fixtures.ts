// Shared by the auth tests: a coordinator key set in memory and ways to forge bad tokens
// (unsigned, tampered, signed by a stranger) the way an attacker would.
import { type JWTPayload, SignJWT } from "jose";
import { generateSigningKeyPair, importSigningKey, type SigningKey } from "./coordinator-keys.js";
import { type AuthSettings, DEFAULT_AUTH_SETTINGS, type SigningAlgorithm } from "./token-kinds.js";
import { TrustedKeys } from "./trusted-keys.js";

export interface TestCoordinator {
  signer: SigningKey;
  trusted: TrustedKeys;
  settings: AuthSettings;
}

export async function testCoordinator(alg: SigningAlgorithm = "EdDSA"): Promise<TestCoordinator> {
  const pair = await generateSigningKeyPair(alg);
  return {
    signer: await importSigningKey(pair.privateJwk, "test"),
    trusted: new TrustedKeys({ keys: [pair.publicJwk] }),
    settings: { ...DEFAULT_AUTH_SETTINGS },
  };
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

/** `alg: none` with an empty signature (what RFC 7519 calls an unsecured JWT). */
export function unsignedToken(header: Record<string, unknown>, payload: JWTPayload): string {
  return `${b64({ ...header, alg: "none" })}.${b64(payload)}.`;
}

/** The same token with its payload changed and the original signature kept. */
export function tamper(token: string, change: (p: Record<string, unknown>) => void): string {
  const [h, p, s] = token.split(".");
  const payload = JSON.parse(Buffer.from(p!, "base64url").toString()) as Record<string, unknown>;
  change(payload);
  return `${h}.${b64(payload)}.${s}`;
}

export function payloadOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()) as Record<string, unknown>;
}

/** Signs any header/payload with `key`, for tokens a well-behaved minter would never make. */
export async function signRaw(
  key: SigningKey,
  header: Record<string, unknown>,
  payload: JWTPayload,
): Promise<string> {
  return new SignJWT(payload)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, ...header })
    .sign(key.privateKey);
}

export const nowSec = () => Math.floor(Date.now() / 1000);
