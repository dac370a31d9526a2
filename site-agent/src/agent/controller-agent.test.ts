// The agent against a real site controller (PostgreSQL): its host token is renewed before it
// expires and the agent keeps watching across the expiry and a controller restart; SNAT port
// blocks come from the controller's leases, so two hosts never allocate the same port, and a block
// the controller reports lost is withdrawn from the allocator.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { credentials, status } from "@grpc/grpc-js";
import { silentLogger, sitepb, topologypb } from "@isthmus/schema";
import { postgresForTests } from "../controller/db/postgres-for-tests.js";
import { bearer } from "../controller/host-token.js";
import { SiteController, type SiteControllerOptions } from "../controller/site-controller.js";
import { NatPortAllocator } from "../sim/index.js";
import { startAgent } from "./agent-process.js";
import { registerHost } from "./host-registration.js";
import { tokenExpiry } from "./host-token-refresh.js";
import { MemoryPort } from "./memory-port.js";
import { SiteNatLeases } from "./snat-lease-client.js";
import { FakeSimulator } from "./testing/fake-simulator.js";

const pg = postgresForTests();
const dir = mkdtempSync(join(tmpdir(), "isthmus-agent-ctl-"));
after(() => rmSync(dir, { recursive: true, force: true }));

async function until<T>(what: string, f: () => T | undefined | false, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function startController(o: SiteControllerOptions): Promise<SiteController> {
  const c = await SiteController.start(o);
  await until("the controller holds the lease", () => c.lease.active);
  return c;
}

async function retryUnavailable<T>(f: () => Promise<T>, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await f();
    } catch (err) {
      if ((err as { code?: number }).code !== status.UNAVAILABLE || Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function controllerOptions(dbUrl: string, listen: string, hostTokenTtlSec: number): SiteControllerOptions {
  return {
    site: "a",
    controllerId: "ctl-1",
    dbUrl,
    federation: [],
    listen,
    log: silentLogger(),
    tuning: { leaseTtlMs: 10_000, leaseRenewMs: 500, feedPollMs: 30, hostTokenTtlSec },
  };
}

function site(address: string) {
  const client = new sitepb.SiteServiceClient(address, credentials.createInsecure());
  const call =
    <Req, Res>(
      fn: (
        req: Req,
        md: ReturnType<typeof bearer>,
        cb: (e: (Error & { code?: number }) | null, r: Res) => void,
      ) => unknown,
    ) =>
    (req: Req, token: string): Promise<Res> =>
      new Promise((resolve, reject) =>
        fn.call(client, req, bearer(token), (e, r) => (e ? reject(e) : resolve(r))),
      );
  return {
    registerHost: call<sitepb.RegisterHostRequest, sitepb.RegisterHostResponse>(client.registerHost),
    listHosts: call<sitepb.ListHostsRequest, sitepb.ListHostsResponse>(client.listHosts),
    close: () => client.close(),
  };
}

test("the agent renews its host token before expiry and keeps watching across the expiry and a controller restart", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const dbUrl = await pg.createDatabase();
  let ctl = await startController(controllerOptions(dbUrl, "127.0.0.1:0", 4));
  const address = ctl.address;
  t.after(() => ctl.stop());
  const admin = (await ctl.tokens.issue("admin", "admin", 600)).token;
  const adminTokenFile = join(dir, "admin.token");
  writeFileSync(adminTokenFile, `${admin}\n`);
  const tokenFile = join(dir, "host.token");
  const running = await startAgent(
    {
      name: "edge-1",
      adminTokenFile,
      tokenFile,
      controller: address,
      tunnelIp: "127.0.0.1",
      tunnelPort: 0,
      metricsListen: "127.0.0.1:0",
      adminListen: "127.0.0.1:0",
    },
    { log: silentLogger(), openPort: (n) => new MemoryPort(n), simulator: new FakeSimulator() },
  );
  t.after(() => running.stop());
  await until("the first snapshot", () => running.agent.store.ready);
  const first = readFileSync(tokenFile, "utf8").trim();
  const firstExpiry = tokenExpiry(first)!;
  assert.ok(firstExpiry - Date.now() <= 4_500, "a short-lived token");
  assert.ok(running.hostToken, "a JWT host token is renewed");

  await until("a renewal", () => running.hostToken!.renewals >= 1);
  const renewed = readFileSync(tokenFile, "utf8").trim();
  assert.notEqual(renewed, first, "the token file holds the renewed token");
  assert.ok(tokenExpiry(renewed)! > firstExpiry);
  assert.ok(Date.now() < firstExpiry, "renewed before the first token expired");

  // Past the first token's expiry: the controller refuses it, the agent is still fine.
  await until("the first token expired", () => Date.now() > firstExpiry + 300, 10_000);
  const api = site(address);
  t.after(() => api.close());
  await assert.rejects(api.listHosts({}, first), (e: { code?: number }) => e.code === status.UNAUTHENTICATED);
  assert.equal(running.hostToken!.lastError, "");

  // A controller restart makes the agent reconnect: only a current token gets it back in.
  await ctl.stop();
  ctl = await startController(controllerOptions(dbUrl, address, 4));
  // The shared channel to this address backs off after the stop; wait for it to come back.
  const reg = await retryUnavailable(() =>
    api.registerHost(
      {
        name: "edge-2",
        tunnelIp: "127.0.0.2",
        tunnelPort: 4789,
        role: topologypb.HostRole.HOST_ROLE_HOST,
        wanIp: "",
        wanPort: 0,
      },
      admin,
    ),
  );
  assert.ok(reg.host);
  const revision = (await ctl.db.pool.query("SELECT revision FROM topology_revision")).rows[0]!.revision;
  await until(
    "the agent watching the restarted controller sees the new host's revision",
    () => running.agent.store.revision >= Number(revision),
  );
  assert.ok(running.hostToken!.renewals >= 2, `renewals: ${running.hostToken!.renewals}`);
});

test("SNAT port blocks come from the controller: two hosts never allocate the same port, and stop releases them", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const ctl = await startController(controllerOptions(await pg.createDatabase(), "127.0.0.1:0", 600));
  t.after(() => ctl.stop());
  const admin = (await ctl.tokens.issue("admin", "admin", 600)).token;
  const api = site(ctl.address);
  t.after(() => api.close());
  const router = "0b6f3c1e-2a4d-4c5e-8f70-9a1b2c3d4e5f";
  const natIp = (192 << 24) | (0 << 16) | (2 << 8) | 50;
  const hosts = await Promise.all(
    ["h1", "h2"].map(async (name, i) => {
      // The lease is held before the writer is set up: wait out UNAVAILABLE as an operator would.
      const r = await retryUnavailable(() =>
        api.registerHost(
          {
            name,
            tunnelIp: `127.0.0.${i + 2}`,
            tunnelPort: 4789,
            role: topologypb.HostRole.HOST_ROLE_HOST,
            wanIp: "",
            wanPort: 0,
          },
          admin,
        ),
      );
      const leases = new SiteNatLeases({
        controller: ctl.address,
        token: () => r.hostToken,
        log: silentLogger(),
      });
      return { id: r.host!.id, leases, alloc: new NatPortAllocator(leases), ports: new Set<number>() };
    }),
  );
  // The first connection finds no block yet (that packet is dropped); one arrives in the background.
  for (const h of hosts) assert.equal(h.alloc.allocate(router, natIp, 1024, 65535, 7, 0), -1);
  for (const h of hosts) await h.leases.settled();
  // 150 connections each (more than two 64-port blocks), interleaved.
  for (let i = 0; i < 150; i++) {
    for (const h of hosts) {
      let p = h.alloc.allocate(router, natIp, 1024, 65535, i * 7919, 0);
      for (let tries = 0; p < 0 && tries < 100; tries++) {
        await h.leases.settled();
        await new Promise((r) => setTimeout(r, 10));
        p = h.alloc.allocate(router, natIp, 1024, 65535, i * 7919, 0);
      }
      assert.ok(p >= 1024, `host ${h.id} got a port`);
      assert.ok(!h.ports.has(p), "a host never hands out one port twice");
      h.ports.add(p);
    }
  }
  const [a, b] = hosts as [(typeof hosts)[0], (typeof hosts)[0]];
  // A spare block may still be on its way (granted in the database, not yet held): let it land.
  for (const h of hosts) await h.leases.settled();
  const overlap = [...a.ports].filter((p) => b.ports.has(p));
  assert.deepEqual(overlap, [], "no port allocated by both hosts");
  const blocksA = new Set(a.leases.held().map((x) => x.start));
  for (const x of b.leases.held()) assert.ok(!blocksA.has(x.start), `block ${x.start} held by both hosts`);
  assert.ok(a.leases.held().length >= 3, "several blocks leased");
  const rows = async (hostId: string) =>
    Number(
      (
        await ctl.db.pool.query("SELECT count(*)::INT8 AS n FROM snat_block_leases WHERE host_id = $1", [
          hostId,
        ])
      ).rows[0]!.n,
    );
  assert.equal(await rows(a.id), a.leases.held().length, "the site database records each host's blocks");
  await a.leases.renewAll();
  assert.equal(a.leases.stats.lost, 0);
  assert.ok(a.leases.stats.renewed >= 3);
  // Another host took over a block A's allocator uses (A's lease had expired): A's next renewal
  // learns it lost the block, and the allocator withdraws it so no port of it is handed out again.
  a.alloc.takeWithdrawn();
  const taken = a.alloc.heldBlocks()[0]!;
  await ctl.db.pool.query(
    "UPDATE snat_block_leases SET host_id = 'another-host' WHERE host_id = $1 AND block_start = $2",
    [a.id, taken.start],
  );
  await a.leases.renewAll();
  assert.equal(a.leases.stats.lost, 1);
  assert.deepEqual(
    a.alloc.takeWithdrawn().map((x) => x.start),
    [taken.start],
  );
  assert.ok(!a.alloc.heldBlocks().some((x) => x.start === taken.start), "the allocator no longer holds it");
  for (let i = 0; i < 64; i++) {
    const p = a.alloc.allocate(router, natIp, 1024, 65535, i, 0);
    assert.ok(p < taken.start || p >= taken.start + taken.size, `port ${p} is not from the lost block`);
  }
  for (const h of hosts) await h.leases.stop();
  assert.equal(await rows(a.id), 0, "stopping released every block");
  assert.equal(await rows(b.id), 0);
});

test("a gateway agent registers its WAN endpoint (--wan-ip, or its tunnel address by default); a host sends none", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const ctl = await startController(controllerOptions(await pg.createDatabase(), "127.0.0.1:0", 600));
  t.after(() => ctl.stop());
  const admin = (await ctl.tokens.issue("admin", "admin", 600)).token;
  const common = {
    controller: ctl.address,
    adminToken: admin,
    tunnelPort: 4789,
    log: silentLogger(),
    timeoutMs: 15_000,
  };
  const gw = await registerHost({
    ...common,
    name: "gw-1",
    tunnelIp: "127.0.0.31",
    role: "gateway",
    wanIp: "198.51.100.7",
    wanPort: 4790,
  });
  assert.equal(gw.host.wanIp, "198.51.100.7");
  assert.equal(gw.host.wanPort, 4790);
  const h = await registerHost({
    ...common,
    name: "h-1",
    tunnelIp: "127.0.0.32",
    role: "host",
    wanIp: "198.51.100.8",
  });
  assert.equal(h.host.wanIp, "", "a host has no WAN endpoint");
  const api = site(ctl.address);
  t.after(() => api.close());
  const hosts = (await api.listHosts({}, admin)).hosts;
  assert.equal(hosts.find((x) => x.name === "gw-1")?.wanIp, "198.51.100.7");
  // Through the agent's own config: a gateway without --wan-ip announces its tunnel address.
  const adminTokenFile = join(dir, "admin-wan.token");
  writeFileSync(adminTokenFile, `${admin}\n`);
  const agent = await startAgent(
    {
      name: "gw-2",
      adminTokenFile,
      controller: ctl.address,
      tokenFile: join(dir, "gw-2.token"),
      tunnelIp: "127.0.0.33",
      tunnelPort: 0,
      role: "gateway",
      metricsListen: "127.0.0.1:0",
      adminListen: "127.0.0.1:0",
    },
    { log: silentLogger(), simulator: new FakeSimulator(), openPort: (name: string) => new MemoryPort(name) },
  );
  t.after(() => agent.stop());
  const gw2 = (await api.listHosts({}, admin)).hosts.find((x) => x.name === "gw-2");
  assert.equal(gw2?.wanIp, "127.0.0.33");
});
