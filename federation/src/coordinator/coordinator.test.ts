import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { credentials, ServerCredentials, type ServiceError, status } from "@grpc/grpc-js";
import { fixedPort, intentpb, silentLogger, type sitesyncpb } from "@isthmus/schema";
import { call, fakeAuth, fakeIssuer, md } from "../api/test-support.js";
import { FederationClient, loadClientConfig } from "../cli/connection.js";
import { Coordinator } from "./coordinator.js";

async function until<T>(
  what: string,
  f: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await f();
    if (v !== undefined && v !== false) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const meta = (name: string): intentpb.ObjectMeta => ({
  id: "",
  name,
  revision: 0,
  description: "",
  labels: {},
  createdRevision: 0,
});

interface Group {
  nodes: Map<string, Coordinator>;
  peers: Record<string, string>;
  dirs: string[];
  start(id: string, join?: boolean): Promise<Coordinator>;
  leader(): Promise<Coordinator>;
  close(): Promise<void>;
}

async function startGroup(ids: string[]): Promise<Group> {
  const peers: Record<string, string> = {};
  for (const id of ids) peers[id] = `127.0.0.1:${await fixedPort()}`;
  const base = mkdtempSync(join(tmpdir(), "isthmus-coord-"));
  const nodes = new Map<string, Coordinator>();
  const g: Group = {
    nodes,
    peers,
    dirs: [base],
    async start(id, joining = false) {
      const c = await Coordinator.start({
        id,
        listen: peers[id] ?? "",
        peers,
        join: joining,
        dataDir: join(base, id),
        serverCredentials: ServerCredentials.createInsecure(),
        peerCredentials: credentials.createInsecure(),
        auth: () => fakeAuth,
        issuer: fakeIssuer,
        siteAudience: "isthmus-sites",
        log: silentLogger(),
        tickMs: 20,
        electionTicks: 10,
        streamLimits: { progressIntervalMs: 50 },
      });
      nodes.set(id, c);
      return c;
    },
    /** The leader, once every running member knows it. */
    async leader() {
      return until("a leader known to every member", () => {
        const l = [...nodes.values()].find((c) => c.node.isLeader());
        return l && [...nodes.values()].every((c) => c.node.leaderId() === l.id) ? l : undefined;
      });
    },
    async close() {
      await Promise.all([...nodes.values()].map((c) => c.stop()));
      rmSync(base, { recursive: true, force: true });
    },
  };
  await Promise.all(ids.map((id) => g.start(id)));
  return g;
}

/** Adds a member to the group's map of addresses without making it a founding voter. */
async function reserve(g: Group, id: string): Promise<string> {
  const address = `127.0.0.1:${await fixedPort()}`;
  g.peers[id] = address;
  return address;
}

describe("a 3-node coordinator group over gRPC on loopback", () => {
  let g: Group;
  before(async () => {
    g = await startGroup(["c1", "c2", "c3"]);
  });
  after(async () => {
    await g.close();
  });

  it("accepts writes through a follower and serves linearizable reads on every member", async () => {
    const leader = await g.leader();
    const follower = [...g.nodes.values()].find((c) => c !== leader);
    assert.ok(follower);
    const fed = new (await import("@isthmus/schema")).federationpb.FederationServiceClient(
      follower.address,
      credentials.createInsecure(),
    );
    try {
      const created = await call(
        fed,
        fed.create,
        { object: { securityGroup: { meta: meta("via-follower"), stateless: false } } },
        md("admin"),
      );
      assert.ok(created.index > 0);
      for (const c of g.nodes.values()) {
        const other = new (await import("@isthmus/schema")).federationpb.FederationServiceClient(
          c.address,
          credentials.createInsecure(),
        );
        const got = await call(
          other,
          other.get,
          { kind: intentpb.ObjectKind.OBJECT_KIND_SECURITY_GROUP, id: "", name: "via-follower" },
          md("viewer"),
        );
        assert.equal(got.object?.securityGroup?.meta?.id, created.object?.securityGroup?.meta?.id);
        other.close();
      }
      const st = await call(fed, fed.status, {}, md("viewer"));
      assert.equal(st.members.length, 3);
      assert.equal(st.leaderId, leader.id);
    } finally {
      fed.close();
    }
  });

  it("keeps every acknowledged write when the leader is killed mid-stream; WatchIntent resumes without gaps or duplicates", async () => {
    const leader = await g.leader();
    const schema = await import("@isthmus/schema");
    // A site joins and watches intent on the leader, the node we are about to kill.
    const join = new schema.sitesyncpb.SiteSyncServiceClient(leader.address, credentials.createInsecure());
    await call(
      join,
      join.join,
      { site: "ams", publicKeyJwk: JSON.stringify({ kty: "OKP", crv: "Ed25519", x: "k" }) },
      md("onboard:ams:j-ams"),
    );
    join.close();

    const received: number[] = [];
    let lastIndex = 0;
    const watch = (address: string, from: number) => {
      const client = new schema.sitesyncpb.SiteSyncServiceClient(address, credentials.createInsecure());
      const stream = client.watchIntent({ site: "ams", fromIndex: from }, md("site:ams"));
      const ended = new Promise<ServiceError | undefined>((resolve) => {
        stream.on("data", (m: sitesyncpb.WatchIntentResponse) => {
          if (m.snapshot)
            assert.fail(`unexpected snapshot at ${m.snapshot.index}: the journal covers the gap`);
          if (m.change) {
            received.push(m.change.index);
            lastIndex = m.change.index;
          }
          if (m.progressIndex !== undefined) lastIndex = Math.max(lastIndex, m.progressIndex);
        });
        stream.on("error", (err: ServiceError) => resolve(err));
        stream.on("end", () => resolve(undefined));
      });
      return { client, stream, ended };
    };
    const first = watch(leader.address, 0);

    const client = new FederationClient(
      loadClientConfig(
        { server: Object.values(g.peers).join(","), timeout: "15000" },
        { ISTHMUS_TOKEN: "admin" },
      ),
    );
    const acked = new Map<string, number>();
    let killed = false;
    try {
      for (let i = 0; i < 40; i++) {
        const name = `sg-${i}`;
        if (i === 15) {
          await leader.kill();
          g.nodes.delete(leader.id);
          killed = true;
        }
        try {
          const r = await client.rpc((c) => c.create, {
            object: { securityGroup: { meta: meta(name), stateless: false } },
          });
          acked.set(name, r.index);
        } catch (err) {
          // A write interrupted by the crash may or may not have committed; it was not acknowledged.
          const code = (err as ServiceError).code;
          assert.ok(
            code === status.UNAVAILABLE || code === status.ALREADY_EXISTS,
            `unexpected ${status[code]}: ${(err as ServiceError).details}`,
          );
        }
      }
      assert.ok(killed);
      assert.ok(acked.size >= 30, `only ${acked.size} writes acknowledged`);

      const cut = await first.ended;
      assert.ok(cut, "the watch on the killed leader ended");
      first.client.close();
      const survivor = await g.leader();
      assert.notEqual(survivor, leader);
      // Resume on the new leader from the last index this watcher saw.
      const second = watch(survivor.address, lastIndex);
      const finalIndex = Math.max(...acked.values());
      await until("the resumed watch to catch up", () => lastIndex >= finalIndex || undefined);
      second.stream.cancel();
      second.client.close();

      // Every acknowledged write survives, on every surviving member.
      for (const c of g.nodes.values()) {
        await c.replicator.read();
        for (const [name, index] of acked) {
          const sg = c.sm.byName("securityGroup", name);
          assert.ok(sg, `${name} (acknowledged at ${index}) survives on ${c.id}`);
          assert.equal(sg.meta?.createdRevision, index);
        }
      }
      // The watcher saw each change once, in order, and none is missing.
      assert.deepEqual(
        received,
        [...new Set(received)].sort((a, b) => a - b),
        "in order, no duplicates",
      );
      const expected = survivor.sm.journal
        .since(0)
        .map((c) => c.index)
        .filter((i) => i <= lastIndex);
      assert.deepEqual(received, expected, "no gaps");
    } finally {
      client.close();
      // Bring the killed node back so the group closes whole.
      if (!g.nodes.has(leader.id)) await g.start(leader.id);
    }
  });

  it("changes membership online: adds a fourth member that catches up, then removes it", async () => {
    const schema = await import("@isthmus/schema");
    const address = await reserve(g, "c4");
    const c4 = await g.start("c4", true);
    const client = new FederationClient(
      loadClientConfig(
        {
          server: Object.values(g.peers)
            .filter((a) => a !== address)
            .join(","),
        },
        { ISTHMUS_TOKEN: "admin" },
      ),
    );
    try {
      const added = await client.rpc((c) => c.addMember, { id: "c4", address, learner: false });
      assert.ok(added.members.some((m) => m.id === "c4" && m.voter));
      await until("c4 to catch up", () => (c4.sm.byName("securityGroup", "via-follower") ? true : undefined));
      // c4 may have applied the data before the driver advanced past the entry that added it
      // (its configuration moves with `advance`), so ask until its status has caught up too.
      const fed = new schema.federationpb.FederationServiceClient(address, credentials.createInsecure());
      let members = -1;
      await until("c4's status to list four members", async () => {
        members = (await call(fed, fed.status, {}, md("viewer"))).members.length;
        return members === 4 ? true : undefined;
      }).catch((err: Error) => {
        throw new Error(`${err.message} (last: ${members})`);
      });
      fed.close();
      const removed = await client.rpc((c) => c.removeMember, { id: "c4" });
      assert.deepEqual(removed.members.map((m) => m.id).sort(), ["c1", "c2", "c3"]);
      const err = await client
        .rpc((c) => c.addMember, { id: "", address, learner: false })
        .catch((e: ServiceError) => e);
      assert.equal((err as ServiceError).code, status.INVALID_ARGUMENT);
    } finally {
      client.close();
      await c4.stop();
      g.nodes.delete("c4");
      delete g.peers.c4;
    }
  });
});
