// Site onboarding end to end with the real pieces: two coordinator endpoints, each with its own
// intent state machine, the real Authenticator and onboarding issuer, fed in the same order from one
// shared log (what a raft group gives them; this test stands in for raft with an in-test log), and
// the `isthmus` CLI run as separate processes for site add / join / list / revoke.
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { credentials, Server, ServerCredentials, type ServiceError, status } from "@grpc/grpc-js";
import { api, auth, intent } from "@isthmus/federation";
import { EntryType } from "@isthmus/federation/raft";
import { federationpb, intentpb, silentLogger, sitesyncpb, startGrpcServer } from "@isthmus/schema";
import { SiteTokenSource } from "@isthmus/site-agent";
import { runCli } from "./harness/cli.js";

/** Every proposal becomes the next entry of one log, applied on every node in order. */
class SharedLog {
  private readonly nodes: intent.IntentStateMachine[] = [];
  private index = 0;

  replicator(sm: intent.IntentStateMachine, nodeId: string, address: () => string): api.Replicator {
    this.nodes.push(sm);
    const unsupported = async () => {
      throw new api.UnsupportedError("membership changes are not part of this test");
    };
    return {
      nodeId,
      propose: async (data) => {
        const entry = { term: 1, index: ++this.index, type: EntryType.Normal, data };
        let mine: intent.ApplyResult | undefined;
        for (const n of this.nodes) {
          const r = n.apply(entry);
          if (n === sm) mine = r;
        }
        return mine!;
      },
      read: async () => {},
      otherLeader: () => "", // every node of the shared log acts as the leader
      status: () => ({
        nodeId,
        leaderId: nodeId,
        leaderAddress: address(),
        term: 1,
        commitIndex: this.index,
        appliedIndex: sm.index,
        role: "leader",
        members: [],
      }),
      addMember: unsupported,
      removeMember: unsupported,
    };
  }
}

async function startNode(log: SharedLog, id: string, keyDir: string) {
  const sm = new intent.IntentStateMachine();
  let address = "";
  const authn = await auth.Authenticator.fromKeyDir(keyDir, { lookupSite: (s) => sm.site(s) });
  const ctx = new api.ServiceContext({
    sm,
    replicator: log.replicator(sm, id, () => address),
    auth: authn,
    issuer: await auth.OnboardingTokenIssuer.fromKeyDir(keyDir),
    siteAudience: authn.settings.siteAudience,
    log: silentLogger(),
    limits: { progressIntervalMs: 50 },
  });
  const server = new Server();
  server.addService(federationpb.FederationServiceService, api.federationService(ctx));
  server.addService(sitesyncpb.SiteSyncServiceService, api.siteSyncService(ctx));
  const started = await startGrpcServer(
    server,
    "127.0.0.1:0",
    ServerCredentials.createInsecure(),
    silentLogger(),
  );
  address = started.address;
  return {
    sm,
    address,
    async stop() {
      ctx.streams.closeAll("test over");
      await started.stop(500);
    },
  };
}

