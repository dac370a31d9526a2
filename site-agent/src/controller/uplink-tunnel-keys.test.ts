import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import type { Database } from "./db/database.js";
import { postgresForTests } from "./db/postgres-for-tests.js";
import { decodeTopology } from "./objects.js";
import { controllerFixture, type Fixture } from "./test-support/controller-fixture.js";
import { uplinkPortId } from "./translate/index.js";
import { id, network, remove, router, upsert } from "./translate/intent-builders.js";

const pg = postgresForTests();

const UPLINK_A = { site: "a", ipCidr: "198.51.100.2/24", gatewayIp: "198.51.100.1", snat: true };
const R1_UPLINK = uplinkPortId(id("r1"), "a");
const R2_UPLINK = uplinkPortId(id("r2"), "a");

/** The stored uplink port's key (undefined = no such port in the site topology). */
async function storedKey(db: Database, portId: string): Promise<number | undefined> {
  const r = await db.pool.query("SELECT body FROM topology_objects WHERE kind = $1 AND id = $2", [
    topologypb.TopologyKind.TOPOLOGY_KIND_PORT,
    portId,
  ]);
  if (!r.rows[0]) return undefined;
  const port = decodeTopology(r.rows[0].body as Buffer).port!;
  assert.equal(port.type, topologypb.PortType.PORT_TYPE_ROUTER_UPLINK);
  return port.tunnelKey;
}

/** tunnel_keys as port id → key; also checks no key is held twice. */
async function keyTable(db: Database): Promise<Map<string, number>> {
  const r = await db.pool.query("SELECT tunnel_key, port_id FROM tunnel_keys");
  const m = new Map<string, number>(r.rows.map((row) => [row.port_id as string, Number(row.tunnel_key)]));
  assert.equal(new Set(m.values()).size, m.size, "no site-local key is held by two ports");
  return m;
}

let vmPorts = 0;
async function vmPort(f: Fixture): Promise<number> {
  vmPorts++;
  const p = await f.local.createPort({
    name: `vm-${vmPorts}`,
    networkId: id("n1"),
    hostId: "",
    interfaceName: "",
    mac: `02:00:00:00:00:${vmPorts.toString(16).padStart(2, "0")}`,
    ips: [`10.0.0.${vmPorts + 10}`],
    securityGroupIds: [],
  });
  assert.ok(p.tunnelKey >= 1 && p.tunnelKey <= 0x0fffff, `VM port key ${p.tunnelKey} is site-local`);
  return p.tunnelKey;
}

test("a router's uplink here gets a site-local key: kept across replay and restart, released with the uplink, never a VM port's", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const url = await pg.createDatabase();
  const f1 = await controllerFixture(url);
  let f2: Fixture | undefined;
  t.after(async () => {
    await f1.close().catch(() => undefined);
    await f2?.close();
  });
  const vmKeys = [await vmPort(f1)];
  const c1 = upsert(1, network("n1", { sites: ["a"] }), router("r1", { uplinks: [UPLINK_A] }));
  assert.equal(await f1.applier.applyChange(c1), "applied");
  const key = (await storedKey(f1.db, R1_UPLINK))!;
  assert.ok(key >= 1 && key <= 0x0fffff, `uplink key ${key} is in the site-local range`);
  assert.ok(!vmKeys.includes(key), "the uplink's key is not a VM port's");
  assert.equal(f1.ctx.index.tunnelKeyOf(R1_UPLINK), key);
  assert.equal((await keyTable(f1.db)).get(R1_UPLINK), key);

  // Replayed entry: skipped; a later change to the router keeps the key.
  assert.equal(await f1.applier.applyChange(c1), "skipped");
  const c2 = upsert(2, router("r1", { uplinks: [{ ...UPLINK_A, snat: false }] }));
  assert.equal(await f1.applier.applyChange(c2), "applied");
  assert.equal(await storedKey(f1.db, R1_UPLINK), key);
  vmKeys.push(await vmPort(f1));
  assert.ok(!vmKeys.includes(key), "VM ports created after the uplink do not get its key");

  // Restart: the key is reloaded from the stored uplink port and counted as used.
  await f1.close();
  f2 = await controllerFixture(url);
  assert.equal(f2.ctx.index.tunnelKeyOf(R1_UPLINK), key, "reloaded after a restart");
  for (let i = 0; i < 3; i++) vmKeys.push(await vmPort(f2));
  assert.ok(!vmKeys.includes(key), "after a restart VM ports still avoid the uplink's key");
  assert.equal(new Set(vmKeys).size, vmKeys.length);
  // The coordinator replays from the start: nothing moves.
  for (const c of [c1, c2]) assert.equal(await f2.applier.applyChange(c), "skipped");
  const c3 = upsert(3, router("r1", { uplinks: [{ ...UPLINK_A, gatewayIp: "198.51.100.254" }] }));
  assert.equal(await f2.applier.applyChange(c3), "applied");
  assert.equal(await storedKey(f2.db, R1_UPLINK), key, "unchanged while the uplink exists");

  // The uplink moves to another site: the port and its key go.
  const c4 = upsert(4, router("r1", { uplinks: [{ ...UPLINK_A, site: "b" }] }));
  assert.equal(await f2.applier.applyChange(c4), "applied");
  assert.equal(await storedKey(f2.db, R1_UPLINK), undefined);
  assert.equal(f2.ctx.index.tunnelKeyOf(R1_UPLINK), 0);
  assert.equal((await keyTable(f2.db)).has(R1_UPLINK), false, "released in the database");

  // Back here, and a router deleted: a fresh key, again distinct; deletion releases it.
  const c5 = upsert(5, router("r1", { uplinks: [UPLINK_A] }), router("r2", { uplinks: [UPLINK_A] }));
  assert.equal(await f2.applier.applyChange(c5), "applied");
  const k1 = (await storedKey(f2.db, R1_UPLINK))!;
  const k2 = (await storedKey(f2.db, R2_UPLINK))!;
  assert.ok(k1 > 0 && k2 > 0 && k1 !== k2);
  assert.ok(!vmKeys.includes(k1) && !vmKeys.includes(k2));
  assert.equal(await f2.applier.applyChange(remove(6, "router", "r2")), "applied");
  const table = await keyTable(f2.db);
  assert.equal(table.has(R2_UPLINK), false);
  assert.equal(table.get(R1_UPLINK), k1);
  assert.equal(table.size, vmKeys.length + 1, "every VM port and the one uplink hold a key");
});

