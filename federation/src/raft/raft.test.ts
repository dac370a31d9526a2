// Unit tests of RaftCore's API contract: configuration errors, Ready/advance misuse, malformed
// input from the network, and the reasons proposals are refused. Protocol behaviour is covered by
// the transcripts in testdata/ and by the simulation.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ProposalDroppedError, RaftInvariantError } from "./errors.js";
import { MemoryStorage } from "./memory-storage.js";
import { newMessage, type RaftConfig, RaftCore } from "./raft.js";
import { ConfChangeType, EntryType, MessageType } from "./types.js";

function core(overrides: Partial<RaftConfig> = {}): RaftCore {
  return new RaftCore({
    id: "a",
    voters: ["a", "b", "c"],
    storage: new MemoryStorage(),
    randomInt: () => 0,
    ...overrides,
  });
}

/** Drives one core through its Ready batches, persisting into its storage. */
function drain(c: RaftCore, storage: MemoryStorage) {
  const sent = [];
  while (c.hasReady()) {
    const rd = c.ready();
    if (rd.snapshot) storage.applySnapshot(rd.snapshot);
    storage.append(rd.entries);
    if (rd.hardState) storage.setHardState(rd.hardState);
    sent.push(...rd.messages, ...rd.messagesAfterPersist);
    c.advance();
  }
  return sent;
}

test("configuration errors name the field", () => {
  assert.throws(() => core({ id: "" }), /id must be a non-empty string/);
  assert.throws(
    () => core({ electionTicks: 2, heartbeatTicks: 2 }),
    /heartbeatTicks \(2\) must be less than electionTicks/,
  );
  assert.throws(() => core({ maxInflightMsgs: 0 }), /maxInflightMsgs must be a positive integer/);
  assert.throws(() => core({ readOnlyOption: "lease", checkQuorum: false }), /lease.*requires checkQuorum/);
  assert.throws(() => core({ learners: ["a"] }), /both a voter and a learner/);
});

test("a new group bootstraps identical configuration entries on every member", () => {
  const first = core().ready();
  const second = core({ id: "b" }).ready();
  assert.deepEqual(first.entries, second.entries);
  assert.deepEqual(
    first.entries.map((e) => [e.index, e.term, e.type]),
    [
      [1, 1, EntryType.ConfChange],
      [2, 1, EntryType.ConfChange],
      [3, 1, EntryType.ConfChange],
    ],
  );
  assert.deepEqual(first.hardState, { term: 1, vote: "", commit: 3 });
});

test("ready() twice without advance() is refused, and advance() needs a ready()", () => {
  const c = core();
  assert.throws(() => c.advance(), RaftInvariantError);
  c.ready();
  assert.equal(c.hasReady(), false);
  assert.throws(() => c.ready(), /ready\(\) called again before advance\(\)/);
  c.advance();
});

test("a single voter commits a proposal once its own write is persisted", () => {
  const storage = new MemoryStorage();
  const c = new RaftCore({ id: "solo", voters: ["solo"], storage, randomInt: () => 0 });
  drain(c, storage);
  c.campaign();
  drain(c, storage);
  assert.equal(c.role, "leader");
  c.propose(new TextEncoder().encode("x"));
  const rd = c.ready();
  assert.equal(rd.entries.length, 1);
  // Not durable yet: nothing is committed in the Ready that carries the write.
  assert.deepEqual(rd.committedEntries, []);
  const before = c.status().commit;
  storage.append(rd.entries);
  c.advance();
  assert.equal(c.status().commit, before + 1);
  const next = c.ready();
  assert.deepEqual(
    next.committedEntries.map((e) => new TextDecoder().decode(e.data)),
    ["x"],
  );
  c.advance();
  c.readIndex(new TextEncoder().encode("r"));
  assert.equal(c.ready().readStates[0]?.index, c.status().commit);
});

test("a leader with one follower down commits only after its own write is persisted", () => {
  const storages = { a: new MemoryStorage(), b: new MemoryStorage() };
  const a = core({ storage: storages.a });
  const b = core({ id: "b", storage: storages.b });
  drain(a, storages.a);
  drain(b, storages.b);
  // Elect a with b's vote (c never answers).
  a.campaign();
  const deliver = (to: RaftCore, msgs: ReturnType<typeof drain>) => {
    for (const m of msgs) if (m.to === to.id) to.step(m);
  };
  for (let k = 0; k < 4 && a.role !== "leader"; k++) {
    deliver(b, drain(a, storages.a));
    deliver(a, drain(b, storages.b));
  }
  assert.equal(a.role, "leader");
  for (let k = 0; k < 4; k++) {
    deliver(b, drain(a, storages.a));
    deliver(a, drain(b, storages.b));
  }
  const commit0 = a.status().commit;
  a.propose(new TextEncoder().encode("p"));
  const rd = a.ready();
  const idx = rd.entries[0]!.index;
  // The append may leave before the leader's write; b persists and acknowledges it.
  assert.ok(rd.messages.some((m) => m.type === MessageType.Append && m.to === "b"));
  deliver(b, rd.messages);
  const acks = drain(b, storages.b);
  assert.ok(acks.some((m) => m.type === MessageType.AppendResponse && m.index === idx));
  deliver(a, acks);
  assert.equal(a.status().commit, commit0, "b's ack alone is not a quorum while a's write is pending");
  assert.equal(a.status().progress!.a!.match, idx - 1);
  storages.a.append(rd.entries);
  a.advance();
  assert.equal(a.status().progress!.a!.match, idx);
  assert.equal(a.status().commit, idx);
});

