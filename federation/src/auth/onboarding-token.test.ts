import assert from "node:assert/strict";
import { test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { mintAdminToken } from "./admin-token.js";
import { AuthError } from "./auth-error.js";
import { Authenticator } from "./grpc-authenticator.js";
import { OnboardingTokenIssuer } from "./onboarding-issuer.js";
import { mintOnboardingToken, verifyOnboardingToken } from "./onboarding-token.js";
import { payloadOf, tamper, testCoordinator } from "./test-fixtures.js";

const isCode = (code: status, re: RegExp) => (err: unknown) =>
  err instanceof AuthError && err.code === code && re.test(err.message);

test("an onboarding token verifies to {jti, site, exp}; each token has its own jti", async () => {
  const c = await testCoordinator();
  const a = await mintOnboardingToken(c.signer, c.settings, { site: "paris", ttlSec: 900 });
  const b = await mintOnboardingToken(c.signer, c.settings, { site: "paris", ttlSec: 900 });
  const g = await verifyOnboardingToken(a.token, c.trusted, c.settings);
  assert.deepEqual(g, a.grant);
  assert.equal(g.site, "paris");
  assert.equal(payloadOf(a.token).aud, "isthmus-site-onboarding");
  assert.notEqual(a.grant.jti, b.grant.jti);
});

test("onboarding tokens expire; a long TTL and a bad site name are refused at mint", async () => {
  const c = await testCoordinator();
  const t0 = Date.now();
  const { token } = await mintOnboardingToken(c.signer, c.settings, { site: "oslo", ttlSec: 900, nowMs: t0 });
  await assert.rejects(
    verifyOnboardingToken(token, c.trusted, c.settings, { nowMs: t0 + 16 * 60_000 }),
    isCode(status.UNAUTHENTICATED, /onboarding token expired.*isthmus site add/),
  );
  await assert.rejects(
    mintOnboardingToken(c.signer, c.settings, { site: "oslo", ttlSec: 2 * 86400 }),
    /maximum/,
  );
  await assert.rejects(
    mintOnboardingToken(c.signer, c.settings, { site: "Bad_Name", ttlSec: 60 }),
    /site name/,
  );
});

test("an admin token cannot be used to onboard, and a tampered site name is refused", async () => {
  const c = await testCoordinator();
  const admin = await mintAdminToken(c.signer, c.settings, { subject: "ada", role: "admin", ttlSec: 60 });
  await assert.rejects(
    verifyOnboardingToken(admin, c.trusted, c.settings),
    isCode(status.UNAUTHENTICATED, /this is an admin token, but this call needs an onboarding token/),
  );
  const { token } = await mintOnboardingToken(c.signer, c.settings, { site: "oslo", ttlSec: 60 });
  const other = tamper(token, (p) => {
    p.sub = "rome";
  });
  await assert.rejects(
    verifyOnboardingToken(other, c.trusted, c.settings),
    isCode(status.UNAUTHENTICATED, /signature does not verify/),
  );
});

test("Authenticator.onboarding: bound to the site, revocable; an admin call with it fails", async () => {
  const c = await testCoordinator();
  const revoked = new Set<string>();
  const auth = new Authenticator({
    settings: c.settings,
    trusted: c.trusted,
    lookupSite: () => undefined,
    isTokenRevoked: (jti) => revoked.has(jti),
  });
  const { token, grant } = await mintOnboardingToken(c.signer, c.settings, { site: "oslo", ttlSec: 60 });
  const md = new Metadata();
  md.set("authorization", `Bearer ${token}`);
  assert.deepEqual(await auth.onboarding({ metadata: md }, "oslo"), grant);
  await assert.rejects(
    auth.onboarding(md, "rome"),
    isCode(status.PERMISSION_DENIED, /for site "oslo", not "rome"/),
  );
  await assert.rejects(auth.admin(md, "read"), isCode(status.UNAUTHENTICATED, /onboarding token/));
  await assert.rejects(
    auth.site(md),
    isCode(status.UNAUTHENTICATED, /onboarding token, but this call needs a site token/),
  );
  revoked.add(grant.jti);
  await assert.rejects(auth.onboarding(md, "oslo"), isCode(status.UNAUTHENTICATED, /revoked/));
});

test("OnboardingTokenIssuer mints tokens the Authenticator accepts for that site", async () => {
  const c = await testCoordinator();
  const issuer = new OnboardingTokenIssuer(c.signer, c.settings);
  const t = await issuer.issue("lima", 600);
  const g = await verifyOnboardingToken(t.token, c.trusted, c.settings);
  assert.deepEqual(g, { jti: t.jti, site: "lima", exp: t.exp });
  await assert.rejects(issuer.issue("lima", 90_000), /maximum/);
});