test("a snapshot keeps the keys of uplinks that stay, allocates new ones, releases the rest", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const f = await controllerFixture(await pg.createDatabase());
  t.after(() => f.close());
  const n1 = network("n1", { sites: ["a"] });
  await f.applier.applyChange(upsert(1, n1, router("r1", { uplinks: [UPLINK_A] })));
  const k1 = (await storedKey(f.db, R1_UPLINK))!;
  assert.ok(k1 > 0);
  await f.applier.applySnapshot({
    index: 10,
    objects: [n1, router("r1", { uplinks: [UPLINK_A] }), router("r2", { uplinks: [UPLINK_A] })],
  });
  assert.equal(await storedKey(f.db, R1_UPLINK), k1, "an uplink that stays keeps its key");
  const k2 = (await storedKey(f.db, R2_UPLINK))!;
  assert.ok(k2 > 0 && k2 !== k1);
  assert.equal(f.ctx.index.tunnelKeyOf(R2_UPLINK), k2);
  await f.applier.applySnapshot({ index: 20, objects: [n1, router("r2", { uplinks: [UPLINK_A] })] });
  assert.equal(await storedKey(f.db, R1_UPLINK), undefined);
  assert.equal(f.ctx.index.tunnelKeyOf(R1_UPLINK), 0);
  assert.deepEqual([...(await keyTable(f.db))], [[R2_UPLINK, k2]]);
});

test("with every key taken the uplink has key 0 and a problem; a later start with free keys assigns one", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const url = await pg.createDatabase();
  const full = await controllerFixture(url, { keyRange: { min: 1, max: 1 } });
  const problems: string[] = [];
  full.ctx.onProblems = (p) => problems.push(...p);
  const vmKey = await vmPort(full);
  assert.equal(vmKey, 1);
  await full.applier.applyChange(
    upsert(1, network("n1", { sites: ["a"] }), router("r1", { uplinks: [UPLINK_A] })),
  );
  assert.equal(await storedKey(full.db, R1_UPLINK), 0, "no key rather than a shared one");
  assert.match(problems.join("\n"), /site-local tunnel keys are in use/);
  await full.close();

  const f = await controllerFixture(url);
  t.after(() => f.close());
  assert.equal(await f.applier.assignMissingUplinkKeys(), 1);
  const key = (await storedKey(f.db, R1_UPLINK))!;
  assert.ok(key > 1, `assigned ${key}, not the VM port's key 1`);
  assert.equal((await keyTable(f.db)).get(R1_UPLINK), key);
  assert.equal(await f.applier.assignMissingUplinkKeys(), 0, "nothing left to assign");
});
