// Upgrading a site from an older translation: from version 2 (a security group's address group
// listing every member's addresses) to the member objects of version 3, and from version 3 (a MAC
// and an ARP entry repeating each local VM port's MAC and addresses) to version 4. The controller
// rewrites the stored topology once, when it becomes active, and agents get the difference as one
// revision.
import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { postgresForTests } from "./db/postgres-for-tests.js";
import { controllerFixture, dumpState, vmPortInput } from "./test-support/controller-fixture.js";
import { writeTopologyChange } from "./topology-store.js";
import { derivedId, securityGroupAddrGroupId, securityGroupMemberId } from "./translate/index.js";
import * as b from "./translate/intent-builders.js";
import { TRANSLATION_VERSION } from "./translator.js";

const pg = postgresForTests();
const K = topologypb.TopologyKind;

test("a site translated at version 2 gets its address groups' members at activation, in one revision", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const f = await controllerFixture(await pg.createDatabase());
  t.after(() => f.close());
  const records = [1, 2, 3].map((n) =>
    b.portRecord(`p${n}`, {
      site: "b",
      network: "n",
      mac: `02:00:00:00:00:0${n}`,
      ips: [`10.0.0.${n}`],
      groups: ["g"],
    }),
  );
  await f.applier.applyChange({
    index: 1,
    upserts: [b.network("n", { sites: ["a", "b"] }), b.securityGroup("g"), ...records],
    deletes: [],
  });
  assert.equal(await f.applier.reconcileTranslation(), 0, "a fresh database is already at this version");
  const clean = await dumpState(f.db);
  const groupId = securityGroupAddrGroupId(b.id("g"));
  const members = [1, 2, 3].map((n) => securityGroupMemberId(b.id("g"), b.id(`p${n}`)));
  // The database as version 2 left it: the group holding every address, no member objects.
  await f.db.tx("v2", async (tx) => {
    await writeTopologyChange(
      tx,
      {
        upserts: [
          { ipAddrGroup: { id: groupId, name: "sg-g", addresses: ["10.0.0.1", "10.0.0.2", "10.0.0.3"] } },
        ],
        deletes: members.map((id) => ({ kind: K.TOPOLOGY_KIND_IP_ADDR_GROUP_MEMBER, id })),
      },
      "intent",
      f.ctx.changeLog,
    );
    await tx.query("UPDATE translation_state SET version = 2");
  });
  const stored = async (kind: number) =>
    (await f.db.pool.query("SELECT id FROM topology_objects WHERE kind = $1 ORDER BY id", [kind])).rows.map(
      (r) => r.id as string,
    );
  assert.deepEqual(await stored(K.TOPOLOGY_KIND_IP_ADDR_GROUP_MEMBER), []);
  const revisions = f.committed.length;
  // The group rewritten (no addresses of its own) and its three members: four objects, one revision.
  assert.equal(await f.applier.reconcileTranslation(), 4);
  assert.equal(f.committed.length, revisions + 1);
  assert.deepEqual(await stored(K.TOPOLOGY_KIND_IP_ADDR_GROUP_MEMBER), [...members].sort());
  assert.deepEqual(await dumpState(f.db), clean);
  assert.deepEqual((await f.db.pool.query("SELECT version FROM translation_state")).rows, [
    { version: String(TRANSLATION_VERSION) },
  ]);
  assert.equal(await f.applier.reconcileTranslation(), 0, "once moved, a restart re-derives nothing");
});

test("a site translated at version 3 loses its local ports' MAC and ARP entries at activation, in one revision", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  assert.equal(TRANSLATION_VERSION, 4);
  const f = await controllerFixture(await pg.createDatabase());
  t.after(() => f.close());
  await f.applier.applyChange({ index: 1, upserts: [b.network("n", { sites: ["a"] })], deletes: [] });
  const ports = [];
  for (const n of [1, 2])
    ports.push(await f.local.createPort(vmPortInput(n, b.id("n"), [`10.0.0.${n}`, `fd00::${n}`])));
  const stored = async (kind: number) =>
    (await f.db.pool.query("SELECT id FROM topology_objects WHERE kind = $1 ORDER BY id", [kind])).rows.map(
      (r) => r.id as string,
    );
  assert.deepEqual(await stored(K.TOPOLOGY_KIND_MAC_ENTRY), [], "version 4 writes none for local ports");
  assert.deepEqual(await stored(K.TOPOLOGY_KIND_ARP_ENTRY), []);
  const clean = await dumpState(f.db);
  // The database as version 3 left it: one MAC entry and an ARP entry per address for each port.
  const old: topologypb.TopologyObject[] = ports.flatMap((p, i) => [
    {
      macEntry: { id: derivedId(p.id, "mac-entry"), bridgeId: b.id("n"), mac: p.mac, portId: p.id, vlan: 0 },
    },
    ...[`10.0.0.${i + 1}`, `fd00::${i + 1}`].map((ip) => ({
      arpEntry: { id: derivedId(p.id, `arp/${ip}`), bridgeId: b.id("n"), ip, mac: p.mac },
    })),
  ]);
  await f.db.tx("v3", async (tx) => {
    await writeTopologyChange(tx, { upserts: old, deletes: [] }, "intent", f.ctx.changeLog);
    await tx.query("UPDATE translation_state SET version = 3");
  });
  assert.equal((await stored(K.TOPOLOGY_KIND_ARP_ENTRY)).length, 4);
  const revisions = f.committed.length;
  // Six objects deleted, nothing else touched, in one revision.
  assert.equal(await f.applier.reconcileTranslation(), 6);
  assert.equal(f.committed.length, revisions + 1);
  assert.deepEqual(await stored(K.TOPOLOGY_KIND_MAC_ENTRY), []);
  assert.deepEqual(await stored(K.TOPOLOGY_KIND_ARP_ENTRY), []);
  assert.deepEqual(await dumpState(f.db), clean);
  assert.equal(await f.applier.reconcileTranslation(), 0, "once moved, a restart re-derives nothing");
});