test("proposals without a leader are refused with a reason", () => {
  const c = core();
  assert.throws(
    () => c.propose(new Uint8Array([1])),
    (err: unknown) => err instanceof ProposalDroppedError && err.reason === "no-leader",
  );
  assert.throws(
    () => c.readIndex(new Uint8Array([1])),
    (err: unknown) => err instanceof ProposalDroppedError && err.reason === "no-leader",
  );
  assert.throws(
    () => c.proposeConfChange({ type: ConfChangeType.AddVoter, nodeId: "", address: "" }),
    (err: unknown) => err instanceof ProposalDroppedError && err.reason === "invalid-conf-change",
  );
  assert.throws(() => c.propose("text" as unknown as Uint8Array), TypeError);
});

test("malformed messages are dropped and counted, never trip an invariant", () => {
  const storage = new MemoryStorage();
  const c = core({ storage });
  drain(c, storage);
  const before = c.status();
  const bad = [
    newMessage({ type: MessageType.Append, from: "b", to: "a", term: 0 }),
    newMessage({ type: MessageType.Append, from: "b", to: "zz", term: 5 }),
    newMessage({ type: 99 as MessageType, from: "b", to: "a", term: 5 }),
    newMessage({ type: MessageType.Heartbeat, from: "b", to: "a", term: -1 }),
    // Entries that do not follow the previous index.
    newMessage({
      type: MessageType.Append,
      from: "b",
      to: "a",
      term: 5,
      index: 3,
      logTerm: 1,
      entries: [{ index: 7, term: 5, type: EntryType.Normal, data: new Uint8Array() }],
    }),
    // An entry from a term later than the sender's.
    newMessage({
      type: MessageType.Append,
      from: "b",
      to: "a",
      term: 5,
      index: 3,
      logTerm: 1,
      entries: [{ index: 4, term: 6, type: EntryType.Normal, data: new Uint8Array() }],
    }),
    newMessage({ type: MessageType.Snapshot, from: "b", to: "a", term: 5 }),
  ];
  for (const m of bad) c.step(m);
  const after = c.status();
  assert.equal(after.droppedMessages, bad.length);
  assert.equal(after.term, before.term);
  assert.equal(after.lastIndex, before.lastIndex);
});

test("a vote is granted once per term and only to an up-to-date log", () => {
  const storage = new MemoryStorage();
  const c = core({ storage, preVote: false, checkQuorum: false });
  drain(c, storage);
  const vote = (from: string, lastIndex: number, lastTerm: number) =>
    newMessage({ type: MessageType.Vote, from, to: "a", term: 2, index: lastIndex, logTerm: lastTerm });
  c.step(vote("b", 2, 1)); // behind: our log ends at 1/3
  c.step(vote("c", 3, 1));
  c.step(vote("b", 9, 1)); // up to date, but we already voted for c
  const replies = drain(c, storage).filter((m) => m.type === MessageType.VoteResponse);
  assert.deepEqual(
    replies.map((m) => [m.to, m.reject]),
    [
      ["b", true],
      ["c", false],
      ["b", true],
    ],
  );
  assert.equal(storage.initialState().hardState.vote, "c");
});

test("a leader never commits an entry of an earlier term by counting replicas (Raft §5.4.2)", () => {
  // Node a holds an entry from term 2 that was never committed, and becomes leader in term 4.
  const storage = new MemoryStorage();
  const boot = core({ storage });
  const rd = boot.ready();
  storage.append(rd.entries);
  storage.append([{ index: 4, term: 2, type: EntryType.Normal, data: new TextEncoder().encode("old") }]);
  storage.setHardState({ term: 3, vote: "", commit: 3 });
  const c = new RaftCore({ id: "a", voters: ["a", "b", "c"], storage, randomInt: () => 0, preVote: false });
  drain(c, storage); // applies the configuration entries
  c.campaign();
  drain(c, storage);
  c.step(newMessage({ type: MessageType.VoteResponse, from: "b", to: "a", term: 4 }));
  drain(c, storage);
  assert.equal(c.role, "leader");
  assert.equal(c.status().lastIndex, 5, "the new leader appended its empty entry at 5");
  // b acknowledges the old entry: a majority (a, b) holds index 4, but it is from term 2.
  c.step(newMessage({ type: MessageType.AppendResponse, from: "b", to: "a", term: 4, index: 4 }));
  assert.equal(c.status().commit, 3);
  // Once an entry of term 4 is on a majority, it and everything before it commit.
  c.step(newMessage({ type: MessageType.AppendResponse, from: "b", to: "a", term: 4, index: 5 }));
  assert.equal(c.status().commit, 5);
});
