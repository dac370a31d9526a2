import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { mintAdminToken } from "./admin-token.js";
import { AuthError } from "./auth-error.js";
import { Authenticator, bearerToken, MAX_BEARER_LENGTH } from "./grpc-authenticator.js";
import { bootstrapKeyDir, loadSigningKeyDir } from "./key-dir.js";
import { testCoordinator } from "./test-fixtures.js";

const withBearer = (value: string) => {
  const md = new Metadata();
  md.set("authorization", value);
  return md;
};
const isCode = (code: status, re: RegExp) => (err: unknown) =>
  err instanceof AuthError && err.code === code && re.test(err.message);

test("bearerToken: missing, wrong scheme, duplicated and oversized headers are UNAUTHENTICATED", () => {
  assert.equal(bearerToken(withBearer("Bearer abc.def.ghi")), "abc.def.ghi");
  assert.equal(bearerToken({ metadata: withBearer("bearer  abc.def.ghi ") }), "abc.def.ghi");
  assert.throws(
    () => bearerToken(new Metadata()),
    isCode(status.UNAUTHENTICATED, /no credentials.*isthmus token create/),
  );
  assert.throws(() => bearerToken(withBearer("Token x")), isCode(status.UNAUTHENTICATED, /"Bearer <token>"/));
  assert.throws(() => bearerToken(withBearer("Bearer")), isCode(status.UNAUTHENTICATED, /"Bearer <token>"/));
  const two = withBearer("Bearer a");
  two.add("authorization", "Bearer b");
  assert.throws(() => bearerToken(two), isCode(status.UNAUTHENTICATED, /more than one/));
  assert.throws(
    () => bearerToken(withBearer(`Bearer ${"x".repeat(MAX_BEARER_LENGTH + 1)}`)),
    isCode(status.UNAUTHENTICATED, /limit is 8192/),
  );
});

test("Authenticator.admin: viewers read, only admins write; revoked tokens and skew are honoured", async () => {
  const c = await testCoordinator();
  const revoked = new Set<string>();
  let now = Date.now();
  const auth = new Authenticator({
    settings: c.settings,
    trusted: c.trusted,
    lookupSite: () => undefined,
    isTokenRevoked: (jti) => revoked.has(jti),
    clockSkewSec: 5,
    now: () => now,
  });
  const viewer = withBearer(
    `Bearer ${await mintAdminToken(c.signer, c.settings, { subject: "vera", role: "viewer", ttlSec: 60, nowMs: now })}`,
  );
  const admin = withBearer(
    `Bearer ${await mintAdminToken(c.signer, c.settings, { subject: "ada", role: "admin", ttlSec: 60, nowMs: now })}`,
  );
  assert.equal((await auth.admin({ metadata: viewer })).role, "viewer");
  await assert.rejects(
    auth.admin(viewer, "write", "Delete"),
    isCode(status.PERMISSION_DENIED, /"vera" has role viewer.*Delete/),
  );
  const a = await auth.admin(admin, "write");
  assert.equal(a.subject, "ada");
  now += 64_000; // 4 s past expiry: inside the 5 s skew
  await auth.admin(admin, "read");
  now += 2_000;
  await assert.rejects(auth.admin(admin, "read"), isCode(status.UNAUTHENTICATED, /expired.*skew 5s/));
  now -= 66_000;
  revoked.add(a.jti);
  await assert.rejects(auth.admin(admin, "read"), isCode(status.UNAUTHENTICATED, /revoked/));
  await assert.rejects(auth.admin(new Metadata()), isCode(status.UNAUTHENTICATED, /no credentials/));
});

test("Authenticator.fromKeyDir verifies tokens minted from the same directory; setTrustedKeys swaps keys", async (t) => {
  const base = await mkdtemp(join(tmpdir(), "isthmus-authn-"));
  t.after(() => rm(base, { recursive: true, force: true }));
  const dir = join(base, "keys");
  await bootstrapKeyDir(dir);
  const auth = await Authenticator.fromKeyDir(dir, { lookupSite: () => undefined });
  const { signer, settings } = await loadSigningKeyDir(dir);
  const md = withBearer(
    `Bearer ${await mintAdminToken(signer, settings, { subject: "x", role: "admin", ttlSec: 60 })}`,
  );
  assert.equal((await auth.admin(md, "write")).subject, "x");
  const other = await testCoordinator();
  auth.setTrustedKeys(other.trusted);
  await assert.rejects(auth.admin(md), isCode(status.UNAUTHENTICATED, /does not trust/));
});
