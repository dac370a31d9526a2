import assert from "node:assert/strict";
import { test } from "node:test";
import { credentials, type Metadata, status } from "@grpc/grpc-js";
import { intentpb, silentLogger, sitepb, topologypb } from "@isthmus/schema";
import { HostHeartbeat } from "../agent/host-registration.js";
import { postgresForTests } from "./db/postgres-for-tests.js";
import { bearer } from "./host-token.js";
import { SiteController } from "./site-controller.js";
import { FakeCoordinator } from "./test-support/fake-coordinator.js";

const pg = postgresForTests();

const FAST = {
  leaseTtlMs: 1_500,
  leaseRenewMs: 300,
  feedPollMs: 30,
  backoffInitialMs: 50,
  backoffMaxMs: 300,
  ackEveryMs: 50,
  reportBatchMs: 30,
  reportHealthEveryMs: 200,
};
// A single replica has nobody to hand over to: a lease long enough that an event loop stalled by
// a loaded machine does not lapse it (which would answer writes with "standby" for a moment).
const SOLO = { ...FAST, leaseTtlMs: 10_000, leaseRenewMs: 500 };

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
    hosts: () => [...state.values()].filter((o) => o.host).map((o) => o.host!),
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
  if (pg.skip) return t.skip(pg.skip);
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
  const url = await pg.createDatabase();
  const ctl = await SiteController.start({
    site: "a",
    controllerId: "ctl-1",
    dbUrl: url,
    federation: [coord.address],
    listen: "127.0.0.1:0",
    log: silentLogger(),
    tuning: SOLO,
  });
  t.after(async () => {
    await ctl.stop();
    await coord.stop();
  });
  await until("intent applied", () => ctl.applier.appliedIndex === 2);
  await until("acked upward", () => coord.acks.includes(2));
  // Each applied entry's times at the site, in order (the metrics port serves them).
  const timed = ctl.entryTimings();
  assert.deepEqual(
    timed.map((e) => e.index),
    [1, 2],
  );
  for (const e of timed) {
    const times = [e.receivedAt, e.startedAt, e.translatedAt, e.writtenAt, e.committedAt];
    assert.deepEqual(
      times,
      [...times].sort((x, y) => x - y),
      `entry ${e.index}: times in order`,
    );
    assert.ok(Math.abs(e.committedAt - Date.now()) < 60_000, "Unix ms");
  }
  assert.ok(timed[0]!.revision > 0, "the bridge's revision");
  assert.deepEqual(
    ctl.entryTimings(1).map((e) => e.index),
    [2],
  );

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
  // Every report carries the site's health; with nothing else to say, health-only reports go on.
  const health = coord.reports.at(-1)!.health!;
  assert.equal(health.controller, "ctl-1");
  assert.equal(health.databaseOk, true);
  assert.equal(health.hostsTotal, 1);
  assert.equal(health.hostsAlive, 1);
  assert.equal(health.appliedIndex, 2);
  assert.equal(health.stalenessMs, 0);
  assert.ok(health.topologyRevision > 0);
  assert.match(health.detail, /following the federation/);
  const reportsSoFar = coord.reports.length;
  await until("health-only reports keep coming", () =>
    coord.reports
      .slice(reportsSoFar)
      .some((r) => !r.full && r.ports.length === 0 && r.health?.hostsTotal === 1),
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

test("a large snapshot applied is followed by a vacuum of the tables it rewrote; a small one, or with the bound 0, is not", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const objects = [0, 1, 2].map((i) => net(`3333333${i}-3333-4333-8333-333333333333`, `n${i}`, 0x100010 + i));
  for (const [bound, vacuums] of [
    [3, 1],
    [4, 0],
    [0, 0],
  ] as const) {
    const coord = new FakeCoordinator();
    coord.snapshot = { index: 5, objects };
    await coord.start();
    const url = await pg.createDatabase();
    const ctl = await SiteController.start({
      site: "a",
      controllerId: "ctl-v",
      dbUrl: url,
      federation: [coord.address],
      listen: "127.0.0.1:0",
      log: silentLogger(),
      tuning: { ...SOLO, vacuumAfterSnapshotObjects: bound },
    });
    try {
      await until("the snapshot applied", () => ctl.applier.appliedIndex === 5);
      if (vacuums > 0) await until("the vacuum after it", () => ctl.vacuumsAfterSnapshot === vacuums);
      else await new Promise((r) => setTimeout(r, 300));
      assert.equal(ctl.vacuumsAfterSnapshot, vacuums, `bound ${bound}`);
    } finally {
      await ctl.stop();
      await coord.stop();
    }
  }
});

