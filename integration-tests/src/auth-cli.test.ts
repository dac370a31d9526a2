// The auth commands as an operator runs them: bootstrap a key dir, mint admin/viewer tokens, mint an
// onboarding token and join a site with it. Join is answered by a small in-test SiteSyncService that
// authenticates exactly as the coordinator does (Authenticator) and keeps consumed jtis in a Set in
// place of the replicated state machine.
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Server, ServerCredentials, type ServiceError, status } from "@grpc/grpc-js";
import { auth } from "@isthmus/federation";
import { intentpb, sitesyncpb } from "@isthmus/schema";
import { readSiteCredential, SiteTokenSource } from "@isthmus/site-agent";
import { runCli } from "./harness/cli.js";

const mode = async (p: string) => (await stat(p)).mode & 0o777;

async function tempBase(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const base = await mkdtemp(join(tmpdir(), "isthmus-auth-cli-"));
  t.after(() => rm(base, { recursive: true, force: true }));
  return base;
}

test("isthmus bootstrap + token create: 0600 files, working admin and viewer tokens", async (t) => {
  const dir = join(await tempBase(t), "keys");
  const boot = await runCli(["bootstrap", "--dir", dir]);
  assert.equal(boot.code, 0, boot.stderr);
  assert.match(boot.stdout, /created coordinator signing key/);
  assert.equal(await mode(dir), 0o700);
  for (const f of Object.values(auth.KEY_DIR_FILES)) assert.equal(await mode(join(dir, f)), 0o600, f);

  const again = await runCli(["auth", "bootstrap", "--dir", dir]);
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /refusing to overwrite .*--force/);

  const { trusted, settings } = await auth.loadTrustedKeyDir(dir);
  const first = (await readFile(join(dir, auth.KEY_DIR_FILES.adminToken), "utf8")).trim();
  assert.equal((await auth.verifyAdminToken(first, trusted, settings)).role, "admin");

  const viewer = await runCli([
    "token",
    "create",
    "--key-dir",
    dir,
    "--role",
    "viewer",
    "--ttl",
    "1h",
    "--subject",
    "vera",
  ]);
  assert.equal(viewer.code, 0, viewer.stderr);
  const p = await auth.verifyAdminToken(viewer.stdout.trim(), trusted, settings);
  assert.deepEqual([p.subject, p.role], ["vera", "viewer"]);
  assert.ok(Math.abs(p.exp - (Date.now() / 1000 + 3600)) < 30, "ttl 1h");
  assert.throws(
    () => auth.requireAccess(p, "write"),
    (e: ServiceError) => e.code === status.PERMISSION_DENIED,
  );

  const out = join(dir, "ops.token");
  const viaEnv = await runCli(["token", "create", "--role", "admin", "--out", out], {
    env: { ISTHMUS_KEY_DIR: dir },
  });
  assert.equal(viaEnv.code, 0, viaEnv.stderr);
  assert.equal(await mode(out), 0o600);
  assert.equal(
    (await auth.verifyAdminToken((await readFile(out, "utf8")).trim(), trusted, settings)).role,
    "admin",
  );

  const noRole = await runCli(["token", "create", "--key-dir", dir]);
  assert.notEqual(noRole.code, 0);
  assert.match(noRole.stderr, /--role/);
  const bad = await runCli(["token", "create", "--key-dir", dir, "--role", "root"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--role must be one of admin, viewer/);
  const badTtl = await runCli(["token", "create", "--key-dir", dir, "--role", "viewer", "--ttl", "soon"]);
  assert.notEqual(badTtl.code, 0);
  assert.match(badTtl.stderr, /--ttl "soon" is not a duration/);
});

