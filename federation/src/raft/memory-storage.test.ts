// MemoryStorage passes the shared storage contract (a crash-restart keeps exactly what was synced)
// and, for the simulation, loses exactly the writes made after the last sync.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MemoryStorage } from "./memory-storage.js";
import { ent, ents, snap, storageContract } from "./storage-contract.js";

storageContract("MemoryStorage", async () => {
  const storage = new MemoryStorage();
  return {
    storage,
    async reopen() {
      storage.crash();
      return storage;
    },
    async cleanup() {},
  };
});

test("MemoryStorage.crash loses unsynced entries, hard state and snapshots", async () => {
  const s = new MemoryStorage();
  s.append(ents(1, 3));
  s.setHardState({ term: 1, vote: "a", commit: 2 });
  await s.sync();
  assert.equal(s.hasUnsynced(), false);
  s.append([ent(3, 2, "replaced"), ent(4, 2)]);
  s.setHardState({ term: 2, vote: "b", commit: 3 });
  s.compact(snap(2, 1), 0);
  assert.equal(s.hasUnsynced(), true);
  s.crash();
  assert.equal(s.lastIndex(), 3);
  assert.equal(s.firstIndex(), 1);
  assert.equal(s.term(3), 1);
  assert.deepEqual(s.initialState().hardState, { term: 1, vote: "a", commit: 2 });
  assert.equal(s.snapshot().metadata.index, 0);
});

test("MemoryStorage bounds the entries it holds", () => {
  const s = new MemoryStorage({ maxEntries: 5 });
  s.append(ents(1, 5));
  assert.throws(() => s.append([ent(6, 1)]), /maxEntries/);
  s.setHardState({ term: 1, vote: "", commit: 5 });
  s.compact(snap(4, 1), 0);
  s.append([ent(6, 1)]);
  assert.equal(s.lastIndex(), 6);
});
