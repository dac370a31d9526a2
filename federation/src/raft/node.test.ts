// RaftNode end to end inside one process: three (or four) nodes over the in-memory transport with
// real timers, a small key-value state machine, and both storages.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { MemoryStorage } from "./memory-storage.js";
import { MemoryNetwork } from "./memory-transport.js";
import { RaftNode, RaftNodeError } from "./node.js";
import { type Entry, type Message, MessageType, type StateMachine, type WritableStorage } from "./types.js";
import { WalStorage } from "./wal-storage.js";

/** put k=v returns the entry's index (the revision); the state is a JSON object. */
class Kv implements StateMachine<number> {
  data = new Map<string, string>();
  apply(e: Entry): number {
    const { k, v } = JSON.parse(new TextDecoder().decode(e.data)) as { k: string; v: string };
    this.data.set(k, v);
    return e.index;
  }
  snapshot(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify([...this.data]));
  }
  restore(data: Uint8Array): void {
    this.data = new Map(
      data.byteLength ? (JSON.parse(new TextDecoder().decode(data)) as [string, string][]) : [],
    );
  }
}

const peersOf = (ids: string[]) => Object.fromEntries(ids.map((id) => [id, `mem://${id}`]));
const put = (k: string, v: string) => new TextEncoder().encode(JSON.stringify({ k, v }));

interface Member {
  node: RaftNode<number>;
  kv: Kv;
  storage: WritableStorage;
  closed?: boolean;
}

