import assert from "node:assert/strict";
import { test } from "node:test";
import { status } from "@grpc/grpc-js";
import { mintAdminToken, requireAccess, verifyAdminToken } from "./admin-token.js";
import { AuthError } from "./auth-error.js";
import { generateSigningKeyPair, importSigningKey } from "./coordinator-keys.js";
import { mintOnboardingToken } from "./onboarding-token.js";
import { nowSec, signRaw, tamper, testCoordinator, unsignedToken } from "./test-fixtures.js";
import { TOKEN_TYPES } from "./token-kinds.js";
import { TrustedKeys } from "./trusted-keys.js";

async function rejects(p: Promise<unknown>, code: status, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof AuthError, `expected AuthError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, message);
    return true;
  });
}
const UNAUTH = status.UNAUTHENTICATED;

test("a valid admin token verifies and carries subject and role", async () => {
  const c = await testCoordinator();
  const token = await mintAdminToken(c.signer, c.settings, { subject: "alice", role: "viewer", ttlSec: 600 });
  const p = await verifyAdminToken(token, c.trusted, c.settings);
  assert.equal(p.subject, "alice");
  assert.equal(p.role, "viewer");
  assert.ok(p.exp > nowSec() + 590 && p.exp <= nowSec() + 600);
  assert.match(p.jti, /^[0-9a-f-]{36}$/);
});

test("ES256 keys work the same as EdDSA", async () => {
  const c = await testCoordinator("ES256");
  const token = await mintAdminToken(c.signer, c.settings, { subject: "bob", role: "admin", ttlSec: 60 });
  assert.equal((await verifyAdminToken(token, c.trusted, c.settings)).role, "admin");
});

test("expired and not-yet-valid tokens are refused, within the clock skew they pass", async () => {
  const c = await testCoordinator();
  const t0 = Date.now();
  const token = await mintAdminToken(c.signer, c.settings, {
    subject: "a",
    role: "admin",
    ttlSec: 60,
    nowMs: t0,
  });
  await rejects(
    verifyAdminToken(token, c.trusted, c.settings, { nowMs: t0 + 60_000 + 31_000, clockSkewSec: 30 }),
    UNAUTH,
    /admin token expired at .*allowed clock skew 30s/,
  );
  // 20 s past expiry is inside a 30 s skew.
  await verifyAdminToken(token, c.trusted, c.settings, { nowMs: t0 + 80_000, clockSkewSec: 30 });
  await rejects(
    verifyAdminToken(token, c.trusted, c.settings, { nowMs: t0 - 45_000, clockSkewSec: 30 }),
    UNAUTH,
    /not valid before .*check the clocks/,
  );
  await verifyAdminToken(token, c.trusted, c.settings, { nowMs: t0 - 20_000, clockSkewSec: 30 });
});

test("a token without exp is refused", async () => {
  const c = await testCoordinator();
  const token = await signRaw(
    c.signer,
    { typ: TOKEN_TYPES.admin },
    {
      iss: c.settings.issuer,
      aud: c.settings.adminAudience,
      sub: "a",
      jti: "j1",
      iat: nowSec(),
      role: "admin",
    },
  );
  await rejects(verifyAdminToken(token, c.trusted, c.settings), UNAUTH, /no exp claim/);
});

test("wrong audience and wrong issuer are refused and named", async () => {
  const c = await testCoordinator();
  const otherAud = await mintAdminToken(
    c.signer,
    { ...c.settings, adminAudience: "someone-else" },
    { subject: "a", role: "admin", ttlSec: 60 },
  );
  await rejects(
    verifyAdminToken(otherAud, c.trusted, c.settings),
    UNAUTH,
    /audience "someone-else", expected "isthmus-federation-api"/,
  );
  const otherIss = await mintAdminToken(
    c.signer,
    { ...c.settings, issuer: "evil-coordinator" },
    { subject: "a", role: "admin", ttlSec: 60 },
  );
  await rejects(verifyAdminToken(otherIss, c.trusted, c.settings), UNAUTH, /issued by "evil-coordinator"/);
});

test("a token signed by another key is refused (unknown kid, and a reused kid)", async () => {
  const c = await testCoordinator();
  const stranger = await testCoordinator();
  const token = await mintAdminToken(stranger.signer, c.settings, {
    subject: "a",
    role: "admin",
    ttlSec: 60,
  });
  await rejects(verifyAdminToken(token, c.trusted, c.settings), UNAUTH, /does not trust/);
  // A forger who copies our kid still cannot produce our signature.
  const forged = await mintAdminToken({ ...stranger.signer, kid: c.signer.kid }, c.settings, {
    subject: "a",
    role: "admin",
    ttlSec: 60,
  });
  await rejects(verifyAdminToken(forged, c.trusted, c.settings), UNAUTH, /signature does not verify/);
});

test("alg none, HMAC and garbage are refused", async () => {
  const c = await testCoordinator();
  const payload = {
    iss: c.settings.issuer,
    aud: c.settings.adminAudience,
    sub: "mallory",
    role: "admin",
    jti: "x",
    iat: nowSec(),
    exp: nowSec() + 60,
  };
  await rejects(
    verifyAdminToken(unsignedToken({ typ: TOKEN_TYPES.admin }, payload), c.trusted, c.settings),
    UNAUTH,
    /unsigned/,
  );
  const hs = `${Buffer.from(JSON.stringify({ alg: "HS256", typ: TOKEN_TYPES.admin })).toString("base64url")}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}.c2ln`;
  await rejects(verifyAdminToken(hs, c.trusted, c.settings), UNAUTH, /alg "HS256"; only EdDSA/);
  await rejects(verifyAdminToken("not-a-jwt", c.trusted, c.settings), UNAUTH, /not a signed JWT/);
  await rejects(verifyAdminToken("a.b.c", c.trusted, c.settings), UNAUTH, /malformed/);
});

test("a tampered payload is refused", async () => {
  const c = await testCoordinator();
  const token = await mintAdminToken(c.signer, c.settings, { subject: "v", role: "viewer", ttlSec: 60 });
  const promoted = tamper(token, (p) => {
    p.role = "admin";
  });
  await rejects(verifyAdminToken(promoted, c.trusted, c.settings), UNAUTH, /signature does not verify/);
  const extended = tamper(token, (p) => {
    p.exp = (p.exp as number) + 86400;
  });
  await rejects(verifyAdminToken(extended, c.trusted, c.settings), UNAUTH, /signature does not verify/);
});

test("an onboarding token cannot be used as an admin token", async () => {
  const c = await testCoordinator();
  const { token } = await mintOnboardingToken(c.signer, c.settings, { site: "paris", ttlSec: 600 });
  await rejects(
    verifyAdminToken(token, c.trusted, c.settings),
    UNAUTH,
    /this is an onboarding token.*admin token/,
  );
  // Even relabelled as an admin token (and re-signed by the real key), its audience gives it away.
  const relabelled = await signRaw(
    c.signer,
    { typ: TOKEN_TYPES.admin },
    {
      iss: c.settings.issuer,
      aud: c.settings.onboardingAudience,
      sub: "paris",
      jti: "j",
      role: "admin",
      iat: nowSec(),
      exp: nowSec() + 60,
    },
  );
  await rejects(
    verifyAdminToken(relabelled, c.trusted, c.settings),
    UNAUTH,
    /audience "isthmus-site-onboarding"/,
  );
});

test("a token with no or an unknown role is refused", async () => {
  const c = await testCoordinator();
  const token = await signRaw(
    c.signer,
    { typ: TOKEN_TYPES.admin },
    {
      iss: c.settings.issuer,
      aud: c.settings.adminAudience,
      sub: "x",
      jti: "j",
      role: "root",
      iat: nowSec(),
      exp: nowSec() + 60,
    },
  );
  await rejects(verifyAdminToken(token, c.trusted, c.settings), UNAUTH, /role "root"/);
});

test("a viewer may read but not write (PERMISSION_DENIED)", async () => {
  const c = await testCoordinator();
  const viewer = await verifyAdminToken(
    await mintAdminToken(c.signer, c.settings, { subject: "vera", role: "viewer", ttlSec: 60 }),
    c.trusted,
    c.settings,
  );
  requireAccess(viewer, "read");
  assert.throws(
    () => requireAccess(viewer, "write", "CreateNetwork"),
    (err: AuthError) =>
      err.code === status.PERMISSION_DENIED && /"vera" has role viewer.*CreateNetwork/.test(err.message),
  );
  const admin = await verifyAdminToken(
    await mintAdminToken(c.signer, c.settings, { subject: "ada", role: "admin", ttlSec: 60 }),
    c.trusted,
    c.settings,
  );
  requireAccess(admin, "write");
});

test("rotation: a JWKS with several keys accepts tokens from each; a retired key is refused", async () => {
  const c = await testCoordinator();
  const next = await generateSigningKeyPair("ES256");
  const nextSigner = await importSigningKey(next.privateJwk, "next");
  const both = new TrustedKeys({ keys: [...c.trusted.jwks.keys, next.publicJwk] });
  const old = await mintAdminToken(c.signer, c.settings, { subject: "a", role: "admin", ttlSec: 60 });
  const fresh = await mintAdminToken(nextSigner, c.settings, { subject: "b", role: "admin", ttlSec: 60 });
  assert.equal((await verifyAdminToken(old, both, c.settings)).subject, "a");
  assert.equal((await verifyAdminToken(fresh, both, c.settings)).subject, "b");
  const retired = new TrustedKeys({ keys: [next.publicJwk] });
  await rejects(verifyAdminToken(old, retired, c.settings), UNAUTH, new RegExp(`key "${c.signer.kid}"`));
});

test("a JWKS holding a private key or a key without kid is rejected at load", async () => {
  const pair = await generateSigningKeyPair("EdDSA");
  assert.throws(() => new TrustedKeys({ keys: [pair.privateJwk] }), /private key/);
  const { kid: _kid, ...noKid } = pair.publicJwk;
  assert.throws(() => new TrustedKeys({ keys: [noKid] }), /no kid/);
  assert.throws(() => new TrustedKeys({ keys: [{ ...pair.publicJwk, alg: "HS256" }] }), /alg "HS256"/);
});
