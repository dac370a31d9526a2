import assert from "node:assert/strict";
import { test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { intentpb } from "@isthmus/schema";
import {
  generateSiteKeyPair,
  SITE_TOKEN_TYPE,
  type SiteSigningKey,
  SiteTokenSource,
} from "@isthmus/site-agent";
import { importJWK, type JWK } from "jose";
import { mintAdminToken } from "./admin-token.js";
import { AuthError } from "./auth-error.js";
import { Authenticator } from "./grpc-authenticator.js";
import { parseSitePublicKey, type RegisteredSite, SiteTokenVerifier } from "./site-token.js";
import { payloadOf, tamper, testCoordinator, unsignedToken } from "./test-fixtures.js";
import { DEFAULT_AUTH_SETTINGS, TOKEN_TYPES } from "./token-kinds.js";

const AUD = DEFAULT_AUTH_SETTINGS.siteAudience;
const { SITE_STATE_ACTIVE, SITE_STATE_PENDING, SITE_STATE_REVOKED } = intentpb.SiteState;

const isCode = (code: status, re: RegExp) => (err: unknown) => {
  assert.ok(err instanceof AuthError, String(err));
  assert.equal(err.code, code, err.message);
  assert.match(err.message, re);
  return true;
};

async function newSite(name: string, registry: Map<string, RegisteredSite>, now?: () => number) {
  const pair = await generateSiteKeyPair();
  const key: SiteSigningKey = {
    kid: pair.privateJwk.kid as string,
    alg: "EdDSA",
    privateKey: (await importJWK(pair.privateJwk, "EdDSA")) as SiteSigningKey["privateKey"],
  };
  registry.set(name, { publicKeyJwk: JSON.stringify(pair.publicJwk), state: SITE_STATE_ACTIVE });
  return { pair, key, source: new SiteTokenSource({ site: name, audience: AUD, key, now }) };
}

test("the site-side token type matches what the coordinator expects", () => {
  assert.equal(SITE_TOKEN_TYPE, TOKEN_TYPES.site);
});

test("a site's own token verifies; it may act for itself only", async () => {
  const sites = new Map<string, RegisteredSite>();
  const paris = await newSite("paris", sites);
  await newSite("oslo", sites);
  const v = new SiteTokenVerifier({ audience: AUD, lookup: (s) => sites.get(s) });
  const token = await paris.source.token();
  const p = await v.verify(token, "paris");
  assert.equal(p.site, "paris");
  assert.equal(payloadOf(token).iss, "paris");
  await assert.rejects(
    v.verify(token, "oslo"),
    isCode(status.PERMISSION_DENIED, /site "paris" may only act for itself, not for site "oslo"/),
  );
});

test("revoked, pending and unknown sites are refused with UNAUTHENTICATED", async () => {
  const sites = new Map<string, RegisteredSite>();
  const paris = await newSite("paris", sites);
  const v = new SiteTokenVerifier({ audience: AUD, lookup: async (s) => sites.get(s) });
  const token = await paris.source.token();
  await v.verify(token);
  sites.set("paris", { ...sites.get("paris")!, state: SITE_STATE_REVOKED });
  await assert.rejects(v.verify(token), isCode(status.UNAUTHENTICATED, /site "paris" has been revoked/));
  sites.set("paris", { publicKeyJwk: "", state: SITE_STATE_PENDING });
  await assert.rejects(v.verify(token), isCode(status.UNAUTHENTICATED, /has not completed join/));
  sites.delete("paris");
  await assert.rejects(v.verify(token), isCode(status.UNAUTHENTICATED, /"paris" is not registered/));
});

test("a site cannot sign as another site, nor with a tampered or unsigned token", async () => {
  const sites = new Map<string, RegisteredSite>();
  await newSite("paris", sites);
  const oslo = await newSite("oslo", sites);
  const v = new SiteTokenVerifier({ audience: AUD, lookup: (s) => sites.get(s) });
  // Oslo's key, claiming to be Paris.
  const impostor = new SiteTokenSource({ site: "paris", audience: AUD, key: oslo.key });
  await assert.rejects(
    v.verify(await impostor.token()),
    isCode(status.UNAUTHENTICATED, /signature does not verify/),
  );
  const renamed = tamper(await oslo.source.token(), (p) => {
    p.iss = "paris";
    p.sub = "paris";
  });
  await assert.rejects(v.verify(renamed), isCode(status.UNAUTHENTICATED, /signature does not verify/));
  const none = unsignedToken(
    { typ: TOKEN_TYPES.site },
    { iss: "paris", sub: "paris", aud: AUD, iat: 1, exp: 2e9 },
  );
  await assert.rejects(v.verify(none), isCode(status.UNAUTHENTICATED, /unsigned/));
});

test("wrong audience, expired and overlong site tokens are refused", async () => {
  const sites = new Map<string, RegisteredSite>();
  let now = Date.now();
  const paris = await newSite("paris", sites, () => now);
  const v = new SiteTokenVerifier({ audience: AUD, lookup: (s) => sites.get(s) });
  const elsewhere = new SiteTokenSource({ site: "paris", audience: "other-federation", key: paris.key });
  await assert.rejects(
    v.verify(await elsewhere.token()),
    isCode(status.UNAUTHENTICATED, /audience "other-federation", expected "isthmus-site-sync"/),
  );
  const t0 = now;
  const token = await paris.source.token();
  await assert.rejects(
    v.verify(token, undefined, { nowMs: t0 + 6 * 60_000 }),
    isCode(status.UNAUTHENTICATED, /site token expired/),
  );
  // A site that mints itself a day-long token is still held to 15 minutes by iat.
  const greedy = new SiteTokenSource({ site: "paris", audience: AUD, key: paris.key, ttlSec: 86400 });
  const long = await greedy.token();
  await assert.rejects(
    v.verify(long, undefined, { nowMs: t0 + 20 * 60_000 }),
    isCode(status.UNAUTHENTICATED, /too old/),
  );
  now = t0;
});

test("an admin token is not a site token", async () => {
  const c = await testCoordinator();
  const sites = new Map<string, RegisteredSite>();
  const v = new SiteTokenVerifier({ audience: AUD, lookup: (s) => sites.get(s) });
  const admin = await mintAdminToken(c.signer, c.settings, { subject: "ada", role: "admin", ttlSec: 60 });
  await assert.rejects(
    v.verify(admin),
    isCode(status.UNAUTHENTICATED, /this is an admin token, but this call needs a site token/),
  );
});

test("SiteTokenSource reuses its token until shortly before expiry, then signs a new one", async () => {
  const sites = new Map<string, RegisteredSite>();
  let now = Date.now();
  const { source } = await newSite("paris", sites, () => now);
  const first = await source.token();
  now += 200_000; // 300 s ttl, 60 s margin: still fresh at +200 s
  assert.equal(await source.token(), first);
  now += 50_000; // +250 s: inside the margin
  const second = await source.token();
  assert.notEqual(second, first);
  assert.ok((payloadOf(second).exp as number) > (payloadOf(first).exp as number));
  source.invalidate();
  assert.notEqual(await source.token(), second);
  const md = await source.metadata();
  assert.match(String(md.get("authorization")[0]), /^Bearer ey/);
});

test("Authenticator.site reads the bearer from call metadata", async () => {
  const c = await testCoordinator();
  const sites = new Map<string, RegisteredSite>();
  const paris = await newSite("paris", sites);
  const auth = new Authenticator({
    settings: c.settings,
    trusted: c.trusted,
    lookupSite: (s) => sites.get(s),
  });
  assert.equal((await auth.site({ metadata: await paris.source.metadata() }, "paris")).site, "paris");
  await assert.rejects(auth.site(new Metadata()), isCode(status.UNAUTHENTICATED, /no credentials/));
  const basic = new Metadata();
  basic.set("authorization", "Basic dXNlcjpwYXNz");
  await assert.rejects(auth.site(basic), isCode(status.UNAUTHENTICATED, /"Bearer <token>"/));
});

test("parseSitePublicKey accepts a public Ed25519/P-256 JWK and refuses private or odd keys", async () => {
  const pair = await generateSiteKeyPair();
  const ok = await parseSitePublicKey(JSON.stringify(pair.publicJwk));
  assert.equal(ok.alg, "EdDSA");
  assert.equal(ok.thumbprint, pair.publicJwk.kid);
  const bad = (jwk: unknown, re: RegExp) =>
    assert.rejects(
      parseSitePublicKey(typeof jwk === "string" ? jwk : JSON.stringify(jwk)),
      (err: unknown) => {
        assert.ok(err instanceof AuthError);
        assert.equal(err.code, status.INVALID_ARGUMENT);
        assert.match(err.message, /^public_key_jwk: /);
        assert.match(err.message, re);
        return true;
      },
    );
  await bad(pair.privateJwk, /private key/);
  await bad("{not json", /not JSON/);
  await bad({ kty: "RSA", n: "x", e: "AQAB" }, /not supported/);
  await bad({ ...(pair.publicJwk as JWK), x: "AAAA" }, /not a usable key/);
});
