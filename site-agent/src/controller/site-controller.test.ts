import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { credentials, type Metadata, status } from "@grpc/grpc-js";
import { intentpb, silentLogger, sitepb, topologypb } from "@isthmus/schema";
import { startTestPostgres, type TestPostgres } from "./db/test-postgres.js";
import { bearer } from "./host-token.js";
import { SiteController } from "./site-controller.js";
import { FakeCoordinator } from "./test-support/fake-coordinator.js";

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

const FAST = {
  leaseTtlMs: 1_500,
  leaseRenewMs: 300,
  feedPollMs: 30,
  backoffInitialMs: 50,
  backoffMaxMs: 300,
  ackEveryMs: 50,
  reportBatchMs: 30,
};

function net(id: string, name: string, vni: number, sites = ["a", "b"]): intentpb.IntentObject {
  return {
    network: intentpb.Network.fromPartial({
      meta: { id, name },
      vni,
      sites,
      subnets: [{ cidr: "10.1.0.0/24", gatewayIp: "10.1.0.1" }],
    }),
  };
}

async function until<T>(what: string, f: () => T | undefined | false, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

type Unary<Req, Res> = (req: Req, md: Metadata, cb: (err: Error | null, res: Res) => void) => unknown;

function unary<Req, Res>(fn: Unary<Req, Res>, req: Req, md: Metadata): Promise<Res> {
  return new Promise((resolve, reject) => fn(req, md, (err, res) => (err ? reject(err) : resolve(res))));
}

/** An agent's watch: collects every event; `bridges()` is the bridges its state holds now. */
function agentWatch(address: string, token: string, hostId = "") {
  const client = new topologypb.TopologyServiceClient(address, credentials.createInsecure());
  const state = new Map<string, topologypb.TopologyObject>();
  let revision = 0;
  let error: { code: number; details: string } | undefined;
  const stream = client.watch({ hostId, fromRevision: 0 }, bearer(token));
  stream.on("data", (e: topologypb.WatchTopologyResponse) => {
    if (e.snapshot) {
      state.clear();
      for (const o of e.snapshot.objects) state.set(key(o), o);
      revision = e.snapshot.revision;
    }
    if (e.change) {
      assert.equal(e.change.revision, revision + 1, "changes arrive in order without gaps");
      revision = e.change.revision;
      for (const r of e.change.deletes) state.delete(`${r.kind}/${r.id}`);
      for (const o of e.change.upserts) state.set(key(o), o);
    }
  });
  stream.on("error", (e: { code: number; details: string }) => {
    error = e;
  });
  return {
    bridges: () => [...state.values()].filter((o) => o.bridge).map((o) => o.bridge!),
    ports: () => [...state.values()].filter((o) => o.port).map((o) => o.port!),
    get error() {
      return error;
    },
    close() {
      stream.cancel();
      client.close();
    },
  };
}

function key(o: topologypb.TopologyObject): string {
  for (const [k, v] of Object.entries(o)) {
    if (v) return `${KIND[k as keyof typeof KIND]}/${(v as { id: string }).id}`;
  }
  throw new Error("empty object");
}
const KIND = {
  host: 1,
  bridge: 2,
  router: 3,
  port: 4,
  route: 5,
  chain: 6,
  rule: 7,
  ipAddrGroup: 8,
  portGroup: 9,
  macEntry: 10,
  arpEntry: 11,
  remoteGateway: 12,
} as const;

test("a controller follows the federation, serves agents, stays up without coordinators and catches up", async (t) => {
  if (skip) return t.skip(skip);
  const coord = new FakeCoordinator();
  coord.append({
    index: 1,
    upserts: [net("11111111-1111-4111-8111-111111111111", "blue", 0x100001)],
    deletes: [],
  });
  coord.append({
    index: 2,
    upserts: [net("22222222-2222-4222-8222-222222222222", "other-sites", 0x100002, ["b"])],
    deletes: [],
  });
  await coord.start();
  const url = await pgs!.createDatabase();
  const ctl = await SiteController.start({
    site: "a",
    controllerId: "ctl-1",
    dbUrl: url,
    federation: [coord.address],
    listen: "127.0.0.1:0",
    log: silentLogger(),
    tuning: FAST,
  });
  t.after(async () => {
    await ctl.stop();
    await coord.stop();
  });
  await until("intent applied", () => ctl.applier.appliedIndex === 2);
  await until("acked upward", () => coord.acks.includes(2));

  // Operators and agents: register a host (its token), watch as the agent.
  const admin = (await ctl.tokens.issue("admin", "admin", 600)).token;
  const api = new sitepb.SiteServiceClient(ctl.address, credentials.createInsecure());
  t.after(() => api.close());
  const reg = await unary<sitepb.RegisterHostRequest, sitepb.RegisterHostResponse>(
    api.registerHost.bind(api),
    {
      name: "h1",
      tunnelIp: "192.0.2.10",
      tunnelPort: 0,
      role: topologypb.HostRole.HOST_ROLE_HOST,
      wanIp: "",
      wanPort: 0,
    },
    bearer(admin),
  );
  assert.ok(reg.hostToken);
  const agent = agentWatch(ctl.address, reg.hostToken, reg.host!.id);
  const impostor = agentWatch(ctl.address, reg.hostToken, "another-host");
  await until(
    "a host token cannot watch as another host",
    () => impostor.error?.code === status.PERMISSION_DENIED,
  );
  impostor.close();
  t.after(() => agent.close());
  await until("bridge for the network spanning this site", () => agent.bridges().length === 1);
  assert.equal(agent.bridges()[0]!.tunnelKey, 0x100001, "global VNI carried to the bridge");

  // A bound port gets a site-local tunnel key, reaches the agent, and is reported upward.
  const created = await unary<sitepb.CreatePortRequest, sitepb.PortResponse>(
    api.createPort.bind(api),
    sitepb.CreatePortRequest.fromPartial({
      name: "vm1",
      networkId: "11111111-1111-4111-8111-111111111111",
      mac: "02:00:00:00:00:01",
      ips: ["10.1.0.5"],
      hostId: reg.host!.id,
      interfaceName: "tap1",
    }),
    bearer(admin),
  );
  assert.ok(created.port!.tunnelKey >= 1 && created.port!.tunnelKey <= 0x0fffff);
  const listed = await unary<sitepb.ListPortsRequest, sitepb.ListPortsResponse>(
    api.listPorts.bind(api),
    { hostId: reg.host!.id, networkId: "" },
    bearer(admin),
  );
  assert.deepEqual(
    listed.ports.map((p) => [p.name, p.tunnelKey]),
    [["vm1", created.port!.tunnelKey]],
  );
  await until("VM port in the agent's topology", () => agent.ports().some((p) => p.id === created.port!.id));
  await until("port reported upward", () =>
    coord.reports.some((r) => r.ports.some((p) => p.meta?.id === created.port!.id && p.host === "h1")),
  );

  // Bad input: a clear INVALID_ARGUMENT naming the field; a bad token: UNAUTHENTICATED.
  await assert.rejects(
    unary(
      api.createPort.bind(api),
      sitepb.CreatePortRequest.fromPartial({ name: "x", networkId: "n", mac: "zz" }),
      bearer(admin),
    ),
    (e: { code: number; details: string }) =>
      e.code === status.INVALID_ARGUMENT && /field "mac"/.test(e.details),
  );
  await assert.rejects(
    unary(api.status.bind(api), {}, bearer("not-a-token")),
    (e: { code: number }) => e.code === status.UNAUTHENTICATED,
  );
  const unauth = agentWatch(ctl.address, "forged");
  await until("unauthenticated watch refused", () => unauth.error?.code === status.UNAUTHENTICATED);
  unauth.close();

  // Every coordinator gone: the site keeps serving and says how stale it is.
  await coord.stop();
  await until("disconnect noticed", () => !ctl.status().federationConnected);
  await new Promise((r) => setTimeout(r, 300));
  const st = await unary<sitepb.SiteStatusRequest, sitepb.SiteStatusResponse>(
    api.status.bind(api),
    {},
    bearer(admin),
  );
  assert.equal(st.federationConnected, false);
  assert.ok(st.stalenessMs >= 200, `staleness ${st.stalenessMs} ms`);
  assert.match(st.detail, /no coordinator reachable/);
  await unary(api.unbindPort.bind(api), { portId: created.port!.id }, bearer(admin));
  await until(
    "local change still reaches the agent",
    () => !agent.ports().some((p) => p.id === created.port!.id && p.hostId),
  );
  assert.equal(agent.bridges().length, 1, "last applied topology still served");

  // The federation returns (same address) with more entries: the site catches up.
  coord.append({
    index: 3,
    upserts: [net("33333333-3333-4333-8333-333333333333", "green", 0x100003)],
    deletes: [],
  });
  await coord.start();
  await until("caught up", () => ctl.applier.appliedIndex === 3, 15_000);
  await until("new bridge at the agent", () => agent.bridges().length === 2);
  assert.equal(ctl.status().federationConnected, true);
  assert.equal(ctl.status().stalenessMs, 0);
});

test("two replicas: the standby takes over when the active one dies and continues from its index", async (t) => {
  if (skip) return t.skip(skip);
  const coord = new FakeCoordinator();
  coord.append({
    index: 1,
    upserts: [net("11111111-1111-4111-8111-111111111111", "blue", 0x100001)],
    deletes: [],
  });
  await coord.start();
  t.after(() => coord.stop());
  const url = await pgs!.createDatabase();
  const start = (id: string) =>
    SiteController.start({
      site: "a",
      controllerId: id,
      dbUrl: url,
      federation: [coord.address],
      listen: "127.0.0.1:0",
      log: silentLogger(),
      tuning: FAST,
    });
  const one = await start("one");
  const two = await start("two");
  t.after(async () => {
    await one.stop();
    await two.stop();
  });
  const active = await until("one replica active", () => [one, two].find((c) => c.lease.active));
  const standby = active === one ? two : one;
  await until("applied", () => active.applier.appliedIndex === 1);
  assert.equal(standby.lease.active, false);
  // An agent of the standby sees the active replica's writes (shared change log).
  const admin = (await standby.tokens.issue("admin", "admin", 600)).token;
  const agent = agentWatch(standby.address, admin);
  t.after(() => agent.close());
  await until("standby's agent sees the bridge", () => agent.bridges().length === 1);

  // The active replica dies without releasing its lease.
  await active.lease.stop(false);
  await active.stop();
  const t0 = Date.now();
  await until("standby took over", () => standby.lease.active, 10_000);
  assert.ok(Date.now() - t0 < 5_000, "took over within a few seconds");
  coord.append({
    index: 2,
    upserts: [net("22222222-2222-4222-8222-222222222222", "red", 0x100002)],
    deletes: [],
  });
  await until("new active applies the next entry", () => standby.applier.appliedIndex === 2);
  await until("agent sees it", () => agent.bridges().length === 2);
});
