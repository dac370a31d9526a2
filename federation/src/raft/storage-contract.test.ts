// Runs the storage contract against every WritableStorage, then the WAL's own failure cases:
// torn tails, flipped bytes, crashes between sync points, and snapshot atomicity.
import assert from "node:assert/strict";
import {
  appendFileSync,
  cpSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { RaftLogger } from "./logger.js";
import { writeSnapshotFile } from "./snapshot-file.js";
import { ent, ents, type StorageFixture, snap, storageContract } from "./storage-contract.js";
import type { WritableStorage } from "./types.js";
import { WalCorruptionError } from "./wal-segment.js";
import { WalStorage, type WalStorageOptions } from "./wal-storage.js";

/** 1 MiB segments: the default 64 MiB would have every test preallocate 64 MiB of zeros. */
const SMALL: WalStorageOptions = { segmentBytes: 1 << 20 };
/** Without preallocation a segment ends at its last record, so tests can damage "the end". */
const RAW: WalStorageOptions = { segmentBytes: 1 << 20, preallocate: false };

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "raft-wal-"));
}

async function walFixture(opts: WalStorageOptions = {}): Promise<StorageFixture> {
  const dir = tempDir();
  let current: WritableStorage = await WalStorage.open(dir, opts);
  return {
    get storage() {
      return current;
    },
    async reopen() {
      await current.close();
      current = await WalStorage.open(dir, opts);
      return current;
    },
    async cleanup() {
      await current.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

storageContract("WalStorage", () => walFixture(SMALL));
// Tiny segments and cache force rotation, deletion and file reads through the same contract.
storageContract("WalStorage (64-byte segments, 100-byte cache)", () =>
  walFixture({ segmentBytes: 64, cacheBytes: 100 }),
);

/** A logger that remembers warnings, to check that recovery says what it dropped. */
function recordingLogger(): RaftLogger & { warnings: string[] } {
  const warnings: string[] = [];
  return {
    warnings,
    debug() {},
    info() {},
    warn(obj, msg) {
      warnings.push(`${msg} ${JSON.stringify(obj)}`);
    },
    error() {},
  };
}

function segmentFiles(dir: string): string[] {
  return readdirSync(join(dir, "wal"))
    .filter((n) => n.endsWith(".wal"))
    .sort()
    .map((n) => join(dir, "wal", n));
}

/** The newest segment that holds entries (open() always starts a fresh, nearly empty one). */
function lastDataSegment(dir: string): string {
  const files = segmentFiles(dir);
  return files.filter((f) => statSync(f).size > 64).pop()!;
}

const text = (s: WritableStorage, lo: number, hi: number) =>
  s.entries(lo, hi, Infinity).map((e) => new TextDecoder().decode(e.data));

describe("WalStorage on disk", () => {
  test("segments rotate by size, reopen reads every entry back, compaction removes old segments", async () => {
    const dir = tempDir();
    try {
      const opts = { segmentBytes: 512, cacheBytes: 256 };
      let s = await WalStorage.open(dir, opts);
      s.append(ents(1, 200));
      s.setHardState({ term: 1, vote: "a", commit: 150 });
      await s.sync();
      const rotated = s.stats().segments;
      assert.ok(rotated > 5, `expected many segments, got ${rotated}`);
      assert.ok(s.stats().cacheBytes <= 256);
      assert.deepEqual(text(s, 1, 4), ["e1", "e2", "e3"], "old entries are read back from their files");
      await s.close();

      s = await WalStorage.open(dir, opts);
      assert.equal(s.lastIndex(), 200);
      assert.deepEqual(text(s, 99, 102), ["e99", "e100", "e101"]);
      s.compact(snap(150, 1), 10);
      await s.sync();
      assert.ok(s.stats().segments < rotated, "segments below the compaction point are deleted");
      assert.equal(s.firstIndex(), 141);
      await s.close();

      s = await WalStorage.open(dir, opts);
      assert.deepEqual(s.initialState().hardState, { term: 1, vote: "a", commit: 150 });
      assert.equal(s.snapshot().metadata.index, 150);
      assert.equal(s.lastIndex(), 200);
      assert.deepEqual(text(s, 151, 153), ["e151", "e152"]);
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("writes move to preallocated segments; finished ones are cut to their records", async () => {
    const dir = tempDir();
    try {
      let s = await WalStorage.open(dir, { segmentBytes: 4096 });
      await new Promise((r) => setTimeout(r, 200)); // the spare is written off the write path
      s.append(ents(1, 80)); // ~2.3 KiB: past half the segment, so the next spare is prepared
      await s.sync();
      await new Promise((r) => setTimeout(r, 200));
      s.append(ents(81, 200)); // crosses into the next segment
      await s.sync();
      const files = segmentFiles(dir);
      assert.ok(files.length >= 2, `segments: ${files.length}`);
      assert.equal(statSync(files.at(-1)!).size, 4096, "the current segment was preallocated");
      for (const f of files.slice(0, -1)) {
        const buf = readFileSync(f);
        assert.ok(
          buf.length < 4096 + 64,
          `${f} holds at most one record past the limit (${buf.length} bytes)`,
        );
      }
      await s.close();
      s = await WalStorage.open(dir, { segmentBytes: 4096 });
      assert.equal(s.lastIndex(), 200);
      assert.deepEqual(text(s, 198, 201), ["e198", "e199", "e200"]);
      await s.close();
      assert.ok(!readdirSync(join(dir, "wal")).some((n) => n.endsWith(".tmp")), "close removes the spare");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("entries not yet synced are readable even when evicted from the cache", async () => {
    const dir = tempDir();
    try {
      const s = await WalStorage.open(dir, { cacheBytes: 80 });
      s.append(ents(1, 50));
      assert.ok(s.stats().cachedEntries < 50);
      assert.deepEqual(text(s, 1, 3), ["e1", "e2"]);
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a hard state whose record fills a segment survives a restart (the next segment's copy is current)", async () => {
    for (const sync of ["sync", "syncBlocking"] as const) {
      const dir = tempDir();
      try {
        // 64-byte segments: every record rotates, so the hard state's record always fills one.
        const s = await WalStorage.open(dir, { segmentBytes: 64, preallocate: false });
        s.append(ents(1, 4));
        s.setHardState({ term: 3, vote: "a", commit: 2 });
        if (sync === "sync") await s.sync();
        else s.syncBlocking();
        await s.close();
        const r = await WalStorage.open(dir, { segmentBytes: 64, preallocate: false });
        assert.deepEqual(r.initialState().hardState, { term: 3, vote: "a", commit: 2 }, sync);
        await r.close();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  test("syncBlocking() writes everything out before it returns, and refuses to run beside sync()", async () => {
    const dir = tempDir();
    try {
      // 64-byte segments: these writes rotate, so the directory needs its fsync as well.
      const s = await WalStorage.open(dir, { segmentBytes: 64, preallocate: false });
      s.append(ents(1, 4));
      s.setHardState({ term: 1, vote: "a", commit: 2 });
      s.syncBlocking();
      // What a crash right after it would find (the files as they stand, storage still open).
      const copy = tempDir();
      try {
        cpSync(dir, copy, { recursive: true });
        const r = await WalStorage.open(copy, { segmentBytes: 64, preallocate: false });
        assert.deepEqual(text(r, 1, 5), ["e1", "e2", "e3", "e4"]);
        assert.equal(r.initialState().hardState.commit, 2);
        await r.close();
      } finally {
        rmSync(copy, { recursive: true, force: true });
      }
      s.append([ent(5, 1, "e5")]);
      const inFlight = s.sync();
      assert.throws(() => s.syncBlocking(), /while a sync\(\) is in flight/);
      await inFlight;
      s.append([ent(6, 1, "e6")]);
      s.syncBlocking();
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a torn tail is truncated with a warning and the log keeps working", async () => {
    const dir = tempDir();
    try {
      let s = await WalStorage.open(dir, RAW);
      s.append(ents(1, 10));
      await s.close();
      const seg = lastDataSegment(dir);
      truncateSync(seg, statSync(seg).size - 3); // the last record loses its final bytes
      const log = recordingLogger();
      s = await WalStorage.open(dir, { ...RAW, logger: log });
      assert.equal(s.lastIndex(), 9, "the torn entry is not accepted");
      assert.equal(log.warnings.length, 1);
      assert.match(log.warnings[0]!, /torn tail/);
      assert.match(log.warnings[0]!, new RegExp(seg.split("/").pop()!));
      s.append([ent(10, 2, "rewritten")]);
      await s.close();
      s = await WalStorage.open(dir, RAW);
      assert.deepEqual(text(s, 9, 11), ["e9", "rewritten"]);
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("zeros after the last record (a grown but unwritten file) are a tail, not data", async () => {
    const dir = tempDir();
    try {
      let s = await WalStorage.open(dir, RAW);
      s.append(ents(1, 4));
      await s.close();
      appendFileSync(lastDataSegment(dir), Buffer.alloc(100));
      s = await WalStorage.open(dir, RAW);
      assert.equal(s.lastIndex(), 4);
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a torn final record followed by preallocated zeros is a tail; data after it is not", async () => {
    const dir = tempDir();
    try {
      let s = await WalStorage.open(dir, RAW);
      s.append(ents(1, 6));
      await s.close();
      const seg = lastDataSegment(dir);
      const buf = readFileSync(seg);
      const torn = Buffer.concat([buf.subarray(0, buf.length - 4), Buffer.alloc(4), Buffer.alloc(4096)]);
      writeFileSync(seg, torn);
      s = await WalStorage.open(dir, RAW);
      assert.equal(s.lastIndex(), 5, "the half-written entry 6 is dropped");
      await s.close();
      // The same damage with a record after it is corruption, not a tail.
      const dir2 = tempDir();
      try {
        const s2 = await WalStorage.open(dir2, RAW);
        s2.append(ents(1, 6));
        await s2.close();
        const seg2 = lastDataSegment(dir2);
        const b2 = readFileSync(seg2);
        b2[b2.length - 40]! ^= 0xff;
        writeFileSync(seg2, Buffer.concat([b2, Buffer.alloc(100)]));
        await assert.rejects(WalStorage.open(dir2, RAW), WalCorruptionError);
      } finally {
        rmSync(dir2, { recursive: true, force: true });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("an unwritten sector inside the unsynced tail truncates there, even with data after it", async () => {
    const dir = tempDir();
    try {
      let s = await WalStorage.open(dir, RAW);
      s.append(ents(1, 5));
      await s.sync();
      const seg = lastDataSegment(dir);
      const synced = statSync(seg).size;
      s.append([ent(6, 1, "x".repeat(2000)), ent(7, 1), ent(8, 1)]);
      await s.close();
      const buf = readFileSync(seg);
      const sector = Math.ceil((synced + 100) / 512) * 512; // inside entry 6's data
      buf.fill(0, sector, sector + 512);
      writeFileSync(seg, buf);
      s = await WalStorage.open(dir, RAW);
      assert.equal(s.lastIndex(), 5, "entry 6 was torn; 7 and 8 behind it are dropped with it");
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a flipped byte in the final record is detected and that record dropped", async () => {
    const dir = tempDir();
    try {
      let s = await WalStorage.open(dir, RAW);
      s.append(ents(1, 6));
      await s.close();
      const seg = lastDataSegment(dir);
      const buf = readFileSync(seg);
      buf[buf.length - 1]! ^= 0x40;
      writeFileSync(seg, buf);
      s = await WalStorage.open(dir, RAW);
      assert.equal(s.lastIndex(), 5);
      assert.deepEqual(text(s, 5, 6), ["e5"]);
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a flipped byte in the middle of the log is a hard error naming file and offset", async () => {
    const dir = tempDir();
    try {
      const s = await WalStorage.open(dir, RAW);
      s.append(ents(1, 6));
      await s.close();
      const seg = lastDataSegment(dir);
      const buf = readFileSync(seg);
      const at = Math.floor(buf.length / 2);
      buf[at]! ^= 0x01;
      writeFileSync(seg, buf);
      await assert.rejects(WalStorage.open(dir, RAW), (err: unknown) => {
        assert.ok(err instanceof WalCorruptionError, String(err));
        assert.equal(err.file, seg);
        assert.ok(err.offset <= at && err.offset > 0);
        assert.match(err.message, new RegExp(`${seg.split("/").pop()} at offset ${err.offset}`));
        return true;
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("corruption in an older segment is a hard error even at its end", async () => {
    const dir = tempDir();
    try {
      const s = await WalStorage.open(dir, { segmentBytes: 256 });
      s.append(ents(1, 40));
      await s.close();
      const first = segmentFiles(dir)[0]!;
      truncateSync(first, statSync(first).size - 2);
      await assert.rejects(WalStorage.open(dir, { segmentBytes: 256 }), WalCorruptionError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a crash at any byte after the last sync keeps every synced entry and never a torn one", async () => {
    const dir = tempDir();
    try {
      const s = await WalStorage.open(dir, RAW);
      s.append(ents(1, 5));
      s.setHardState({ term: 1, vote: "a", commit: 3 });
      await s.sync();
      const seg = lastDataSegment(dir);
      const syncedSize = statSync(seg).size;
      s.append([ent(6, 1, "unsynced-6"), ent(7, 1, "unsynced-7")]);
      s.setHardState({ term: 1, vote: "a", commit: 5 });
      await s.close();
      const fullSize = statSync(seg).size;
      // Every possible cut between the synced point and the end: a crash may persist any prefix.
      for (let cut = syncedSize; cut <= fullSize; cut++) {
        const copy = tempDir();
        try {
          cpSync(dir, copy, { recursive: true });
          truncateSync(join(copy, "wal", seg.split("/").pop()!), cut);
          const r = await WalStorage.open(copy, RAW);
          assert.ok(r.lastIndex() >= 5 && r.lastIndex() <= 7, `cut ${cut}: last ${r.lastIndex()}`);
          const all = text(r, 1, r.lastIndex() + 1);
          assert.deepEqual(all.slice(0, 5), ["e1", "e2", "e3", "e4", "e5"]);
          if (r.lastIndex() >= 6) assert.equal(all[5], "unsynced-6");
          assert.ok([3, 5].includes(r.initialState().hardState.commit));
          await r.close();
        } finally {
          rmSync(copy, { recursive: true, force: true });
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a half-written snapshot temp file is ignored and removed; the previous snapshot stays", async () => {
    const dir = tempDir();
    try {
      let s = await WalStorage.open(dir, SMALL);
      s.append(ents(1, 10));
      s.setHardState({ term: 1, vote: "", commit: 10 });
      s.compact(snap(5, 1), 0);
      await s.close();
      writeFileSync(join(dir, "snap", "0000000000000009-0000000000000001.snap.tmp"), "partial");
      s = await WalStorage.open(dir, SMALL);
      assert.equal(s.snapshot().metadata.index, 5);
      assert.deepEqual(
        readdirSync(join(dir, "snap")).filter((n) => n.endsWith(".tmp")),
        [],
      );
      assert.deepEqual(text(s, 6, 11).length, 5);
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a snapshot file made durable just before a crash (marker lost) is used on restart", async () => {
    const dir = tempDir();
    try {
      let s = await WalStorage.open(dir, SMALL);
      s.append(ents(1, 10));
      await s.close();
      writeSnapshotFile(join(dir, "snap"), snap(7, 1));
      s = await WalStorage.open(dir, SMALL);
      assert.equal(s.snapshot().metadata.index, 7);
      assert.equal(s.firstIndex(), 8);
      assert.deepEqual(text(s, 8, 11), ["e8", "e9", "e10"]);
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a damaged snapshot file stops start-up with its name", async () => {
    const dir = tempDir();
    try {
      const s = await WalStorage.open(dir, SMALL);
      s.append(ents(1, 4));
      s.setHardState({ term: 1, vote: "", commit: 4 });
      s.compact(snap(3, 1), 0);
      await s.close();
      const name = readdirSync(join(dir, "snap"))[0]!;
      const f = join(dir, "snap", name);
      const buf = readFileSync(f);
      buf[buf.length - 2]! ^= 0xff;
      writeFileSync(f, buf);
      await assert.rejects(WalStorage.open(dir, SMALL), new RegExp(`${name} is damaged: checksum mismatch`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("compactAsync: appends go on while the file is written; then it compacts as compact does", async () => {
    const dir = tempDir();
    try {
      let s = await WalStorage.open(dir, SMALL);
      s.append(ents(1, 10));
      s.setHardState({ term: 1, vote: "", commit: 10 });
      const writing = s.compactAsync(snap(8, 1), 2);
      // Until the file is durable the storage reads as before (entries 1.. still held).
      assert.equal(s.snapshot().metadata.index, 0);
      assert.equal(s.firstIndex(), 1);
      s.append(ents(11, 12));
      await s.sync();
      await assert.rejects(s.compactAsync(snap(9, 1), 0), /already being written/);
      await writing;
      assert.equal(s.snapshot().metadata.index, 8);
      assert.equal(s.firstIndex(), 7, "two entries kept behind the snapshot");
      assert.deepEqual(text(s, 7, 13), ["e7", "e8", "e9", "e10", "e11", "e12"]);
      await s.close();
      s = await WalStorage.open(dir, SMALL);
      assert.equal(s.snapshot().metadata.index, 8);
      assert.equal(new TextDecoder().decode(s.snapshot().data), "state@8");
      assert.equal(s.firstIndex(), 7);
      assert.deepEqual(text(s, 7, 13), ["e7", "e8", "e9", "e10", "e11", "e12"]);
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("compactAsync: close waits for the snapshot being written; a stale one is dropped", async () => {
    const dir = tempDir();
    try {
      let s = await WalStorage.open(dir, SMALL);
      s.append(ents(1, 10));
      s.setHardState({ term: 1, vote: "", commit: 10 });
      void s.compactAsync(snap(5, 1), 0);
      await s.close();
      s = await WalStorage.open(dir, SMALL);
      assert.equal(s.snapshot().metadata.index, 5);
      assert.deepEqual(text(s, 6, 11), ["e6", "e7", "e8", "e9", "e10"]);
      // A leader's newer snapshot stored while ours was being written wins; ours leaves no file.
      const writing = s.compactAsync(snap(7, 1), 0);
      s.applySnapshot(snap(9, 1));
      await writing;
      assert.equal(s.snapshot().metadata.index, 9);
      assert.deepEqual(readdirSync(join(dir, "snap")), ["0000000000000009-0000000000000001.snap"]);
      await s.close();
      await assert.rejects(s.compactAsync(snap(10, 1), 0), /closed/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("compact refuses a snapshot beyond the durable commit index", async () => {
    const dir = tempDir();
    try {
      const s = await WalStorage.open(dir, SMALL);
      s.append(ents(1, 4, () => 2));
      s.setHardState({ term: 2, vote: "", commit: 2 });
      assert.throws(() => s.compact(snap(3, 2), 0), /beyond the commit index 2/);
      assert.equal(s.snapshot().metadata.index, 0);
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a snapshot that replaced the log stays replaced after restart, whichever segments remain", async () => {
    const dir = tempDir();
    try {
      // One entry per segment: the segments holding 1..20 are deleted, those holding the
      // discarded 21..30 remain and replay first; the marker must still discard them.
      let s = await WalStorage.open(dir, { segmentBytes: 64 });
      s.append(ents(1, 30, () => 1));
      s.setHardState({ term: 1, vote: "", commit: 10 });
      s.applySnapshot(snap(20, 5));
      await s.close();
      s = await WalStorage.open(dir, { segmentBytes: 64 });
      assert.equal(s.firstIndex(), 21);
      assert.equal(s.lastIndex(), 20, "the conflicting entries 21..30 must not come back");
      assert.equal(s.term(20), 5);
      s.append(ents(21, 22, () => 5));
      await s.close();
      s = await WalStorage.open(dir, { segmentBytes: 64 });
      assert.deepEqual(
        s.entries(21, 23, Infinity).map((e) => e.term),
        [5, 5],
      );
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("entries after an applied snapshot survive restart; the stale log before it does not", async () => {
    const dir = tempDir();
    try {
      let s = await WalStorage.open(dir, { segmentBytes: 200 });
      s.append(ents(1, 30, () => 1));
      s.applySnapshot(snap(20, 5)); // conflicts: the whole log goes
      s.append(ents(21, 25, () => 5));
      await s.close();
      s = await WalStorage.open(dir, { segmentBytes: 200 });
      assert.equal(s.firstIndex(), 21);
      assert.equal(s.lastIndex(), 25);
      assert.equal(s.term(20), 5);
      assert.equal(s.term(25), 5);
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
