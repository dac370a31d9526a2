// raft-ts: the one contract every WritableStorage implementation passes (MemoryStorage and
// WalStorage run it from storage-contract.test.ts). It pins down the semantics the core relies
// on: index/term bounds, conflicting appends, byte limits, compaction and snapshots.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  CompactedError,
  type ConfState,
  type Entry,
  EntryType,
  type Snapshot,
  UnavailableError,
  type WritableStorage,
} from "./types.js";

export interface StorageFixture {
  storage: WritableStorage;
  /** For durable storages: close and open again from the same place (as after a clean restart). */
  reopen?: () => Promise<WritableStorage>;
  cleanup(): Promise<void>;
}

export function ent(index: number, term: number, data = `e${index}`): Entry {
  return { index, term, type: EntryType.Normal, data: new TextEncoder().encode(data) };
}

/** Entries lo..hi (inclusive) with the given term for each (a function of the index). */
export function ents(lo: number, hi: number, term: (i: number) => number = () => 1): Entry[] {
  const out: Entry[] = [];
  for (let i = lo; i <= hi; i++) out.push(ent(i, term(i)));
  return out;
}

export function snap(
  index: number,
  term: number,
  data = `state@${index}`,
  conf?: Partial<ConfState>,
): Snapshot {
  return {
    metadata: {
      index,
      term,
      confState: {
        voters: conf?.voters ?? ["a", "b", "c"],
        learners: conf?.learners ?? [],
        votersOutgoing: [],
      },
    },
    data: new TextEncoder().encode(data),
  };
}

const text = (e: Entry) => new TextDecoder().decode(e.data);
const indexes = (es: Entry[]) => es.map((e) => e.index);

