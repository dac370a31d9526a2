import assert from "node:assert/strict";
import { test } from "node:test";
import {
  credentials,
  type Metadata,
  Server,
  ServerCredentials,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import { intentpb, sitesyncpb } from "@isthmus/schema";
import { generateSiteKeyPair, type SiteSigningKey, SiteTokenSource } from "@isthmus/site-agent";
import { importJWK } from "jose";
import { Authenticator } from "./grpc-authenticator.js";
import { SiteStreamRegistry } from "./site-stream-registry.js";
import type { RegisteredSite } from "./site-token.js";
import { testCoordinator } from "./test-fixtures.js";

test("registry bounds streams per site and in total; forgetting frees the slot", () => {
  const r = new SiteStreamRegistry({ maxPerSite: 2, maxTotal: 3 });
  const f1 = r.register("a", () => {});
  r.register("a", () => {});
  assert.throws(
    () => r.register("a", () => {}),
    (e: ServiceError) => e.code === status.RESOURCE_EXHAUSTED,
  );
  r.register("b", () => {});
  assert.throws(() => r.register("c", () => {}), /3 site streams/);
  f1();
  f1(); // idempotent
  assert.equal(r.openStreams("a"), 1);
  assert.equal(r.openStreams(), 2);
  const cut: ServiceError[] = [];
  r.register("c", (e) => cut.push(e));
  assert.equal(r.cutSite("c"), 1);
  assert.equal(cut[0]?.code, status.UNAUTHENTICATED);
  assert.equal(r.cutSite("c"), 0);
  assert.equal(r.openStreams(), 2);
});

// A WatchIntent server wired the way the coordinator wires auth: authenticate the site, register
// its stream, and keep it open. Revoking the site must cut the open stream and refuse the next one.
test("revoking a site cuts its open WatchIntent stream over real gRPC and refuses new ones", async (t) => {
  const c = await testCoordinator();
  const sites = new Map<string, RegisteredSite>();
  const pair = await generateSiteKeyPair();
  sites.set("paris", {
    publicKeyJwk: JSON.stringify(pair.publicJwk),
    state: intentpb.SiteState.SITE_STATE_ACTIVE,
  });
  const auth = new Authenticator({
    settings: c.settings,
    trusted: c.trusted,
    lookupSite: (s) => sites.get(s),
  });
  const registry = new SiteStreamRegistry();
  const server = new Server();
  const unimplemented = (_call: unknown, cb: (e: Partial<ServiceError>) => void) =>
    cb({ code: status.UNIMPLEMENTED, details: "not in this test" });
  const impl: sitesyncpb.SiteSyncServiceServer = {
    join: unimplemented,
    ack: unimplemented,
    reportRealized: unimplemented,
    watchIntent: async (call) => {
      try {
        await auth.site(call, call.request.site);
        registry.registerCall(call.request.site, call);
        call.write({ progressIndex: 7 });
      } catch (err) {
        call.emit("error", err);
      }
    },
  };
  server.addService(sitesyncpb.SiteSyncServiceService, impl);
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  t.after(() => server.forceShutdown());
  const client = new sitesyncpb.SiteSyncServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
  t.after(() => client.close());
  const key: SiteSigningKey = {
    kid: pair.privateJwk.kid as string,
    alg: "EdDSA",
    privateKey: (await importJWK(pair.privateJwk, "EdDSA")) as SiteSigningKey["privateKey"],
  };
  const source = new SiteTokenSource({ site: "paris", audience: c.settings.siteAudience, key });

  const watch = (md: Metadata, site = "paris") => {
    const stream = client.watchIntent({ site, fromIndex: 0 }, md, { deadline: Date.now() + 10_000 });
    const first = new Promise<sitesyncpb.WatchIntentResponse>((res, rej) => {
      stream.once("data", res);
      stream.once("error", rej);
    });
    const ended = new Promise<ServiceError>((res) => stream.on("error", res));
    return { first, ended };
  };

  const open = watch(await source.metadata());
  assert.equal((await open.first).progressIndex, 7);
  assert.equal(registry.openStreams("paris"), 1);

  // Acting for another site is refused before any stream is registered.
  const other = watch(await source.metadata(), "oslo");
  const denied = await other.first.then(
    () => assert.fail("expected PERMISSION_DENIED"),
    (e: ServiceError) => e,
  );
  assert.equal(denied.code, status.PERMISSION_DENIED);

  // The state machine applies a revocation: the site's state changes and its streams are cut.
  sites.set("paris", { ...sites.get("paris")!, state: intentpb.SiteState.SITE_STATE_REVOKED });
  assert.equal(registry.cutSite("paris"), 1);
  const cut = await open.ended;
  assert.equal(cut.code, status.UNAUTHENTICATED);
  assert.match(cut.details, /site "paris" has been revoked; this stream is closed/);
  assert.equal(registry.openStreams("paris"), 0);

  const again = watch(await source.metadata());
  const refused = await again.first.then(
    () => assert.fail("expected UNAUTHENTICATED"),
    (e: ServiceError) => e,
  );
  assert.equal(refused.code, status.UNAUTHENTICATED);
  assert.match(refused.details, /revoked/);
});
