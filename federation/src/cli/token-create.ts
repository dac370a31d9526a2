// `isthmus token create`: mints an admin or viewer token with the coordinator's signing key.
// The token alone goes to stdout (or --out, mode 0600) so scripts can capture it.
import {
  formatDuration,
  loadSigningKeyDir,
  mintAdminToken,
  parseDuration,
  ROLES,
  type Role,
} from "../auth/index.js";
import { writeSecretFile } from "../auth/secret-file.js";

export interface TokenCreateFlags {
  keyDir: string;
  role: string;
  ttl: string;
  subject: string;
  out?: string;
}

export async function runTokenCreate(f: TokenCreateFlags): Promise<number> {
  if (!(ROLES as readonly string[]).includes(f.role)) {
    console.error(`isthmus token create: --role must be one of ${ROLES.join(", ")}, got "${f.role}"`);
    return 2;
  }
  const ttlSec = parseDuration(f.ttl, "--ttl");
  const { signer, settings } = await loadSigningKeyDir(f.keyDir);
  const token = await mintAdminToken(signer, settings, { subject: f.subject, role: f.role as Role, ttlSec });
  if (f.out) {
    await writeSecretFile(f.out, `${token}\n`);
    console.error(
      `wrote ${f.role} token for "${f.subject}" (expires in ${formatDuration(ttlSec)}) to ${f.out}`,
    );
  } else {
    console.log(token);
  }
  return 0;
}
