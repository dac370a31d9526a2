import assert from "node:assert/strict";
import { after, test } from "node:test";
import { silentLogger, type topologypb } from "@isthmus/schema";
import { bridge, host, objs } from "./testing/fake-simulator.js";
import { FakeTopologyServer } from "./testing/fake-topology-server.js";
import { TopologyStore } from "./topology-store.js";
import { TopologyWatchClient } from "./topology-watch-client.js";

const servers: FakeTopologyServer[] = [];
const clients: TopologyWatchClient[] = [];
after(async () => {
  for (const c of clients) c.stop();
  for (const s of servers) await s.stop();
});

// The deadline only bounds a failing run (a condition that holds returns at once): generous for a
// loaded 2-core CI machine.
async function until(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("the watch applies a snapshot, then changes, and resumes from its revision after a disconnect", async () => {
  const h = host("h", "127.0.0.9", 4789);
  const server = new FakeTopologyServer(objs({ hosts: [h] }), 5);
  servers.push(server);
  const address = await server.start();
  const store = new TopologyStore();
  const applied: number[] = [];
  const sink = {
    get revision() {
      return store.revision;
    },
    get ready() {
      return store.ready;
    },
    applySnapshot: (s: topologypb.TopologySnapshot) => {
      store.applySnapshot(s);
      applied.push(-s.revision);
    },
    applyChange: (c: topologypb.TopologyChange) => {
      store.applyChange(c);
      applied.push(c.revision);
    },
  };
  const client = new TopologyWatchClient({
    address,
    hostId: h.id,
    sink,
    log: silentLogger(),
    minBackoffMs: 20,
  });
  clients.push(client);
  client.start();
  await until(() => store.ready, "the snapshot");
  const b1 = bridge("b1");
  server.push([{ bridge: b1 }]);
  await until(() => store.revision === 6, "change 6");
  server.dropStreams();
  // Changes committed while the agent is away arrive after it resumes, without a new snapshot.
  server.push([{ bridge: bridge("b2") }]);
  await until(() => store.revision === 7, "change 7 after resuming");
  assert.deepEqual(applied, [-5, 6, 7]);
  assert.equal(server.requests[0]?.fromRevision, 0);
  assert.equal(server.requests.at(-1)?.fromRevision, 6);
  assert.equal(store.bridges.size, 2);
  assert.equal(client.stats.snapshots, 1);
});

test("a snapshot sent in parts is applied once, whole, when its last part arrives", async () => {
  const h = host("h", "127.0.0.9", 4789);
  const bridges = Array.from({ length: 7 }, (_, i) => bridge(`p${i}`));
  const server = new FakeTopologyServer(objs({ hosts: [h], bridges }), 3);
  server.snapshotPartObjects = 3; // 8 objects: parts of 3, 3, then the last 2 as the snapshot
  servers.push(server);
  const address = await server.start();
  const store = new TopologyStore();
  const sizes: number[] = [];
  const client = new TopologyWatchClient({
    address,
    hostId: h.id,
    sink: {
      get revision() {
        return store.revision;
      },
      get ready() {
        return store.ready;
      },
      applySnapshot: (s: topologypb.TopologySnapshot) => {
        sizes.push(s.objects.length);
        store.applySnapshot(s);
      },
      applyChange: (c: topologypb.TopologyChange) => store.applyChange(c),
    },
    log: silentLogger(),
    minBackoffMs: 20,
  });
  clients.push(client);
  client.start();
  await until(() => store.ready, "the snapshot");
  assert.deepEqual(sizes, [8], "one snapshot with every part's objects");
  assert.equal(store.bridges.size, 7);
  server.push([{ bridge: bridge("late") }]);
  await until(() => store.revision === 4, "the change after the snapshot");
  assert.equal(store.bridges.size, 8);
  assert.equal(client.stats.snapshots, 1);
});