test("onboarding: token works once (replay fails on another node), site identity, list, revoke cuts the stream", async (t) => {
  const base = await mkdtemp(join(tmpdir(), "isthmus-onboarding-"));
  t.after(() => rm(base, { recursive: true, force: true }));
  const keyDir = join(base, "coord-keys");
  assert.equal((await runCli(["bootstrap", "--dir", keyDir])).code, 0);
  const adminToken = join(keyDir, auth.KEY_DIR_FILES.adminToken);
  const log = new SharedLog();
  const a = await startNode(log, "a", keyDir);
  const b = await startNode(log, "b", keyDir);
  t.after(() => Promise.all([a.stop(), b.stop()]));

  // An admin registers the site through node A; the coordinator mints the onboarding token.
  const add = await runCli([
    "site",
    "add",
    "paris",
    "--server",
    a.address,
    "--token-file",
    adminToken,
    "-o",
    "json",
  ]);
  assert.equal(add.code, 0, add.stderr);
  const added = JSON.parse(add.stdout) as { token: string; jti: string; index: number };
  assert.equal(
    b.sm.site("paris")?.state,
    intentpb.SiteState.SITE_STATE_PENDING,
    "node B applied AddSite too",
  );

  // A viewer may list but not add or revoke.
  const viewer = await runCli([
    "token",
    "create",
    "--key-dir",
    keyDir,
    "--role",
    "viewer",
    "--out",
    join(base, "viewer"),
  ]);
  assert.equal(viewer.code, 0, viewer.stderr);
  const denied = await runCli([
    "site",
    "revoke",
    "paris",
    "--server",
    a.address,
    "--token-file",
    join(base, "viewer"),
  ]);
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /PERMISSION_DENIED: .*role viewer/);

  // The site joins through node A with the token...
  const siteDir = join(base, "site");
  const joined = await runCli([
    "site",
    "join",
    "--token",
    added.token,
    "--federation",
    a.address,
    "--key-dir",
    siteDir,
  ]);
  assert.equal(joined.code, 0, joined.stderr);
  assert.equal(b.sm.site("paris")?.state, intentpb.SiteState.SITE_STATE_ACTIVE);

  // ...and the same token replayed against node B is refused there.
  const replay = await runCli([
    "site",
    "join",
    "--token",
    added.token,
    "--federation",
    b.address,
    "--key-dir",
    join(base, "thief"),
  ]);
  assert.equal(replay.code, 1);
  assert.match(replay.stderr, /already used/);

  // Listing on node B (as a viewer) shows the site active with its key.
  const list = await runCli([
    "site",
    "list",
    "--server",
    b.address,
    "--token-file",
    join(base, "viewer"),
    "-o",
    "json",
  ]);
  assert.equal(list.code, 0, list.stderr);
  const listed = JSON.parse(list.stdout) as { sites: { name: string; state: string; key: string | null }[] };
  const paris = listed.sites.find((s) => s.name === "paris");
  assert.equal(paris?.state, "active");
  assert.match(paris?.key ?? "", /^[A-Za-z0-9_-]{43}$/);

  // The site controller authenticates with its own key on node B and keeps a stream open.
  const source = await SiteTokenSource.fromCredential(join(siteDir, "credential.json"));
  const sync = new sitesyncpb.SiteSyncServiceClient(b.address, credentials.createInsecure());
  t.after(() => sync.close());
  const stream = sync.watchIntent({ site: "paris", fromIndex: 0 }, await source.metadata());
  const ended = new Promise<ServiceError>((resolve) => stream.on("error", resolve));
  stream.on("data", () => {});
  const first = await new Promise<unknown>((resolve, reject) => {
    stream.once("data", resolve);
    stream.once("error", reject);
  });
  assert.ok(first);

  // Acting for another site is refused even with a valid site token.
  const other = sync.watchIntent({ site: "oslo", fromIndex: 0 }, await source.metadata());
  const otherErr = await new Promise<ServiceError>((resolve) => other.on("error", resolve));
  assert.equal(otherErr.code, status.PERMISSION_DENIED);

  // Revoking through node A cuts the stream on node B and refuses the site's next call.
  const revoke = await runCli(["site", "revoke", "paris", "--server", a.address, "--token-file", adminToken]);
  assert.equal(revoke.code, 0, revoke.stderr);
  const cut = await ended;
  assert.equal(cut.code, status.UNAUTHENTICATED);
  assert.match(cut.details, /revoked/);
  const after = sync.watchIntent({ site: "paris", fromIndex: 0 }, await source.metadata());
  const refused = await new Promise<ServiceError>((resolve) => after.on("error", resolve));
  assert.equal(refused.code, status.UNAUTHENTICATED);
  assert.match(refused.details, /revoked/);
  assert.ok((await readFile(adminToken, "utf8")).length > 0);
});