export function storageContract(name: string, make: () => Promise<StorageFixture>): void {
  describe(`storage contract: ${name}`, () => {
    const withStorage = (
      title: string,
      body: (s: WritableStorage, f: StorageFixture) => Promise<void> | void,
    ) =>
      test(title, async () => {
        const f = await make();
        try {
          await body(f.storage, f);
        } finally {
          await f.cleanup();
        }
      });

    withStorage("a new storage is empty", (s) => {
      assert.equal(s.firstIndex(), 1);
      assert.equal(s.lastIndex(), 0);
      assert.equal(s.term(0), 0);
      assert.deepEqual(s.initialState().hardState, { term: 0, vote: "", commit: 0 });
      assert.equal(s.snapshot().metadata.index, 0);
      assert.throws(() => s.term(1), UnavailableError);
    });

    withStorage("appended entries read back with their terms", async (s) => {
      s.append(ents(1, 5, (i) => (i < 3 ? 1 : i < 5 ? 2 : 3)));
      await s.sync();
      assert.equal(s.lastIndex(), 5);
      assert.deepEqual(
        [1, 2, 3, 4, 5].map((i) => s.term(i)),
        [1, 1, 2, 2, 3],
      );
      const got = s.entries(2, 5, Number.MAX_SAFE_INTEGER);
      assert.deepEqual(indexes(got), [2, 3, 4]);
      assert.deepEqual(got.map(text), ["e2", "e3", "e4"]);
      assert.equal(got[0]!.type, EntryType.Normal);
    });

    withStorage("an append that conflicts replaces the suffix from its first index", (s) => {
      s.append(ents(1, 5));
      s.append([ent(4, 2, "new4"), ent(5, 2, "new5"), ent(6, 2, "new6")]);
      assert.equal(s.lastIndex(), 6);
      assert.deepEqual(s.entries(3, 7, Infinity).map(text), ["e3", "new4", "new5", "new6"]);
      s.append([ent(3, 3, "x3")]);
      assert.equal(s.lastIndex(), 3);
      assert.equal(s.term(3), 3);
      assert.throws(() => s.term(4), UnavailableError);
    });

    withStorage("an append that leaves a gap is refused", (s) => {
      s.append(ents(1, 3));
      assert.throws(() => s.append([ent(5, 1)]), /gap/);
      assert.equal(s.lastIndex(), 3);
    });

    withStorage("entries() honours maxBytes but always returns at least one entry", (s) => {
      s.append(ents(1, 5)); // 2 payload bytes each; sizes count payload bytes, as the core does
      assert.deepEqual(indexes(s.entries(1, 6, 0)), [1]);
      assert.deepEqual(indexes(s.entries(1, 6, 5)), [1, 2]);
      assert.deepEqual(indexes(s.entries(1, 6, 6)), [1, 2, 3]);
      assert.deepEqual(indexes(s.entries(1, 6, 1000)), [1, 2, 3, 4, 5]);
    });

    withStorage("reads past the last index are unavailable", (s) => {
      s.append(ents(1, 3));
      assert.throws(() => s.entries(2, 5, Infinity), UnavailableError);
      assert.throws(() => s.term(4), UnavailableError);
    });

    withStorage("the hard state is kept", async (s) => {
      s.setHardState({ term: 3, vote: "b", commit: 2 });
      s.setHardState({ term: 4, vote: "", commit: 5 });
      await s.sync();
      assert.deepEqual(s.initialState().hardState, { term: 4, vote: "", commit: 5 });
    });

    withStorage("compact keeps the requested tail and reports older indexes as compacted", async (s) => {
      s.append(ents(1, 10, (i) => i));
      s.setHardState({ term: 10, vote: "", commit: 9 });
      s.compact(snap(6, 6), 2);
      await s.sync();
      assert.equal(s.firstIndex(), 5);
      assert.equal(s.lastIndex(), 10);
      assert.equal(s.term(4), 4, "the term just before the first index stays known");
      assert.throws(() => s.term(3), CompactedError);
      assert.throws(() => s.entries(4, 6, Infinity), CompactedError);
      assert.deepEqual(indexes(s.entries(5, 11, Infinity)), [5, 6, 7, 8, 9, 10]);
      assert.equal(s.snapshot().metadata.index, 6);
      assert.equal(new TextDecoder().decode(s.snapshot().data), "state@6");
      s.compact(snap(8, 8), 0);
      assert.equal(s.firstIndex(), 9);
      assert.equal(s.term(8), 8);
      assert.throws(() => s.compact(snap(7, 7), 0), /older/);
      s.compact(snap(8, 8), 0);
      assert.equal(s.firstIndex(), 9, "compacting again at the current snapshot changes nothing");
    });

    withStorage("compact refuses a snapshot past the last index or with the wrong term", (s) => {
      s.append(ents(1, 4, () => 2));
      s.setHardState({ term: 2, vote: "", commit: 4 });
      assert.throws(() => s.compact(snap(5, 2), 0), UnavailableError);
      assert.throws(() => s.compact(snap(3, 9), 0), /term/);
      assert.equal(s.firstIndex(), 1);
      assert.equal(s.snapshot().metadata.index, 0);
    });

    withStorage("applySnapshot keeps a matching tail and discards a conflicting log", async (s) => {
      s.append(ents(1, 10, (i) => (i <= 5 ? 1 : 2)));
      s.applySnapshot(snap(5, 1));
      assert.equal(s.firstIndex(), 6);
      assert.equal(s.lastIndex(), 10);
      assert.equal(s.term(5), 1);
      s.applySnapshot(snap(8, 7));
      assert.equal(s.firstIndex(), 9);
      assert.equal(s.lastIndex(), 8);
      assert.equal(s.term(8), 7);
      assert.deepEqual(s.entries(9, 9, Infinity), []);
      s.append([ent(9, 7, "after")]);
      await s.sync();
      assert.deepEqual(s.entries(9, 10, Infinity).map(text), ["after"]);
      assert.throws(() => s.applySnapshot(snap(4, 1)), /older/);
    });

    withStorage("a snapshot past the end of the log replaces it and carries the configuration", (s) => {
      s.append(ents(1, 3));
      s.applySnapshot(snap(20, 4, "far", { voters: ["x", "y"], learners: ["z"] }));
      assert.equal(s.firstIndex(), 21);
      assert.equal(s.lastIndex(), 20);
      assert.deepEqual(s.initialState().confState, {
        voters: ["x", "y"],
        learners: ["z"],
        votersOutgoing: [],
      });
      assert.equal(new TextDecoder().decode(s.snapshot().data), "far");
    });

    withStorage("appends below the first index are ignored for the compacted part", (s) => {
      s.append(ents(1, 5));
      s.setHardState({ term: 1, vote: "", commit: 3 });
      s.compact(snap(3, 1), 0);
      s.append([ent(3, 1), ent(4, 1), ent(5, 1, "again5"), ent(6, 1)]);
      assert.equal(s.firstIndex(), 4);
      assert.deepEqual(s.entries(4, 7, Infinity).map(text), ["e4", "again5", "e6"]);
    });

    test("durable storages keep everything synced across a restart", async (t) => {
      const f = await make();
      try {
        if (!f.reopen) {
          t.skip(`${name} is not durable`);
          return;
        }
        f.storage.append(ents(1, 8, (i) => (i < 5 ? 1 : 2)));
        f.storage.setHardState({ term: 2, vote: "a", commit: 6 });
        f.storage.compact(snap(4, 1), 1);
        f.storage.append([ent(8, 3, "replaced8"), ent(9, 3)]);
        await f.storage.sync();
        const s = await f.reopen();
        assert.deepEqual(s.initialState().hardState, { term: 2, vote: "a", commit: 6 });
        assert.equal(s.snapshot().metadata.index, 4);
        assert.equal(new TextDecoder().decode(s.snapshot().data), "state@4");
        assert.ok(s.firstIndex() <= 5, `first index ${s.firstIndex()} must not pass the snapshot`);
        assert.equal(s.lastIndex(), 9);
        assert.equal(s.term(4), 1);
        assert.deepEqual(s.entries(5, 10, Infinity).map(text), ["e5", "e6", "e7", "replaced8", "e9"]);
        assert.deepEqual(
          [5, 6, 7, 8, 9].map((i) => s.term(i)),
          [2, 2, 2, 3, 3],
        );
      } finally {
        await f.cleanup();
      }
    });

    test("entries kept behind a snapshot and those after it are all there after a restart", async (t) => {
      const f = await make();
      try {
        if (!f.reopen) {
          t.skip(`${name} is not durable`);
          return;
        }
        const term = (i: number) => (i <= 10 ? 1 : i <= 20 ? 2 : 3);
        f.storage.append(ents(1, 30, term));
        f.storage.setHardState({ term: 3, vote: "b", commit: 25 });
        f.storage.compact(snap(12, 2), 5); // keeps 8..12 for slow followers
        f.storage.append(ents(31, 33, () => 3));
        await f.storage.sync();
        const before = { first: f.storage.firstIndex(), last: f.storage.lastIndex() };
        assert.deepEqual(before, { first: 8, last: 33 });
        let s = await f.reopen();
        assert.deepEqual({ first: s.firstIndex(), last: s.lastIndex() }, before);
        assert.equal(s.term(7), 1, "the term just before the kept entries is known");
        assert.deepEqual(
          s.entries(8, 34, Infinity).map((e) => [e.index, e.term, text(e)]),
          ents(8, 33, term).map((e) => [e.index, e.term, text(e)]),
        );
        assert.equal(s.snapshot().metadata.index, 12);
        // A second compaction moves the kept window; a restart follows it.
        s.compact(snap(25, 3), 3);
        await s.sync();
        s = await f.reopen();
        assert.equal(s.firstIndex(), 23);
        assert.equal(s.term(22), 3);
        assert.equal(s.lastIndex(), 33);
        assert.deepEqual(
          indexes(s.entries(23, 34, Infinity)),
          ents(23, 33).map((e) => e.index),
        );
        // Without kept entries the log starts right after the snapshot, as before.
        s.setHardState({ term: 3, vote: "b", commit: 30 });
        s.compact(snap(30, 3), 0);
        await s.sync();
        s = await f.reopen();
        assert.equal(s.firstIndex(), 31);
        assert.equal(s.term(30), 3);
        assert.deepEqual(indexes(s.entries(31, 34, Infinity)), [31, 32, 33]);
      } finally {
        await f.cleanup();
      }
    });
  });
}
