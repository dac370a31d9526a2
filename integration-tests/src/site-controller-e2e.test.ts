// Two sites following one federation end to end: a 3-node coordinator group (`isthmus
// coordinator` processes, one Raft group on loopback), `isthmus site add` / `site join` / `apply`
// run as an operator would, and a real site controller per site, each on its own PostgreSQL
// database. Intent applied at the federation reaches both sites' databases and
// an agent's watch stream; with every coordinator stopped the sites keep serving (and say how
// stale they are); when the coordinators return the sites catch up.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { credentials, Metadata } from "@grpc/grpc-js";
import { auth } from "@isthmus/federation";
import { intentpb, silentLogger, topologypb } from "@isthmus/schema";
import { SiteController, SiteTokenSource, startTestPostgres, type TestPostgres } from "@isthmus/site-agent";
import { runCli } from "./harness/cli.js";
import { CoordinatorGroup } from "./harness/coordinator-group.js";

let pgs: TestPostgres | undefined;
let skip: string | undefined;
before(async () => {
  const r = await startTestPostgres();
  if ("skip" in r) {
    skip = r.skip;
    console.log(`# skipping: ${r.skip}`);
  } else pgs = r;
});
after(async () => {
  await pgs?.stop();
});

async function until<T>(
  what: string,
  f: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 20_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function watchBridges(address: string, token: string) {
  const client = new topologypb.TopologyServiceClient(address, credentials.createInsecure());
  const md = new Metadata();
  md.set("authorization", `Bearer ${token}`);
  const bridges = new Map<string, topologypb.Bridge>();
  const stream = client.watch({ hostId: "agent", fromRevision: 0 }, md);
  stream.on("data", (e: topologypb.WatchTopologyResponse) => {
    if (e.snapshot) {
      bridges.clear();
      for (const o of e.snapshot.objects) if (o.bridge) bridges.set(o.bridge.id, o.bridge);
    }
    for (const r of e.change?.deletes ?? [])
      if (r.kind === topologypb.TopologyKind.TOPOLOGY_KIND_BRIDGE) bridges.delete(r.id);
    for (const o of e.change?.upserts ?? []) if (o.bridge) bridges.set(o.bridge.id, o.bridge);
  });
  stream.on("error", () => {});
  return {
    bridges,
    close() {
      stream.cancel();
      client.close();
    },
  };
}

test("intent reaches two sites and an agent; sites serve through a federation outage and catch up", async (t) => {
  if (skip) return t.skip(skip);
  const base = await mkdtemp(join(tmpdir(), "isthmus-e2e-sites-"));
  t.after(() => rm(base, { recursive: true, force: true }));
  const keyDir = join(base, "coord-keys");
  assert.equal((await runCli(["bootstrap", "--dir", keyDir])).code, 0);
  const adminToken = join(keyDir, auth.KEY_DIR_FILES.adminToken);
  const group = await CoordinatorGroup.start(3, base, keyDir);
  t.after(() => group.stopAll());
  const [c1, c2, c3] = group.addresses as [string, string, string];

  // Onboard two sites as an operator would.
  const creds: Record<string, string> = {};
  for (const [site, via] of [
    ["ams", c1],
    ["fra", c2],
  ] as const) {
    const add = await runCli([
      "site",
      "add",
      site,
      "--server",
      via,
      "--token-file",
      adminToken,
      "-o",
      "json",
    ]);
    assert.equal(add.code, 0, add.stderr);
    const token = (JSON.parse(add.stdout) as { token: string }).token;
    const dir = join(base, site);
    const join_ = await runCli([
      "site",
      "join",
      "--token",
      token,
      "--federation",
      `${c1},${c2},${c3}`,
      "--key-dir",
      dir,
    ]);
    assert.equal(join_.code, 0, join_.stderr);
    creds[site] = join(dir, "credential.json");
  }

  // One controller per site, each on its own database, following all three coordinators.
  const controllers: Record<string, SiteController> = {};
  for (const site of ["ams", "fra"]) {
    const tokens = await SiteTokenSource.fromCredential(creds[site]!);
    controllers[site] = await SiteController.start({
      site,
      dbUrl: await pgs!.createDatabase(),
      federation: group.addresses,
      federationMetadata: () => tokens.metadata(),
      listen: "127.0.0.1:0",
      log: silentLogger(),
      tuning: { backoffInitialMs: 50, backoffMaxMs: 500, feedPollMs: 30, ackEveryMs: 50 },
    });
  }
  t.after(async () => {
    for (const c of Object.values(controllers)) await c.stop();
  });
  const ams = controllers.ams!;
  const fra = controllers.fra!;
  const agentToken = (await ams.tokens.issue("admin", "admin", 600)).token;
  const agent = watchBridges(ams.address, agentToken);
  t.after(() => agent.close());

  // An admin applies a stretched network at the federation.
  const intentFile = join(base, "web.yaml");
  await writeFile(
    intentFile,
    "networks:\n  - name: web\n    subnets:\n      - cidr: 10.20.0.0/24\n        gatewayIp: 10.20.0.1\n    sites: [ams, fra]\n",
  );
  const applied = await runCli(["apply", "-f", intentFile, "--server", c3, "--token-file", adminToken]);
  assert.equal(applied.code, 0, applied.stderr);
  const networkRows = async (c: SiteController) =>
    (
      await c.db.pool.query("SELECT id FROM intent_objects WHERE kind = $1", [
        intentpb.ObjectKind.OBJECT_KIND_NETWORK,
      ])
    ).rowCount;
  await until(
    "network in both sites' databases",
    async () => (await networkRows(ams)) === 1 && (await networkRows(fra)) === 1,
  );
  const bridge = await until("bridge in the agent's watch stream", () => [...agent.bridges.values()][0]);
  assert.ok(bridge.tunnelKey >= 0x100000 && bridge.tunnelKey <= 0x7ffffe, "global VNI on the bridge");

  // Both sites end up streaming from the raft leader, whichever coordinator they reached first.
  const leaderNow = async () => {
    const st = await runCli(["status", "--server", c1, "--token-file", adminToken, "-o", "json"]);
    return st.code === 0 ? ((JSON.parse(st.stdout) as { leaderAddress?: string }).leaderAddress ?? "") : "";
  };
  const followingLeader = async () => {
    const leader = await until("a known leader", leaderNow);
    assert.ok(group.addresses.includes(leader), `the leader ${leader} is one of the coordinators`);
    t.diagnostic(`leader c${group.addresses.indexOf(leader) + 1}`);
    await until(
      "both sites following the leader",
      async () =>
        ams.status().federationAddress === leader &&
        fra.status().federationAddress === leader &&
        (await leaderNow()) === leader,
    );
  };
  await followingLeader();

  // Every coordinator stops: both sites keep serving and report staleness.
  await group.stopAll();
  await until("outage noticed", () => !ams.status().federationConnected && !fra.status().federationConnected);
  await new Promise((r) => setTimeout(r, 500));
  const st = ams.status();
  assert.ok(st.stalenessMs >= 400, `staleness ${st.stalenessMs}`);
  assert.match(st.detail, /no coordinator reachable/);
  assert.equal(agent.bridges.size, 1, "agent still has its topology");
  const again = watchBridges(ams.address, agentToken);
  t.after(() => again.close());
  await until("a new agent gets the last applied topology during the outage", () => again.bridges.size === 1);

  // The coordinators come back; a second network is applied; both sites catch up.
  await group.startAll();
  await writeFile(
    intentFile,
    "networks:\n  - name: app\n    subnets:\n      - cidr: 10.30.0.0/24\n        gatewayIp: 10.30.0.1\n    sites: [ams, fra]\n",
  );
  const applied2 = await runCli(["apply", "-f", intentFile, "--server", c1, "--token-file", adminToken]);
  assert.equal(applied2.code, 0, applied2.stderr);
  await until(
    "both sites caught up",
    async () => (await networkRows(ams)) === 2 && (await networkRows(fra)) === 2,
    30_000,
  );
  await until("agent sees the new bridge", () => agent.bridges.size === 2);
  assert.equal(ams.status().federationConnected, true);
  await followingLeader(); // after the restart's election too
});
