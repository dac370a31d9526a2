// Admin tokens: JWTs the coordinator's key signs for people and scripts, carrying a role —
// `admin` may change intent, `viewer` may only read.
import { permissionDenied, unauthenticated } from "./auth-error.js";
import type { SigningKey } from "./coordinator-keys.js";
import { mintCoordinatorToken, type VerifyOptions, verifyCoordinatorToken } from "./coordinator-token.js";
import { type AuthSettings, MAX_TTL_SEC, ROLES, type Role } from "./token-kinds.js";
import type { TrustedKeys } from "./trusted-keys.js";

export interface AdminPrincipal {
  subject: string;
  role: Role;
  jti: string;
  /** Expiry, unix seconds. */
  exp: number;
}

export type Access = "read" | "write";

export async function mintAdminToken(
  signer: SigningKey,
  settings: AuthSettings,
  o: { subject: string; role: Role; ttlSec: number; nowMs?: number },
): Promise<string> {
  if (!ROLES.includes(o.role)) throw new Error(`role must be one of ${ROLES.join(", ")}, got "${o.role}"`);
  if (o.ttlSec > MAX_TTL_SEC.admin) {
    throw new Error(`admin token ttl ${o.ttlSec}s is longer than the maximum ${MAX_TTL_SEC.admin}s`);
  }
  return mintCoordinatorToken(signer, "admin", {
    issuer: settings.issuer,
    audience: settings.adminAudience,
    subject: o.subject,
    ttlSec: o.ttlSec,
    nowMs: o.nowMs,
    claims: { role: o.role },
  });
}

export async function verifyAdminToken(
  token: string,
  keys: TrustedKeys,
  settings: AuthSettings,
  o: VerifyOptions = {},
): Promise<AdminPrincipal> {
  const { payload } = await verifyCoordinatorToken(
    token,
    "admin",
    keys,
    { issuer: settings.issuer, audience: settings.adminAudience, maxAgeSec: MAX_TTL_SEC.admin },
    o,
  );
  const role = payload.role;
  if (typeof role !== "string" || !(ROLES as readonly string[]).includes(role)) {
    throw unauthenticated(
      `admin token has role ${JSON.stringify(role ?? null)}; expected one of ${ROLES.join(", ")}`,
    );
  }
  return { subject: payload.sub, role: role as Role, jti: payload.jti, exp: payload.exp };
}

/** Throws PERMISSION_DENIED when the principal's role does not allow `access`. */
export function requireAccess(p: AdminPrincipal, access: Access, action = "this call"): void {
  if (access === "write" && p.role !== "admin") {
    throw permissionDenied(
      `"${p.subject}" has role ${p.role}, which is read-only; ${action} changes intent and needs role admin`,
    );
  }
}