test("isthmus site add + site join: onboarding token used once, site key 0600, credential works", async (t) => {
  const base = await tempBase(t);
  const dir = join(base, "coord");
  assert.equal((await runCli(["bootstrap", "--dir", dir])).code, 0);
  const sites = new Map<string, auth.RegisteredSite>();
  const authn = await auth.Authenticator.fromKeyDir(dir, { lookupSite: (s) => sites.get(s) });
  const consumed = new Set<string>(); // stands in for the jtis the state machine records

  const server = new Server();
  const unimplemented = (_c: unknown, cb: (e: Partial<ServiceError>) => void) =>
    cb({ code: status.UNIMPLEMENTED, details: "not in this test" });
  const impl: sitesyncpb.SiteSyncServiceServer = {
    join: async (call, cb) => {
      try {
        const grant = await authn.onboarding(call, call.request.site);
        const key = await auth.parseSitePublicKey(call.request.publicKeyJwk);
        if (consumed.has(grant.jti)) {
          return cb({ code: status.UNAUTHENTICATED, details: "onboarding token already used" });
        }
        consumed.add(grant.jti);
        sites.set(grant.site, {
          publicKeyJwk: JSON.stringify(key.jwk),
          state: intentpb.SiteState.SITE_STATE_ACTIVE,
        });
        cb(null, { siteId: `id-${grant.site}`, index: 42, audience: authn.settings.siteAudience });
      } catch (err) {
        cb(err as ServiceError);
      }
    },
    watchIntent: (call) => call.emit("error", { code: status.UNIMPLEMENTED }),
    ack: unimplemented,
    reportRealized: unimplemented,
  };
  server.addService(sitesyncpb.SiteSyncServiceService, impl);
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  t.after(() => server.forceShutdown());

  const add = await runCli(["site", "add", "paris", "--key-dir", dir, "--ttl", "10m", "-o", "json"]);
  assert.equal(add.code, 0, add.stderr);
  const added = JSON.parse(add.stdout) as { site: string; token: string; jti: string; expiresAt: string };
  assert.equal(added.site, "paris");

  const siteDir = join(base, "site");
  // The first address refuses connections: join moves on to the next one.
  const join1 = await runCli([
    "site",
    "join",
    "--token",
    added.token,
    "--federation",
    `127.0.0.1:1,127.0.0.1:${port}`,
    "--key-dir",
    siteDir,
  ]);
  assert.equal(join1.code, 0, join1.stderr);
  assert.match(join1.stdout, /site "paris" joined through 127\.0\.0\.1:\d+ \(log index 42\)/);
  assert.deepEqual([...consumed], [added.jti]);
  assert.equal(await mode(join(siteDir, "site-key.jwk")), 0o600);
  assert.equal(await mode(join(siteDir, "credential.json")), 0o600);
  const credential = await readSiteCredential(join(siteDir, "credential.json"));
  assert.equal(credential.site, "paris");
  assert.equal(credential.joinedIndex, 42);
  assert.deepEqual(credential.federation, ["127.0.0.1:1", `127.0.0.1:${port}`]);
  assert.ok(!(sites.get("paris")?.publicKeyJwk ?? "").includes('"d"'), "only the public key left the site");

  // The credential is all the site controller needs to authenticate.
  const source = await SiteTokenSource.fromCredential(join(siteDir, "credential.json"));
  const md = await source.metadata();
  assert.equal((await authn.site(md, "paris")).site, "paris");

  // Replaying the same token (new key dir, as an attacker would) is refused.
  const replay = await runCli([
    "site",
    "join",
    "--token",
    added.token,
    "--federation",
    `127.0.0.1:${port}`,
    "--key-dir",
    join(base, "thief"),
  ]);
  assert.equal(replay.code, 1);
  assert.match(replay.stderr, /already used/);
  // Joining again over an existing credential needs --force.
  const twice = await runCli([
    "site",
    "join",
    "--token",
    added.token,
    "--federation",
    `127.0.0.1:${port}`,
    "--key-dir",
    siteDir,
  ]);
  assert.notEqual(twice.code, 0);
  assert.match(twice.stderr, /has joined already; use --force/);
  // An admin token is not an onboarding token.
  const adminTok = (await readFile(join(dir, auth.KEY_DIR_FILES.adminToken), "utf8")).trim();
  const wrongKind = await runCli([
    "site",
    "join",
    "--token",
    adminTok,
    "--federation",
    `127.0.0.1:${port}`,
    "--key-dir",
    join(base, "x"),
  ]);
  assert.notEqual(wrongKind.code, 0);
  assert.match(wrongKind.stderr, /not an onboarding token/);
});