/** Retries a call that failed only because leadership moved (what a client does). */
async function retrying<T>(f: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await f();
    } catch (err) {
      const moved =
        err instanceof RaftNodeError && ["leader-changed", "dropped", "overwritten"].includes(err.code);
      if (!moved || attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

function cluster(
  ids: string[],
  opts: {
    snapshotEvery?: number;
    storages?: Record<string, WritableStorage>;
    commitNotifyDelayMs?: number;
    leaderInlineSync?: boolean;
    /** Every message each node hands its transport, by sender. */
    record?: Map<string, Message[]>;
    /** Called with each node's outgoing messages as it hands them to its transport. */
    onSend?: (id: string, ms: Message[]) => void;
  } = {},
) {
  const net = new MemoryNetwork();
  const peers = peersOf(ids);
  const members = new Map<string, Member>();
  const make = (id: string, founding: Record<string, string>, storage?: WritableStorage, join = false) => {
    const kv = new Kv();
    const s = storage ?? opts.storages?.[id] ?? new MemoryStorage();
    const transport = net.transport(id);
    const { record, onSend } = opts;
    if (record || onSend) {
      const send = transport.send.bind(transport);
      transport.send = (ms: Message[]) => {
        record?.set(id, [...(record.get(id) ?? []), ...ms]);
        onSend?.(id, ms);
        send(ms);
      };
    }
    const node = new RaftNode<number>({
      id,
      peers: founding,
      join,
      storage: s,
      transport,
      commitNotifyDelayMs: opts.commitNotifyDelayMs,
      leaderInlineSync: opts.leaderInlineSync,
      stateMachine: kv,
      tickMs: 50,
      electionTicks: 10,
      snapshotEvery: opts.snapshotEvery ?? 0,
      snapshotKeepEntries: 5,
      proposalTimeoutMs: 3000,
      readTimeoutMs: 3000,
    }).start();
    const m = { node, kv, storage: s };
    members.set(id, m);
    return m;
  };
  for (const id of ids) make(id, peers);
  return {
    net,
    members,
    make,
    async leader(timeoutMs = 5000): Promise<Member> {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const leaders = [...members.values()].filter((m) => m.node.isLeader());
        const id = leaders[0]?.node.id;
        // Settled: one leader, and every open member follows it.
        if (
          leaders.length === 1 &&
          [...members.values()].every((m) => m.node.leaderId() === id || m.closed)
        ) {
          return leaders[0]!;
        }
        if (Date.now() > end) throw new Error("no single leader elected in time");
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    /** Proposes through whoever leads, retrying when leadership moves (as a client would). */
    async write(k: string, v: string): Promise<number> {
      for (let attempt = 0; ; attempt++) {
        const l = await this.leader();
        try {
          return await l.node.propose(put(k, v));
        } catch (err) {
          if (!(err instanceof RaftNodeError) || err.code === "timeout" || attempt > 20) throw err;
        }
      }
    },
    async close() {
      await Promise.all([...members.values()].map((m) => m.node.close()));
    },
  };
}

// The deadline only bounds a failing run (a condition that holds returns at once): generous for a
// loaded 2-core CI machine.
async function until(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("proposals resolve with apply()'s result on the leader and, forwarded, on a follower", async (t) => {
  const c = cluster(["a", "b", "c"]);
  t.after(() => c.close());
  const leader = await c.leader();
  const follower = [...c.members.values()].find((m) => m !== leader)!;
  const r1 = await retrying(() => leader.node.propose(put("x", "1")));
  const r2 = await retrying(() => follower.node.propose(put("y", "2")));
  assert.ok(r2 > r1, `revisions increase (${r1} then ${r2})`);
  const many = await Promise.all(
    Array.from({ length: 200 }, (_, k) => leader.node.propose(put(`k${k}`, `${k}`))),
  );
  assert.equal(new Set(many).size, 200, "every proposal got its own log index");
  await until(
    () => [...c.members.values()].every((m) => m.kv.data.size === 202),
    "all nodes applied everything",
  );
  for (const m of c.members.values()) assert.equal(m.kv.data.get("k199"), "199");
});

test("a read barrier on a follower observes every write acknowledged before it", async (t) => {
  const c = cluster(["a", "b", "c"]);
  t.after(() => c.close());
  const leader = await c.leader();
  const follower = [...c.members.values()].find((m) => m !== leader)!;
  for (let k = 0; k < 20; k++) {
    await c.write("counter", String(k));
    await retrying(() => follower.node.read());
    assert.equal(follower.kv.data.get("counter"), String(k));
  }
});

test("read barriers issued at once on every node all resolve (request ids never collide)", async (t) => {
  const c = cluster(["a", "b", "c"]);
  t.after(() => c.close());
  await c.leader();
  await c.write("x", "1");
  for (let round = 0; round < 5; round++) {
    await Promise.all([...c.members.values()].map((m) => retrying(() => m.node.read())));
  }
  for (const m of c.members.values()) assert.equal(m.kv.data.get("x"), "1");
});

test("an isolated leader's proposals fail with a clear error and the rest elect a new leader", async (t) => {
  const c = cluster(["a", "b", "c"]);
  t.after(() => c.close());
  await c.write("before", "1");
  const old = await c.leader();
  c.net.isolate(old.node.id, ["a", "b", "c"]);
  const lost = old.node.propose(put("lost", "1"));
  // It may be rejected while we wait for the election below; observe it now so the rejection is
  // not reported as unhandled (assert.rejects checks it afterwards).
  lost.catch(() => {});
  const others = [...c.members.values()].filter((m) => m !== old);
  // Leadership among the majority may still move once; retry as a client would.
  for (let attempt = 0; ; attempt++) {
    await until(() => others.some((m) => m.node.isLeader()), "a new leader among the majority");
    const fresh = others.find((m) => m.node.isLeader())!;
    try {
      await fresh.node.propose(put("after", "1"));
      break;
    } catch (err) {
      if (!(err instanceof RaftNodeError) || err.code === "timeout" || attempt > 20) throw err;
    }
  }
  await assert.rejects(lost, (err: unknown) => {
    assert.ok(err instanceof RaftNodeError, String(err));
    assert.ok(["leader-changed", "timeout", "overwritten"].includes(err.code), err.code);
    return true;
  });
  c.net.heal();
  await until(() => old.kv.data.get("after") === "1", "the old leader catches up");
  assert.equal(old.kv.data.has("lost"), false, "the isolated leader's uncommitted write never applied");
});

test("a follower with no leader rejects a proposal at once, naming the problem", async (t) => {
  const c = cluster(["a", "b", "c"]);
  t.after(() => c.close());
  c.net.isolate("a", ["a", "b", "c"]);
  const a = c.members.get("a")!;
  await until(() => !a.node.isLeader(), "a is not leader");
  await new Promise((r) => setTimeout(r, 50));
  if (a.node.leaderId() === "") {
    await assert.rejects(a.node.propose(put("x", "1")), /no leader/);
  } else {
    await assert.rejects(a.node.propose(put("x", "1")), RaftNodeError);
  }
});

test("snapshots compact the log and a node added later catches up from one", async (t) => {
  const c = cluster(["a", "b", "c"], { snapshotEvery: 50 });
  t.after(() => c.close());
  await c.leader();
  for (let k = 0; k < 150; k++) await c.write(`k${k}`, `${k}`);
  const leader = await c.leader();
  assert.ok(leader.node.status().snapshotIndex >= 100, `snapshot at ${leader.node.status().snapshotIndex}`);
  assert.ok(leader.storage.firstIndex() > 90, `log compacted to ${leader.storage.firstIndex()}`);
  const d = c.make("d", peersOf(["a", "b", "c"]), undefined, true);
  assert.deepEqual(d.node.status().config.voters, [], "a joining node starts without a configuration");
  await leader.node.addLearner("d", "mem://d");
  await until(() => d.kv.data.size === 150, "the learner d receives the state", 10_000);
  await leader.node.addVoter("d", "mem://d");
  assert.deepEqual(leader.node.status().config.voters.slice().sort(), ["a", "b", "c", "d"]);
  await leader.node.propose(put("with-d", "1"));
  await until(() => d.kv.data.get("with-d") === "1", "d applies new writes");
});

test("leadership moves on request and a removed node stops being a member", async (t) => {
  const c = cluster(["a", "b", "c"]);
  t.after(() => c.close());
  const leader = await c.leader();
  const target = [...c.members.values()].find((m) => m !== leader)!;
  await leader.node.transferLeadership(target.node.id);
  await until(() => target.node.isLeader(), "the target leads");
  // A new leader accepts membership changes once its own first entry is applied.
  await target.node.propose(put("new-leader", "1"));
  const third = [...c.members.values()].find((m) => m !== leader && m !== target)!;
  await target.node.removeNode(third.node.id);
  assert.deepEqual(
    target.node.status().config.voters.slice().sort(),
    [leader.node.id, target.node.id].sort(),
  );
  await target.node.propose(put("two-node", "ok"));
});

test("a node restarted on its WAL rebuilds its state and rejoins", async (t) => {
  const dirs = ["a", "b", "c"].map(() => mkdtempSync(join(tmpdir(), "raft-node-")));
  const storages: Record<string, WritableStorage> = {};
  for (const [k, id] of ["a", "b", "c"].entries())
    storages[id] = await WalStorage.open(dirs[k]!, { segmentBytes: 1 << 20 });
  const c = cluster(["a", "b", "c"], { storages, snapshotEvery: 30 });
  t.after(async () => {
    await c.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  await c.leader();
  for (let k = 0; k < 60; k++) await c.write(`k${k}`, `${k}`);
  const current = await c.leader();
  const victim = [...c.members.values()].find((m) => m !== current)!;
  const id = victim.node.id;
  await until(() => victim.kv.data.size === 60, "the victim has everything");
  await victim.node.close();
  victim.closed = true;
  for (let k = 60; k < 80; k++) await c.write(`k${k}`, `${k}`);
  const storage = await WalStorage.open(dirs[["a", "b", "c"].indexOf(id)]!, { segmentBytes: 1 << 20 });
  const back = c.make(id, { a: "mem://a", b: "mem://b", c: "mem://c" }, storage);
  await until(() => back.kv.data.size === 80, "the restarted node catches up");
  assert.equal(back.kv.data.get("k79"), "79");
});

test("a snapshot is written while the node keeps committing; the log is compacted once it is stored", async (t) => {
  const dirs = ["a", "b", "c"].map(() => mkdtempSync(join(tmpdir(), "raft-node-")));
  const storages: Record<string, SlowSnapshotWal> = {};
  for (const [k, id] of ["a", "b", "c"].entries()) {
    storages[id] = new SlowSnapshotWal(await WalStorage.open(dirs[k]!, { segmentBytes: 1 << 20 }));
  }
  const c = cluster(["a", "b", "c"], { storages, snapshotEvery: 20 });
  t.after(async () => {
    for (const s of Object.values(storages)) s.release();
    await c.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  await c.leader();
  for (let k = 0; k < 25; k++) await c.write(`k${k}`, `${k}`);
  const leader = await c.leader();
  const ls = storages[leader.node.id]!;
  await until(() => ls.writing > 0, "the leader starts writing a snapshot");
  assert.ok(leader.node.status().snapshotIndex >= 20);
  // The file is not stored yet: the log is whole, and writes still commit meanwhile.
  for (let k = 25; k < 40; k++) await c.write(`k${k}`, `${k}`);
  assert.equal(ls.snapshot().metadata.index, 0);
  assert.equal(ls.firstIndex(), 1);
  assert.equal(ls.writing, 1, "one snapshot at a time");
  for (const s of Object.values(storages)) s.release();
  await until(() => ls.snapshot().metadata.index >= 20 && ls.firstIndex() > 1, "the log is compacted");
  await c.write("after", "1");
});

/** WalStorage whose compactAsync waits until released, to stand for a slow snapshot write. */
class SlowSnapshotWal implements WritableStorage {
  writing = 0;
  private gate: Promise<void>;
  private open!: () => void;

  constructor(private readonly wal: WalStorage) {
    this.gate = new Promise((r) => {
      this.open = r;
    });
  }
  release(): void {
    this.open();
  }
  async compactAsync(snap: Parameters<WalStorage["compact"]>[0], keep: number): Promise<void> {
    this.writing++;
    await this.gate;
    await this.wal.compactAsync(snap, keep);
  }
  initialState() {
    return this.wal.initialState();
  }
  firstIndex() {
    return this.wal.firstIndex();
  }
  lastIndex() {
    return this.wal.lastIndex();
  }
  term(i: number) {
    return this.wal.term(i);
  }
  entries(lo: number, hi: number, maxBytes: number) {
    return this.wal.entries(lo, hi, maxBytes);
  }
  snapshot() {
    return this.wal.snapshot();
  }
  append(es: Entry[]) {
    this.wal.append(es);
  }
  setHardState(hs: Parameters<WalStorage["setHardState"]>[0]) {
    this.wal.setHardState(hs);
  }
  applySnapshot(snap: Parameters<WalStorage["applySnapshot"]>[0]) {
    this.wal.applySnapshot(snap);
  }
  compact(snap: Parameters<WalStorage["compact"]>[0], keep: number) {
    this.wal.compact(snap, keep);
  }
  sync() {
    return this.wal.sync();
  }
  close() {
    return this.wal.close();
  }
}

/** MemoryStorage whose sync() can be held, to stand for a slow disk. */
class HeldSyncStorage extends MemoryStorage {
  held = false;
  /** Entries per append() call, newest last. */
  appends: number[] = [];
  override append(entries: Entry[]): void {
    this.appends.push(entries.length);
    super.append(entries);
  }
  /** sync() calls so far. */
  syncs = 0;
  private waiters: (() => void)[] = [];
  override async sync(): Promise<void> {
    this.syncs++;
    while (this.held) await new Promise<void>((r) => this.waiters.push(r));
    return super.sync();
  }
  release(): void {
    this.held = false;
    for (const w of this.waiters.splice(0)) w();
  }
}

test("the leader sends before its fsync, and with one follower down commits only once its own write is durable", async (t) => {
  const ids = ["a", "b", "c"];
  const storages = Object.fromEntries(ids.map((id) => [id, new HeldSyncStorage()]));
  const c = cluster(ids, { storages });
  t.after(() => c.close());
  const leader = await c.leader();
  await retrying(() => leader.node.propose(put("warm", "up")));
  const [up, down] = ids.filter((id) => id !== leader.node.id) as [string, string];
  c.net.isolate(down, ids);
  const disk = storages[leader.node.id]!;
  disk.held = true;
  const before = c.members.get(up)!.node.status().lastIndex;
  let done = false;
  const p = leader.node.propose(put("slow", "disk")).then((r) => {
    done = true;
    return r;
  });
  // The append reached the follower (and it acknowledged it) while the leader's fsync is held...
  await until(() => c.members.get(up)!.node.status().lastIndex > before, "the follower to get the entry");
  await new Promise((r) => setTimeout(r, 200));
  // ...yet one follower's copy is no quorum without the leader's own durable write.
  assert.equal(done, false, "committed before the leader's own write was durable");
  assert.ok(leader.node.status().commit < c.members.get(up)!.node.status().lastIndex);
  disk.release();
  const index = await p;
  assert.ok(index > before);
  c.net.heal();
});

test("an idle node takes a lone proposal at once; with an fsync in flight, proposals of one turn share a Ready", async (t) => {
  const ids = ["a", "b", "c"];
  const storages = Object.fromEntries(ids.map((id) => [id, new HeldSyncStorage()]));
  const c = cluster(ids, { storages });
  t.after(() => c.close());
  const leader = await c.leader();
  await retrying(() => leader.node.propose(put("warm", "up")));
  const disk = storages[leader.node.id]!;
  await until(() => leader.node.status().pendingProposals === 0, "the warm-up to settle");

  // Idle: the entry is written within the microtasks that follow propose(), not a loop turn later.
  const last = disk.lastIndex();
  disk.held = true;
  const syncsBefore = disk.syncs;
  const first = leader.node.propose(put("k0", "v"));
  await new Promise<void>((r) => queueMicrotask(r));
  assert.equal(disk.lastIndex(), last + 1, "the lone proposal waited for a later event-loop turn");
  // Its fsync starts at the check phase, behind the appends it handed to the transport (a gRPC
  // transport writes them to the socket then), not before them.
  assert.equal(disk.syncs, syncsBefore, "the leader started its fsync before its appends could leave");
  await new Promise<void>((r) => setImmediate(r));
  assert.equal(disk.syncs, syncsBefore + 1, "the leader's fsync did not start at the check phase");

  // Busy (its fsync is held): ten proposals made in this turn wait for the check phase and
  // leave as one Ready — one append to storage, one Append per follower.
  const appendsBefore = disk.appends.length;
  const rest = Array.from({ length: 10 }, (_, k) => leader.node.propose(put(`k${k + 1}`, "v")));
  await new Promise<void>((r) => queueMicrotask(r));
  assert.equal(disk.lastIndex(), last + 1, "a proposal made while an fsync runs skipped the batching turn");
  await until(() => disk.lastIndex() === last + 11, "the batch to be written");
  assert.deepEqual(disk.appends.slice(appendsBefore), [10]);
  disk.release();
  const indexes = await Promise.all([first, ...rest]);
  assert.deepEqual(
    indexes,
    Array.from({ length: 11 }, (_, k) => last + 1 + k),
  );
});

test("a steady writer's next append carries the commit index; an entry-less one leaves only when none follows in time", async (t) => {
  const ids = ["a", "b", "c"];
  const sent = new Map<string, Message[]>();
  const c = cluster(ids, { commitNotifyDelayMs: 30, record: sent });
  t.after(() => c.close());
  const leader = await c.leader();
  await retrying(() => leader.node.propose(put("warm", "up")));
  const from = sent.get(leader.node.id)?.length ?? 0;
  let last = 0;
  for (let k = 0; k < 20; k++) last = await leader.node.propose(put(`k${k}`, "v"));
  const followers = ids.filter((id) => id !== leader.node.id);
  await until(
    () => followers.every((id) => c.members.get(id)!.node.status().applied >= last),
    "followers to apply the last write",
  );
  const appends = () =>
    (sent.get(leader.node.id) ?? []).slice(from).filter((m) => m.type === MessageType.Append);
  // Sending each commit at once would cost an entry-less append per follower per write (40 here).
  const empty = appends().filter((m) => m.entries.length === 0);
  assert.ok(empty.length <= 10, `${empty.length} entry-less appends for 20 back-to-back writes`);
  // The last commit still reaches every follower in an append of its own, not only by heartbeat.
  await until(
    () =>
      followers.every((id) =>
        appends().some((m) => m.to === id && m.entries.length === 0 && m.commit >= last),
      ),
    "the held commit-only appends to be sent",
    10_000,
  );
});

/** MemoryStorage that also offers syncBlocking(), counting which way each write was made durable. */
class TwoWaySyncStorage extends MemoryStorage {
  blocking = 0;
  pipelined = 0;
  /** Last index made durable. */
  durableIndex = 0;
  override async sync(): Promise<void> {
    this.pipelined++;
    const last = this.lastIndex();
    await super.sync();
    this.durableIndex = Math.max(this.durableIndex, last);
  }
  syncBlocking(): void {
    this.blocking++;
    this.syncNow();
    this.durableIndex = this.lastIndex();
  }
}

test("a follower fsyncs a lone append on its own thread, a batch in the thread pool, and acknowledges only durable entries", async (t) => {
  const ids = ["a", "b", "c"];
  const storages = Object.fromEntries(ids.map((id) => [id, new TwoWaySyncStorage()]));
  const early: string[] = [];
  const c = cluster(ids, {
    storages,
    onSend: (id, ms) => {
      for (const m of ms) {
        if (m.type === MessageType.AppendResponse && !m.reject && m.index > storages[id]!.durableIndex)
          early.push(`${id} acknowledged ${m.index} with ${storages[id]!.durableIndex} durable`);
      }
    },
  });
  t.after(() => c.close());
  const leader = await c.leader();
  await retrying(() => leader.node.propose(put("warm", "up")));
  await until(() => leader.node.status().pendingProposals === 0, "the warm-up to settle");
  const followers = ids.filter((id) => id !== leader.node.id).map((id) => storages[id]!);
  const count = () => followers.map((s) => ({ blocking: s.blocking, pipelined: s.pipelined }));

  // One client writing: each follower gets a one-entry append and syncs it without the hand-off.
  let before = count();
  const one = await leader.node.propose(put("lone", "write"));
  await until(() => followers.every((s) => s.durableIndex >= one), "both followers to hold the write");
  count().forEach((n, k) => {
    assert.ok(n.blocking > before[k]!.blocking, "a lone append was not synced on the node's own thread");
    assert.equal(n.pipelined, before[k]!.pipelined, "a lone append went through the thread pool");
  });

  // Ten proposals in one turn leave as one ten-entry append: followers keep the pipelined fsync.
  before = count();
  const many = await Promise.all(
    Array.from({ length: 10 }, (_, k) => leader.node.propose(put(`batch${k}`, "v"))),
  );
  const last = Math.max(...many);
  await until(() => followers.every((s) => s.durableIndex >= last), "both followers to hold the batch");
  count().forEach((n, k) => {
    assert.ok(n.pipelined > before[k]!.pipelined, "a ten-entry append was synced on the node's own thread");
    assert.equal(n.blocking, before[k]!.blocking, "a ten-entry append was synced on the node's own thread");
  });
  assert.deepEqual(early, [], "a follower acknowledged entries before they were durable");
});

test("a leader syncs a lone write on its own thread only after handing over its appends, and only when asked", async (t) => {
  for (const leaderInlineSync of [true, false]) {
    const ids = ["a", "b", "c"];
    const storages = Object.fromEntries(ids.map((id) => [id, new TwoWaySyncStorage()]));
    // What each node did, in order: appends handed to the transport, and blocking syncs.
    const events: string[] = [];
    const c = cluster(ids, {
      storages,
      leaderInlineSync,
      onSend: (id, ms) => {
        for (const m of ms)
          if (m.type === MessageType.Append && m.entries.length > 0) events.push(`${id} append`);
      },
    });
    t.after(() => c.close());
    const leader = await c.leader();
    await retrying(() => leader.node.propose(put("warm", "up")));
    await until(() => leader.node.status().pendingProposals === 0, "the warm-up to settle");
    const disk = storages[leader.node.id]!;
    const syncBlocking = disk.syncBlocking.bind(disk);
    disk.syncBlocking = () => {
      events.push(`${leader.node.id} fsync`);
      syncBlocking();
    };
    const before = { blocking: disk.blocking, pipelined: disk.pipelined };
    events.length = 0;
    await leader.node.propose(put("lone", "write"));
    if (leaderInlineSync) {
      assert.equal(
        disk.blocking,
        before.blocking + 1,
        "the leader's lone write went through the thread pool",
      );
      assert.equal(disk.pipelined, before.pipelined);
      const id = leader.node.id;
      assert.deepEqual(
        events.filter((e) => e.startsWith(id)),
        [`${id} append`, `${id} append`, `${id} fsync`],
        "the leader synced before handing its appends to the transport",
      );
    } else {
      assert.equal(disk.blocking, before.blocking, "the leader synced on its own thread when told not to");
      assert.ok(disk.pipelined > before.pipelined);
    }
  }
});

test("a leader with another of its proposals pending keeps a one-entry write in the thread pool", async (t) => {
  const ids = ["a", "b", "c"];
  const storages = Object.fromEntries(ids.map((id) => [id, new TwoWaySyncStorage()]));
  const c = cluster(ids, { storages, leaderInlineSync: true });
  t.after(() => c.close());
  const leader = await c.leader();
  await retrying(() => leader.node.propose(put("warm", "up")));
  await until(() => leader.node.status().pendingProposals === 0, "the warm-up to settle");
  const disk = storages[leader.node.id]!;
  // Cut the followers off so the first write stays pending while the second is made.
  c.net.isolate(leader.node.id, ids);
  const settled = (p: Promise<number>) => p.catch(() => 0);
  const blocking = disk.blocking;
  const first = settled(leader.node.propose(put("first", "v")));
  await until(() => disk.blocking === blocking + 1, "the lone writer's entry to be synced inline");
  const pipelined = disk.pipelined;
  const second = settled(leader.node.propose(put("second", "v")));
  await until(() => disk.pipelined === pipelined + 1, "the second entry's sync");
  assert.equal(disk.blocking, blocking + 1, "a leader with a proposal pending blocked its loop on an fsync");
  c.net.heal();
  await Promise.all([first, second]);
});
