// Upgrading a site from translation version 2 (a security group's address group listing every
// member's addresses) to the member objects of version 3: the controller rewrites the stored
// topology once, when it becomes active, and agents get the difference as one revision.
import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { postgresForTests } from "./db/postgres-for-tests.js";
import { controllerFixture, dumpState } from "./test-support/controller-fixture.js";
import { writeTopologyChange } from "./topology-store.js";
import { securityGroupAddrGroupId, securityGroupMemberId } from "./translate/index.js";
import * as b from "./translate/intent-builders.js";
import { TRANSLATION_VERSION } from "./translator.js";

const pg = postgresForTests();
const K = topologypb.TopologyKind;

test("a site translated at version 2 gets its address groups' members at activation, in one revision", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  assert.equal(TRANSLATION_VERSION, 3);
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
  assert.deepEqual((await f.db.pool.query("SELECT version FROM translation_state")).rows, [{ version: "3" }]);
  assert.equal(await f.applier.reconcileTranslation(), 0, "once moved, a restart re-derives nothing");
});
