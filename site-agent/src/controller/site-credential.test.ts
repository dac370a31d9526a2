import assert from "node:assert/strict";
import { chmod, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { decodeJwt, decodeProtectedHeader, importJWK, jwtVerify } from "jose";
import {
  federationChannelCredentials,
  generateSiteKeyPair,
  loadSiteSigningKey,
  publicJwkOf,
  readSiteCredential,
  SITE_TOKEN_TYPE,
  type SiteCredential,
  SiteTokenSource,
  writePrivateFile,
  writeSiteCredential,
} from "./site-credential.js";

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "isthmus-site-cred-"));
  t.after(() => rm(d, { recursive: true, force: true }));
  return d;
}

const cred = (over: Partial<SiteCredential> = {}): SiteCredential => ({
  version: 1,
  site: "paris",
  siteId: "id-1",
  federation: ["127.0.0.1:7400"],
  audience: "isthmus-site-sync",
  keyFile: "site-key.jwk",
  tls: {},
  joinedIndex: 3,
  ...over,
});

test("credential and key files round-trip with mode 0600; relative key paths resolve next to the credential", async (t) => {
  const dir = await tempDir(t);
  const pair = await generateSiteKeyPair();
  await writePrivateFile(join(dir, "site-key.jwk"), JSON.stringify(pair.privateJwk));
  await writeSiteCredential(join(dir, "credential.json"), cred());
  assert.equal((await stat(join(dir, "credential.json"))).mode & 0o777, 0o600);
  assert.equal((await stat(join(dir, "site-key.jwk"))).mode & 0o777, 0o600);
  const back = await readSiteCredential(join(dir, "credential.json"));
  assert.equal(back.keyFile, join(dir, "site-key.jwk"));
  const key = await loadSiteSigningKey(back.keyFile);
  assert.equal(key.kid, pair.publicJwk.kid);
  assert.deepEqual(publicJwkOf(pair.privateJwk), pair.publicJwk);
});

test("a bad credential names the field; a key readable by others is refused", async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, "credential.json");
  await writeFile(path, JSON.stringify({ ...cred(), federation: [] }), { mode: 0o600 });
  await assert.rejects(readSiteCredential(path), /field "federation"/);
  await writeFile(path, "{", { mode: 0o600 });
  await assert.rejects(readSiteCredential(path), /credential .*credential\.json/);
  const pair = await generateSiteKeyPair();
  const keyPath = join(dir, "k.jwk");
  await writeFile(keyPath, JSON.stringify(pair.privateJwk));
  await chmod(keyPath, 0o644);
  await assert.rejects(loadSiteSigningKey(keyPath), /mode 644.*chmod 600/);
  await writePrivateFile(keyPath, JSON.stringify(pair.publicJwk));
  await assert.rejects(loadSiteSigningKey(keyPath), /public key/);
});

test("SiteTokenSource signs typed, audience-bound tokens the public key verifies", async (t) => {
  const dir = await tempDir(t);
  const pair = await generateSiteKeyPair();
  await writePrivateFile(join(dir, "site-key.jwk"), JSON.stringify(pair.privateJwk));
  await writeSiteCredential(join(dir, "credential.json"), cred());
  const source = await SiteTokenSource.fromCredential(join(dir, "credential.json"));
  const token = await source.token();
  assert.equal(decodeProtectedHeader(token).typ, SITE_TOKEN_TYPE);
  const { payload } = await jwtVerify(token, await importJWK(pair.publicJwk, "EdDSA"), {
    issuer: "paris",
    subject: "paris",
    audience: "isthmus-site-sync",
    typ: SITE_TOKEN_TYPE,
  });
  assert.equal((payload.exp as number) - (payload.iat as number), 300);
  assert.equal(decodeJwt(token).jti, payload.jti);
  const key = await loadSiteSigningKey(join(dir, "site-key.jwk"));
  assert.throws(() => new SiteTokenSource({ site: "x", audience: "a", key, ttlSec: 30 }), /refresh margin/);
});

test("federationChannelCredentials: plaintext only for loopback or insecure; TLS needs a readable CA", async () => {
  assert.ok(await federationChannelCredentials(cred()));
  assert.ok(await federationChannelCredentials(cred({ federation: ["10.0.0.1:7400"] })));
  await assert.rejects(
    federationChannelCredentials(
      cred({ federation: ["10.0.0.1:7400"], tls: { caFile: "/nonexistent/ca.pem" } }),
    ),
    /CA file \/nonexistent\/ca\.pem/,
  );
  const secure = await federationChannelCredentials(cred({ federation: ["10.0.0.1:7400"] }));
  assert.equal(secure._isSecure(), true);
  assert.equal((await federationChannelCredentials(cred()))._isSecure(), false);
  assert.equal(
    (
      await federationChannelCredentials(cred({ federation: ["10.0.0.1:1"], tls: { insecure: true } }))
    )._isSecure(),
    false,
  );
});