test("two replicas: the standby takes over when the active one dies and continues from its index", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const coord = new FakeCoordinator();
  coord.append({
    index: 1,
    upserts: [net("11111111-1111-4111-8111-111111111111", "blue", 0x100001)],
    deletes: [],
  });
  await coord.start();
  t.after(() => coord.stop());
  const url = await pg.createDatabase();
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

  // The standby serves lists from the shared database; writes stay with the active replica.
  // (On a loaded machine the lease may change hands meanwhile: writes go to whichever replica is
  // active at the time, lists to either.)
  const apis = new Map(
    [one, two].map((c) => [c, new sitepb.SiteServiceClient(c.address, credentials.createInsecure())]),
  );
  t.after(() => {
    for (const api of apis.values()) api.close();
  });
  const standbyApi = apis.get(standby)!;
  const onActive = async <T>(f: (api: sitepb.SiteServiceClient) => Promise<T>): Promise<T> => {
    for (const end = Date.now() + 15_000; ; ) {
      const c = [one, two].find((x) => x.lease.active);
      if (c) {
        try {
          return await f(apis.get(c)!);
        } catch (e) {
          if ((e as { code?: number }).code !== status.UNAVAILABLE || Date.now() > end) throw e;
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const reg = await onActive((api) =>
    unary<sitepb.RegisterHostRequest, sitepb.RegisterHostResponse>(
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
    ),
  );
  const created = await onActive((api) =>
    unary<sitepb.CreatePortRequest, sitepb.PortResponse>(
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
    ),
  );
  const standbyPorts = await unary<sitepb.ListPortsRequest, sitepb.ListPortsResponse>(
    standbyApi.listPorts.bind(standbyApi),
    { hostId: reg.host!.id, networkId: "" },
    bearer(reg.hostToken),
  );
  assert.deepEqual(
    standbyPorts.ports.map((p) => [p.id, p.name, p.tunnelKey, p.hostId]),
    [[created.port!.id, "vm1", created.port!.tunnelKey, reg.host!.id]],
  );
  const filtered = await unary<sitepb.ListPortsRequest, sitepb.ListPortsResponse>(
    standbyApi.listPorts.bind(standbyApi),
    { hostId: "", networkId: "no-such-network" },
    bearer(admin),
  );
  assert.deepEqual(filtered.ports, [], "filters apply on the standby too");
  const standbyHosts = await unary<sitepb.ListHostsRequest, sitepb.ListHostsResponse>(
    standbyApi.listHosts.bind(standbyApi),
    {},
    bearer(admin),
  );
  assert.deepEqual(
    standbyHosts.hosts.map((h) => [h.id, h.name, h.tunnelIp]),
    [[reg.host!.id, "h1", "192.0.2.10"]],
  );
  const beat = await unary<sitepb.HeartbeatRequest, sitepb.HeartbeatResponse>(
    standbyApi.heartbeat.bind(standbyApi),
    { hostId: reg.host!.id },
    bearer(reg.hostToken),
  );
  assert.ok(beat.intervalMs > 0, "the standby records heartbeats too (shared database)");
  // Whichever replica is standby at the moment refuses a write, naming why.
  let refusal: { code: number; details: string } | undefined;
  for (let attempt = 0; attempt < 20 && !refusal; attempt++) {
    const c = [one, two].find((x) => !x.lease.active);
    if (!c) continue;
    const api = apis.get(c)!;
    await unary(
      api.createPort.bind(api),
      sitepb.CreatePortRequest.fromPartial({
        name: `vm-x${attempt}`,
        networkId: "n",
        mac: "02:00:00:00:00:02",
      }),
      bearer(admin),
    ).then(
      () => undefined, // the lease moved between the look and the call: try again
      (e: { code: number; details: string }) => {
        refusal = e;
      },
    );
  }
  assert.equal(refusal?.code, status.UNAVAILABLE);
  assert.match(refusal!.details, /standby/);

  // The standby's first attempt to take over fails (its reload of the database breaks once): it
  // tries again while it holds the lease, rather than staying a lease holder that never writes.
  const load = standby.applier.load.bind(standby.applier);
  let failedLoads = 0;
  standby.applier.load = async () => {
    if (failedLoads++ === 0) throw new Error("connection terminated (injected)");
    return load();
  };
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
  assert.ok(failedLoads >= 2, "the failed take-over was tried again");
  await until("agent sees it", () => agent.bridges().length === 2);
});

test("a host whose agent stops heartbeating is marked not alive (its uplinks move); heartbeats bring it back", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const coord = new FakeCoordinator();
  coord.append({
    index: 1,
    upserts: [net("11111111-1111-4111-8111-111111111111", "blue", 0x100001)],
    deletes: [],
  });
  await coord.start();
  const ctl = await SiteController.start({
    site: "a",
    controllerId: "ctl-1",
    dbUrl: await pg.createDatabase(),
    federation: [coord.address],
    listen: "127.0.0.1:0",
    log: silentLogger(),
    // Heartbeats every 5 s / 3: on a loaded 2-core machine one beat's round trip (a new
    // connection, a database transaction) takes seconds, so a shorter timeout marks live hosts down.
    tuning: { ...SOLO, hostDeadAfterMs: 5_000, hostCheckMs: 50 },
  });
  const beats = new Map<string, HostHeartbeat>();
  t.after(async () => {
    for (const b of beats.values()) b.stop();
    await ctl.stop();
    await coord.stop();
  });
  // Applying intent starts once the replica is active and accepts writes.
  await until("active and following", () => ctl.applier.appliedIndex === 1);
  const admin = (await ctl.tokens.issue("admin", "admin", 600)).token;
  const api = new sitepb.SiteServiceClient(ctl.address, credentials.createInsecure());
  t.after(() => api.close());
  const startBeating = (g: { id: string; token: string }) => {
    const b = new HostHeartbeat({
      controller: ctl.address,
      hostId: g.id,
      token: () => g.token,
      log: silentLogger(),
    });
    beats.set(g.id, b);
    b.start();
  };
  // Each gateway's agent heartbeats as soon as it is registered (the timeout runs from then).
  const gateways: { id: string; token: string }[] = [];
  for (const name of ["gw1", "gw2"]) {
    const reg = await unary<sitepb.RegisterHostRequest, sitepb.RegisterHostResponse>(
      api.registerHost.bind(api),
      {
        name,
        tunnelIp: "192.0.2.10",
        tunnelPort: 0,
        role: topologypb.HostRole.HOST_ROLE_GATEWAY,
        wanIp: "203.0.113.9",
        wanPort: 0,
      },
      bearer(admin),
    );
    gateways.push({ id: reg.host!.id, token: reg.hostToken });
    startBeating(gateways.at(-1)!);
  }
  const agent = agentWatch(ctl.address, admin);
  t.after(() => agent.close());
  const remotePort = () => agent.ports().find((p) => p.type === topologypb.PortType.PORT_TYPE_REMOTE_SITE);
  // Uplinks go to the alive gateway with the smallest id. The agent may first see the port on the
  // gateway registered first (before the second registration reached the feed): wait for the rule.
  const chosenId = gateways.map((g) => g.id).sort()[0]!;
  await until(
    "the remote-site port is bound to the smallest-id gateway",
    () => remotePort()?.hostId === chosenId,
  );
  const other = gateways.find((g) => g.id !== chosenId)!;
  const alive = (id: string) => agent.hosts().find((h) => h.id === id)?.alive;
  // Both heartbeat past the start-up grace and the timeout: five accepted beats, a third of the
  // timeout apart, span more than it. Neither is marked down.
  await until(
    "five heartbeats from each gateway",
    () => [...beats.values()].every((b) => b.sent >= 5),
    60_000,
  );
  assert.equal(alive(chosenId), true);
  assert.equal(alive(other.id), true);
  assert.equal(ctl.liveness.markedDown, 0, "heartbeating hosts are never marked down");

  // The chosen gateway's agent goes quiet: marked not alive through the change feed, and the
  // remote-site port moves to the other gateway.
  beats.get(chosenId)!.stop();
  await until("host marked not alive at the agent", () => alive(chosenId) === false, 30_000);
  await until("uplink side moved to the live gateway", () => remotePort()?.hostId === other.id);
  assert.equal(alive(other.id), true);
  const hosts = await unary<sitepb.ListHostsRequest, sitepb.ListHostsResponse>(
    api.listHosts.bind(api),
    {},
    bearer(admin),
  );
  assert.deepEqual(
    hosts.hosts.map((h) => [h.id, h.alive]).sort(),
    [
      [chosenId, false],
      [other.id, true],
    ].sort(),
  );
  assert.equal(ctl.status().hostsAlive, 1);
  assert.equal(ctl.status().hosts, 2);

  // Heartbeats return: alive again, and the choice goes back to the smaller id.
  startBeating(gateways.find((g) => g.id === chosenId)!);
  await until("host alive again at the agent", () => alive(chosenId) === true, 30_000);
  await until("remote-site port back on the first choice", () => remotePort()?.hostId === chosenId);
  assert.equal(ctl.liveness.markedUp, 1);

  // Refusals: an unknown host, and a host heartbeating for another.
  await assert.rejects(
    unary(api.heartbeat.bind(api), { hostId: "no-such-host" }, bearer(admin)),
    (e: { code: number; details: string }) => e.code === status.NOT_FOUND && /not registered/.test(e.details),
  );
  await assert.rejects(
    unary(api.heartbeat.bind(api), { hostId: chosenId }, bearer(other.token)),
    (e: { code: number }) => e.code === status.PERMISSION_DENIED,
  );
  const ok = await unary<sitepb.HeartbeatRequest, sitepb.HeartbeatResponse>(
    api.heartbeat.bind(api),
    { hostId: other.id },
    bearer(other.token),
  );
  assert.equal(ok.deadAfterMs, 5_000);
  assert.equal(ok.intervalMs, 1_666);
});
