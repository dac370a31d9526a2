import assert from "node:assert/strict";
import { chmod, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { mintAdminToken, verifyAdminToken } from "./admin-token.js";
import {
  bootstrapKeyDir,
  KEY_DIR_FILES,
  loadSigningKeyDir,
  loadTrustedKeyDir,
  retireKey,
  rotateSigningKey,
} from "./key-dir.js";

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const base = await mkdtemp(join(tmpdir(), "isthmus-keys-"));
  t.after(() => rm(base, { recursive: true, force: true }));
  return join(base, "keys");
}

const mode = async (p: string) => (await stat(p)).mode & 0o777;

test("bootstrap writes every file 0600 in a 0700 directory, and a working admin token", async (t) => {
  const dir = await tempDir(t);
  const r = await bootstrapKeyDir(dir, { alg: "EdDSA", subject: "root" });
  assert.equal(await mode(dir), 0o700);
  for (const f of Object.values(KEY_DIR_FILES)) assert.equal(await mode(join(dir, f)), 0o600, f);
  const { trusted, settings } = await loadTrustedKeyDir(dir);
  const token = (await readFile(r.adminTokenPath, "utf8")).trim();
  const p = await verifyAdminToken(token, trusted, settings);
  assert.deepEqual([p.subject, p.role], ["root", "admin"]);
  const jwks = JSON.parse(await readFile(join(dir, KEY_DIR_FILES.trustedKeys), "utf8"));
  assert.equal(jwks.keys.length, 1);
  assert.equal(jwks.keys[0].d, undefined, "the JWKS must hold only the public key");
  assert.equal(jwks.keys[0].kid, r.kid);
});

test("bootstrap refuses to overwrite existing keys unless forced", async (t) => {
  const dir = await tempDir(t);
  const first = await bootstrapKeyDir(dir);
  await assert.rejects(bootstrapKeyDir(dir), /refusing to overwrite .*signing-key\.jwk.*--force/);
  assert.equal((await loadSigningKeyDir(dir)).signer.kid, first.kid, "the refused run changed nothing");
  const second = await bootstrapKeyDir(dir, { force: true, alg: "ES256" });
  assert.notEqual(second.kid, first.kid);
  assert.equal((await loadSigningKeyDir(dir)).signer.alg, "ES256");
});

test("bootstrap will not use an existing directory others can read, nor change its mode", async (t) => {
  const dir = await tempDir(t);
  const { mkdir } = await import("node:fs/promises");
  await mkdir(dir, { mode: 0o755 });
  await chmod(dir, 0o755);
  await assert.rejects(bootstrapKeyDir(dir), /accessible by other users \(mode 755\).*chmod 700/);
  assert.equal(await mode(dir), 0o755);
  await chmod(dir, 0o700);
  await bootstrapKeyDir(dir);
});

test("a signing key readable by others is refused", async (t) => {
  const dir = await tempDir(t);
  await bootstrapKeyDir(dir);
  await chmod(join(dir, KEY_DIR_FILES.signingKey), 0o644);
  await assert.rejects(loadSigningKeyDir(dir), /accessible by other users \(mode 644\).*chmod 600/);
});

test("rotate keeps old tokens valid until the old key is retired", async (t) => {
  const dir = await tempDir(t);
  const boot = await bootstrapKeyDir(dir);
  const before = await loadSigningKeyDir(dir);
  const oldToken = await mintAdminToken(before.signer, before.settings, {
    subject: "o",
    role: "admin",
    ttlSec: 60,
  });
  const rot = await rotateSigningKey(dir);
  assert.deepEqual(rot.trusted, [boot.kid, rot.kid]);
  const after = await loadSigningKeyDir(dir);
  assert.equal(after.signer.kid, rot.kid);
  const newToken = await mintAdminToken(after.signer, after.settings, {
    subject: "n",
    role: "admin",
    ttlSec: 60,
  });
  await verifyAdminToken(oldToken, after.trusted, after.settings);
  await verifyAdminToken(newToken, after.trusted, after.settings);
  await assert.rejects(retireKey(dir, rot.kid), /current signing key/);
  await retireKey(dir, boot.kid);
  const retired = await loadTrustedKeyDir(dir);
  await verifyAdminToken(newToken, retired.trusted, retired.settings);
  await assert.rejects(verifyAdminToken(oldToken, retired.trusted, retired.settings), /does not trust/);
  assert.equal(await mode(join(dir, KEY_DIR_FILES.trustedKeys)), 0o600);
  assert.equal(await mode(join(dir, KEY_DIR_FILES.signingKey)), 0o600);
});

test("loading a directory that is not a key dir says what to do", async (t) => {
  const dir = await tempDir(t);
  await assert.rejects(loadTrustedKeyDir(dir), /isthmus bootstrap/);
});
