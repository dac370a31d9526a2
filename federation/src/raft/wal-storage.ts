// raft-ts WAL: WritableStorage on disk. Entries and hard states are appended as checksummed
// records to segment files under `<dir>/wal`; snapshots live in `<dir>/snap`. Memory holds an index
// (term and file position per entry) plus a bounded cache of the newest entries; older entries are
// read back from their segment synchronously. `sync()` is the only durability point.
import {
  closeSync,
  fdatasync,
  fdatasyncSync,
  fsync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  unlinkSync,
  write,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { type RaftLogger, silentRaftLogger } from "./logger.js";
import {
  fsyncDir,
  readLatestSnapshot,
  snapshotFileName,
  writeSnapshotFile,
  writeSnapshotFileAsync,
} from "./snapshot-file.js";
import {
  CompactedError,
  type ConfState,
  type Entry,
  type HardState,
  type Snapshot,
  UnavailableError,
  type WritableStorage,
} from "./types.js";
import {
  decodeRecord,
  encodeRecord,
  RECORD_HEADER_BYTES,
  RecordType,
  WAL_VERSION,
  type WalRecord,
} from "./wal-record.js";
import { allZero, parseSegmentName, scanSegment, segmentName, WalCorruptionError } from "./wal-segment.js";

const fdatasyncAsync = promisify(fdatasync);
const writeAsync = promisify(write);
/** The preallocated next segment, renamed into place at rotation; never replayed. */
const SPARE_NAME = "next-segment.tmp";
const fsyncAsync = promisify(fsync);

export interface WalStorageOptions {
  /** A new segment is started once the current one reaches this size. Default 64 MiB. */
  segmentBytes?: number;
  /** Bound on the in-memory cache of recent entries (data bytes plus a fixed overhead). Default 16 MiB. */
  cacheBytes?: number;
  /** Largest record accepted on write and on read; bigger lengths on disk are corruption. Default 64 MiB. */
  maxRecordBytes?: number;
  /** Fill the next segment file with zeros ahead of time, off the write path. Default true. */
  preallocate?: boolean;
  logger?: RaftLogger;
}

export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
export const DEFAULT_CACHE_BYTES = 16 * 1024 * 1024;
export const DEFAULT_MAX_RECORD_BYTES = 64 * 1024 * 1024;
/** Bytes charged per cached entry beyond its data, so many tiny entries are bounded too. */
const CACHE_ENTRY_OVERHEAD = 64;

interface Segment {
  seq: number;
  path: string;
  fd: number;
  /** Bytes written to the file so far (records still in `pending` are not counted). */
  size: number;
  /** Highest entry index recorded in this segment (0 when none); decides when it may be deleted. */
  maxIndex: number;
  /** Made from a zero-filled spare file (fast fdatasync) rather than grown by appends. */
  preallocated: boolean;
}

export interface WalStats {
  segments: number;
  cachedEntries: number;
  cacheBytes: number;
  firstIndex: number;
  lastIndex: number;
}

const emptyConfState = (): ConfState => ({ voters: [], learners: [], votersOutgoing: [] });
const copyConfState = (c: ConfState): ConfState => ({
  voters: [...c.voters],
  learners: [...c.learners],
  votersOutgoing: [...c.votersOutgoing],
});

export class WalStorage implements WritableStorage {
  private readonly walDir: string;
  private readonly snapDir: string;
  private readonly segmentBytes: number;
  private readonly maxCacheBytes: number;
  private readonly maxRecordBytes: number;
  private readonly log: RaftLogger;

  private hardState: HardState = { term: 0, vote: "", commit: 0 };
  private snap: Snapshot = {
    metadata: { index: 0, term: 0, confState: emptyConfState() },
    data: new Uint8Array(),
  };
  /** Index of the first entry held; entry i lives at position i - base of the arrays below. */
  private base = 1;
  /** Term of entry base - 1 (the compaction point). */
  private dummyTerm = 0;
  private terms: number[] = [];
  private segOf: number[] = [];
  private offsets: number[] = [];
  private sizes: number[] = [];

  /** Cache of entries [cacheLow, lastIndex]; Map keeps insertion order, so the oldest goes first. */
  private cache = new Map<number, Entry>();
  private cacheLow = 1;
  private cacheBytesUsed = 0;

  private segments: Segment[] = [];
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private dirtyFds = new Set<number>();
  private dirDirty = false;
  private syncChain: Promise<void> = Promise.resolve();
  /** sync() calls not yet settled (syncBlocking() refuses to run beside them). */
  private syncsInFlight = 0;
  /** The next segment's file, already filled to segmentBytes with zeros (see createSegment). */
  private spare: { path: string; fd: number } | undefined;
  private preparing: Promise<void> = Promise.resolve();
  private spareRequested = false;
  private readonly preallocate: boolean;
  private failed: Error | undefined;
  private closed = false;
  /** A snapshot file being written by compactAsync (at most one at a time). */
  private snapshotWrite: Promise<void> | undefined;
  /** The last snapshot marker replayed at open (recovery only). */
  private lastMarker: Extract<WalRecord, { type: RecordType.SnapshotMarker }> | undefined;

  private constructor(dir: string, opts: WalStorageOptions) {
    this.walDir = join(dir, "wal");
    this.snapDir = join(dir, "snap");
    this.segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    this.maxCacheBytes = opts.cacheBytes ?? DEFAULT_CACHE_BYTES;
    this.maxRecordBytes = opts.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
    this.log = opts.logger ?? silentRaftLogger;
    this.preallocate = opts.preallocate ?? true;
    for (const [k, v] of Object.entries({
      segmentBytes: this.segmentBytes,
      cacheBytes: this.maxCacheBytes,
      maxRecordBytes: this.maxRecordBytes,
    })) {
      if (!Number.isSafeInteger(v) || v <= 0)
        throw new RangeError(`raft wal: option ${k} must be a positive integer, got ${v}`);
    }
  }

  /** Opens (creating if needed) the storage in `dir`, replaying and checking everything on disk. */
  static async open(dir: string, opts: WalStorageOptions = {}): Promise<WalStorage> {
    const s = new WalStorage(dir, opts);
    const nextSeq = s.recover();
    s.startFirstSegment(nextSeq, s.snap.metadata.index);
    // Start-up does not wait for 64 MiB of zeros: the first segment is a plain file, and writing
    // moves to a preallocated one as soon as it is ready (see writeRecord).
    s.prepareSpare();
    return s;
  }

  // ---- Storage (synchronous reads) ----

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: { ...this.hardState }, confState: copyConfState(this.snap.metadata.confState) };
  }

  firstIndex(): number {
    return this.base;
  }

  lastIndex(): number {
    return this.base + this.terms.length - 1;
  }

  term(i: number): number {
    if (i === this.base - 1) return this.dummyTerm;
    if (i < this.base - 1) throw new CompactedError(i, this.base);
    if (i > this.lastIndex()) throw new UnavailableError(i, this.lastIndex());
    return this.terms[i - this.base]!;
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    this.checkUsable();
    if (lo < this.base) throw new CompactedError(lo, this.base);
    if (hi > this.lastIndex() + 1) throw new UnavailableError(hi - 1, this.lastIndex());
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.entryAt(i);
      bytes += e.data.byteLength; // payload bytes, as the core's entrySize counts
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  // ---- WritableStorage ----

  append(entries: Entry[]): void {
    this.checkUsable();
    let es = entries;
    if (es.length === 0) return;
    if (es[0]!.index < this.base) es = es.filter((e) => e.index >= this.base);
    if (es.length === 0) return;
    for (let k = 1; k < es.length; k++) {
      if (es[k]!.index !== es[k - 1]!.index + 1) {
        throw new Error(
          `raft wal: append batch is not contiguous (${es[k - 1]!.index} then ${es[k]!.index})`,
        );
      }
    }
    const first = es[0]!.index;
    if (first > this.lastIndex() + 1) {
      throw new Error(
        `raft wal: append at index ${first} would leave a gap after last index ${this.lastIndex()}`,
      );
    }
    this.truncateFrom(first);
    for (const e of es) {
      const rec = encodeRecord({ type: RecordType.Entry, entry: e });
      if (rec.length - RECORD_HEADER_BYTES > this.maxRecordBytes) {
        throw new Error(
          `raft wal: entry ${e.index} is ${e.data.byteLength} bytes, over the record limit of ${this.maxRecordBytes}`,
        );
      }
      const at = this.writeRecord(rec, e.index);
      this.pushIndex(e.term, at.seq, at.offset, rec.length);
      this.cacheEntry(e);
    }
  }

  setHardState(hs: HardState): void {
    this.checkUsable();
    // Set first: when this record fills the segment, the next one opens with a copy of the hard
    // state, and replay takes that copy last — it must be this one, not the one it replaces.
    this.hardState = { ...hs };
    this.writeRecord(encodeRecord({ type: RecordType.HardState, hardState: hs }), 0);
  }

  applySnapshot(snap: Snapshot): void {
    this.checkUsable();
    const { index, term } = snap.metadata;
    if (index < this.snap.metadata.index) {
      throw new Error(
        `raft wal: snapshot at ${index} is older than the current one at ${this.snap.metadata.index}`,
      );
    }
    // The snapshot file is durable before the marker that refers to it can be.
    writeSnapshotFile(this.snapDir, snap);
    // Our log either holds the snapshot's last entry (the tail after it stays) or is replaced.
    const replaced = !(index >= this.base - 1 && index <= this.lastIndex() && this.term(index) === term);
    const marker = { index, term, keptAfter: { index, term }, replaced };
    this.writeRecord(encodeRecord({ type: RecordType.SnapshotMarker, ...marker }), 0);
    this.snap = snap;
    this.applyMarker(marker);
    // Everything in a snapshot is committed; the stored commit index must not trail it.
    if (this.hardState.commit < index) this.setHardState({ ...this.hardState, commit: index });
    this.deleteObsoleteSegments();
  }

  compact(snap: Snapshot, keepEntries: number): void {
    this.checkCompaction(snap);
    if (snap.metadata.index === this.snap.metadata.index) return; // already compacted this far
    writeSnapshotFile(this.snapDir, snap);
    this.recordCompaction(snap, keepEntries);
  }

  /**
   * compact() with the snapshot file written and fsynced on the thread pool while the caller
   * keeps appending and syncing: until it resolves, snapshot() and firstIndex() stay as they
   * were (every entry after the old snapshot is still held), then the marker is queued and the
   * log is compacted as compact() does. One at a time; a leader's snapshot must not be applied
   * while one is in flight (RaftNode waits for it).
   */
  async compactAsync(snap: Snapshot, keepEntries: number): Promise<void> {
    this.checkCompaction(snap);
    if (this.snapshotWrite) throw new Error("raft wal: a snapshot is already being written");
    if (snap.metadata.index === this.snap.metadata.index) return;
    const write = writeSnapshotFileAsync(this.snapDir, snap).then(() => {
      if (this.failed) return;
      if (snap.metadata.index <= this.snap.metadata.index) {
        // A newer snapshot was stored meanwhile: this one is of no use.
        rmSync(join(this.snapDir, snapshotFileName(snap.metadata)), { force: true });
        return;
      }
      this.recordCompaction(snap, keepEntries);
    });
    this.snapshotWrite = write;
    try {
      await write;
    } finally {
      this.snapshotWrite = undefined;
    }
  }

  /** Throws unless `snap` may compact the log (it is at or after the current one, committed, in the log). */
  private checkCompaction(snap: Snapshot): void {
    this.checkUsable();
    const { index, term } = snap.metadata;
    if (index < this.snap.metadata.index) {
      throw new Error(
        `raft wal: snapshot at ${index} is older than the current one at ${this.snap.metadata.index}`,
      );
    }
    if (index === this.snap.metadata.index) return; // already compacted this far
    if (index > this.lastIndex()) throw new UnavailableError(index, this.lastIndex());
    if (index > this.hardState.commit) {
      throw new Error(`raft wal: snapshot at ${index} is beyond the commit index ${this.hardState.commit}`);
    }
    if (this.term(index) !== term) {
      throw new Error(
        `raft wal: snapshot at ${index} has term ${term} but the log has term ${this.term(index)}`,
      );
    }
  }

  /** With the snapshot file durable: queues its marker and drops the entries it covers. */
  private recordCompaction(snap: Snapshot, keepEntries: number): void {
    const { index, term } = snap.metadata;
    const newBase = Math.min(index + 1, Math.max(this.base, index - Math.max(0, keepEntries) + 1));
    // The marker says where the kept log starts, so a restart reloads the entries kept for slow
    // followers instead of starting right after the snapshot.
    const keptAfter = { index: newBase - 1, term: this.term(newBase - 1) };
    this.writeRecord(
      encodeRecord({ type: RecordType.SnapshotMarker, index, term, keptAfter, replaced: false }),
      0,
    );
    this.snap = snap;
    if (newBase > this.base) {
      this.dummyTerm = keptAfter.term;
      this.dropBefore(newBase);
    }
    this.deleteObsoleteSegments();
  }

  sync(): Promise<void> {
    // Calls queue behind one another so each returns only after its own writes are durable; a
    // call made while an fsync runs picks up everything appended meanwhile (group commit).
    this.syncsInFlight++;
    const p = this.syncChain.then(() => this.doSync()).finally(() => this.syncsInFlight--);
    this.syncChain = p.catch(() => {});
    return p;
  }

  /**
   * The same durability point as sync(), on the calling thread: for a lone small write, skipping
   * the thread pool's two hand-offs (there and back) is worth more than the overlap it buys.
   */
  syncBlocking(): void {
    this.checkUsable();
    if (this.syncsInFlight > 0)
      throw new Error("raft wal: syncBlocking() called while a sync() is in flight");
    try {
      this.flushPending();
      for (const fd of this.dirtyFds) fdatasyncSync(fd);
      this.dirtyFds.clear();
      if (this.dirDirty) {
        this.dirDirty = false;
        fsyncDir(this.walDir);
      }
    } catch (err) {
      this.failed = err as Error;
      this.log.error({ err }, "raft wal: fsync failed; storage is now unusable");
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // A snapshot being written finishes first (its marker then goes out with the last sync).
    await this.snapshotWrite?.catch(() => undefined);
    if (!this.failed) await this.sync();
    this.closed = true;
    await this.preparing;
    if (this.spare) {
      closeSync(this.spare.fd);
      unlinkSync(this.spare.path);
      this.spare = undefined;
    }
    for (const s of this.segments) closeSync(s.fd);
    this.segments = [];
    this.cache.clear();
  }

  stats(): WalStats {
    return {
      segments: this.segments.length,
      cachedEntries: this.cache.size,
      cacheBytes: this.cacheBytesUsed,
      firstIndex: this.firstIndex(),
      lastIndex: this.lastIndex(),
    };
  }

  // ---- internals ----

  private checkUsable(): void {
    if (this.closed) throw new Error("raft wal: storage is closed");
    if (this.failed)
      throw new Error(`raft wal: storage failed earlier and cannot be used: ${this.failed.message}`);
  }

  private async doSync(): Promise<void> {
    this.checkUsable();
    try {
      this.flushPending();
      const fds = [...this.dirtyFds];
      this.dirtyFds.clear();
      const dir = this.dirDirty;
      this.dirDirty = false;
      await Promise.all(fds.map((fd) => fdatasyncAsync(fd)));
      if (dir) {
        const fd = openSync(this.walDir, "r");
        try {
          await fsyncAsync(fd);
        } finally {
          closeSync(fd);
        }
      }
    } catch (err) {
      // After a failed fsync the kernel may have dropped the dirty pages; retrying would report
      // success for data that is gone, so the storage refuses all further use.
      this.failed = err as Error;
      this.log.error({ err }, "raft wal: fsync failed; storage is now unusable");
      throw err;
    }
  }

  private get current(): Segment {
    return this.segments[this.segments.length - 1]!;
  }

  /** Queues a record for the current segment; returns where it will sit. */
  private writeRecord(rec: Buffer, entryIndex: number): { seq: number; offset: number } {
    if (this.spare && !this.current.preallocated) this.rotate();
    const cur = this.current;
    const offset = cur.size + this.pendingBytes;
    this.pending.push(rec);
    this.pendingBytes += rec.length;
    if (entryIndex > cur.maxIndex) cur.maxIndex = entryIndex;
    if (offset + rec.length >= this.segmentBytes) this.rotate();
    return { seq: cur.seq, offset };
  }

  private flushPending(): void {
    if (this.pendingBytes === 0) return;
    const cur = this.current;
    const buf = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    let off = 0;
    while (off < buf.length) off += writeSync(cur.fd, buf, off, buf.length - off, cur.size + off);
    cur.size += buf.length;
    this.pending = [];
    this.pendingBytes = 0;
    this.dirtyFds.add(cur.fd);
    // Fill the next segment's file once this one is half used: early enough to be ready at
    // rotation, late enough not to compete with a fresh node's first fsyncs.
    if (!this.spare && cur.size >= this.segmentBytes / 2) this.prepareSpare();
  }

  private rotate(): void {
    // Only the newest segment may end torn after a crash, so the old one is cut to its records
    // (dropping preallocated zeros) and made whole on disk before the next one can exist.
    this.flushPending();
    ftruncateSync(this.current.fd, this.current.size);
    fsyncSync(this.current.fd);
    this.dirtyFds.delete(this.current.fd);
    this.createSegment(this.current.seq + 1);
  }

  /**
   * Starts a segment: a header, then the current hard state so deleting older segments loses none.
   * It takes the preallocated spare file when one is ready: writes inside an already-sized file
   * let fdatasync skip the file-size metadata update, which roughly halves its latency.
   */
  private createSegment(seq: number): void {
    const path = join(this.walDir, segmentName(seq));
    let fd: number;
    const spare = this.spare;
    if (spare) {
      this.spare = undefined;
      renameSync(spare.path, path);
      fd = spare.fd;
    } else {
      fd = openSync(path, "wx+");
    }
    this.segments.push({ seq, path, fd, size: 0, maxIndex: 0, preallocated: spare !== undefined });
    this.dirDirty = true;
    this.pending.push(encodeRecord({ type: RecordType.SegmentHeader, version: WAL_VERSION, seq }));
    this.pending.push(encodeRecord({ type: RecordType.HardState, hardState: this.hardState }));
    this.pendingBytes = this.pending.reduce((n, b) => n + b.length, 0);
  }

  private prepareSpare(): void {
    if (!this.preallocate || this.closed || this.spareRequested) return;
    this.spareRequested = true;
    this.preparing = this.preparing.then(async () => {
      if (this.spare || this.closed) return;
      const path = join(this.walDir, SPARE_NAME);
      let fd: number | undefined;
      try {
        fd = openSync(path, "w+");
        const zeros = Buffer.alloc(Math.min(this.segmentBytes, 1 << 20));
        for (let off = 0; off < this.segmentBytes && !this.closed; off += zeros.length) {
          await writeAsync(fd, zeros, 0, Math.min(zeros.length, this.segmentBytes - off), off);
        }
        if (!this.closed) await fdatasyncAsync(fd);
        if (this.closed) {
          closeSync(fd);
          unlinkSync(path);
          return;
        }
        this.spare = { path, fd };
        this.spareRequested = false;
      } catch (err) {
        // Only a slower fsync is lost: the next segment is then created empty when needed.
        this.log.warn(
          { err: (err as Error).message, file: path },
          "raft wal: could not preallocate the next segment",
        );
        if (fd !== undefined) closeSync(fd);
      }
    });
  }

  private deleteObsoleteSegments(): void {
    while (this.segments.length > 1 && this.segments[0]!.maxIndex < this.base) {
      const s = this.segments.shift()!;
      this.dirtyFds.delete(s.fd);
      closeSync(s.fd);
      unlinkSync(s.path);
      this.dirDirty = true;
      this.log.debug({ file: s.path }, "raft wal: removed segment below the compaction point");
    }
  }

  private pushIndex(term: number, seq: number, offset: number, size: number): void {
    this.terms.push(term);
    this.segOf.push(seq);
    this.offsets.push(offset);
    this.sizes.push(size);
  }

  /** Forgets entries >= i (a conflicting suffix being replaced). */
  private truncateFrom(i: number): void {
    const keep = i - this.base;
    if (keep >= this.terms.length) return;
    this.terms.length = keep;
    this.segOf.length = keep;
    this.offsets.length = keep;
    this.sizes.length = keep;
    for (let k = this.cacheLow + this.cache.size - 1; k >= Math.max(i, this.cacheLow); k--) {
      this.cacheBytesUsed -= this.cache.get(k)!.data.byteLength + CACHE_ENTRY_OVERHEAD;
      this.cache.delete(k);
    }
    if (this.cache.size === 0) this.cacheLow = i;
  }

  /** Forgets entries < i (compaction). */
  private dropBefore(i: number): void {
    const n = i - this.base;
    this.terms.splice(0, n);
    this.segOf.splice(0, n);
    this.offsets.splice(0, n);
    this.sizes.splice(0, n);
    this.base = i;
    while (this.cache.size > 0 && this.cacheLow < i) this.evictOldest();
    if (this.cache.size === 0) this.cacheLow = this.lastIndex() + 1;
  }

  /**
   * Replays (or performs) a snapshot marker: the log was replaced by the snapshot, or compacted to
   * it keeping entries from keptAfter.index + 1 on. A compaction marker for a snapshot the log
   * has already moved past (replay began after segments that compaction deleted) changes nothing.
   */
  private applyMarker(m: {
    index: number;
    term: number;
    keptAfter?: { index: number; term: number };
    replaced?: boolean;
  }): void {
    const { index, term } = m;
    const inLog = index >= this.base && index <= this.lastIndex() && this.terms[index - this.base] === term;
    if (!m.replaced && inLog) {
      const kept = m.keptAfter ?? { index, term };
      const from = kept.index + 1;
      if (from > this.base) {
        this.dummyTerm = kept.term;
        this.dropBefore(from);
      } else if (from === this.base && Number.isNaN(this.dummyTerm)) {
        // Replay began past deleted segments exactly where the kept log starts.
        this.dummyTerm = kept.term;
      }
      return;
    }
    if (!m.replaced && index === this.base - 1 && (this.dummyTerm === term || Number.isNaN(this.dummyTerm))) {
      // The log already starts right after the snapshot (NaN: replay began past deleted segments).
      this.dummyTerm = term;
      return;
    }
    if (m.replaced === false && m.keptAfter !== undefined && index < this.base - 1 && this.terms.length > 0) {
      // A compaction (never a replacement) of entries this replay no longer holds: the kept log
      // continues past it, written before the marker in segments that outlived the ones deleted.
      return;
    }
    this.terms = [];
    this.segOf = [];
    this.offsets = [];
    this.sizes = [];
    this.cache.clear();
    this.cacheBytesUsed = 0;
    this.base = index + 1;
    this.cacheLow = index + 1;
    this.dummyTerm = term;
  }

  private cacheEntry(e: Entry): void {
    if (this.cache.size === 0) this.cacheLow = e.index;
    this.cache.set(e.index, e);
    this.cacheBytesUsed += e.data.byteLength + CACHE_ENTRY_OVERHEAD;
    while (this.cacheBytesUsed > this.maxCacheBytes && this.cache.size > 1) this.evictOldest();
  }

  private evictOldest(): void {
    const e = this.cache.get(this.cacheLow)!;
    this.cache.delete(this.cacheLow);
    this.cacheBytesUsed -= e.data.byteLength + CACHE_ENTRY_OVERHEAD;
    this.cacheLow++;
  }

  private entryAt(i: number): Entry {
    const cached = this.cache.get(i);
    if (cached) return cached;
    const pos = i - this.base;
    const seq = this.segOf[pos]!;
    const seg = this.segments.find((s) => s.seq === seq);
    if (!seg) throw new Error(`raft wal: entry ${i} points at segment ${seq}, which is gone`);
    const off = this.offsets[pos]!;
    const size = this.sizes[pos]!;
    if (seg === this.current && off + size > seg.size) this.flushPending();
    const buf = Buffer.allocUnsafe(size);
    let got = 0;
    while (got < size) {
      const n = readSync(seg.fd, buf, got, size - got, off + got);
      if (n === 0) break;
      got += n;
    }
    const r = decodeRecord(buf.subarray(0, got), 0, this.maxRecordBytes);
    if (!r.ok) throw new WalCorruptionError(seg.path, off, r.reason);
    if (r.record.type !== RecordType.Entry || r.record.entry.index !== i) {
      throw new WalCorruptionError(seg.path, off, `expected entry ${i}, found a different record`);
    }
    return r.record.entry;
  }

  /** Replays everything on disk; returns the sequence number for the next segment. */
  private recover(): number {
    mkdirSync(this.walDir, { recursive: true });
    mkdirSync(this.snapDir, { recursive: true });
    const loaded = readLatestSnapshot(this.snapDir);
    rmSync(join(this.walDir, SPARE_NAME), { force: true });
    const seqs = readdirSync(this.walDir)
      .map(parseSegmentName)
      .filter((s): s is number => s !== undefined)
      .sort((a, b) => a - b);
    let maxMarker = 0;
    let nextSeq = 0;
    for (const [k, seq] of seqs.entries()) {
      nextSeq = seq + 1;
      const path = join(this.walDir, segmentName(seq));
      const buf = readFileSync(path);
      const scanned = scanSegment(path, buf, seq, k === seqs.length - 1, this.maxRecordBytes);
      if (scanned.tail) {
        // Zeros after the last record are the unused part of a preallocated segment, not damage.
        const zeros = allZero(buf, scanned.tail.offset);
        (zeros ? this.log.debug : this.log.warn).call(
          this.log,
          {
            file: path,
            offset: scanned.tail.offset,
            droppedBytes: buf.length - scanned.tail.offset,
            reason: scanned.tail.reason,
          },
          zeros
            ? "raft wal: trimming unused preallocated space"
            : "raft wal: truncating a torn tail left by a crash",
        );
        const fd = openSync(path, "r+");
        try {
          ftruncateSync(fd, scanned.tail.offset);
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      }
      if (scanned.validBytes === 0) {
        unlinkSync(path);
        continue;
      }
      const seg: Segment = {
        seq,
        path,
        fd: openSync(path, "r"),
        size: scanned.validBytes,
        maxIndex: 0,
        preallocated: false,
      };
      this.segments.push(seg);
      for (const { record, offset, size } of scanned.records) {
        this.replay(record, seg, offset, size, path);
        if (record.type === RecordType.SnapshotMarker) maxMarker = Math.max(maxMarker, record.index);
      }
    }
    if (loaded) {
      this.snap = loaded.snapshot;
    }
    const snapIndex = this.snap.metadata.index;
    if (maxMarker > snapIndex) {
      throw new Error(
        `raft wal: the log refers to a snapshot at index ${maxMarker} but the newest snapshot file in ${this.snapDir} is at ${snapIndex}`,
      );
    }
    // The marker that recorded this snapshot says which entries behind it were kept; without one
    // (its WAL record was lost in a crash) the log starts after the snapshot.
    const marker = this.lastMarker;
    const snapTerm = this.snap.metadata.term;
    if (loaded || this.terms.length === 0) {
      // Replayed already, so only its "keep from" part matters now (never a second replacement).
      if (marker?.keptAfter && marker.index === snapIndex && marker.term === snapTerm)
        this.applyMarker({ index: snapIndex, term: snapTerm, keptAfter: marker.keptAfter, replaced: false });
      else this.applyMarker({ index: snapIndex, term: snapTerm });
    }
    // A snapshot holds only committed entries; the commit index, which is synced lazily, may trail it.
    if (this.hardState.commit < snapIndex) this.hardState = { ...this.hardState, commit: snapIndex };
    if (this.base > snapIndex + 1 || (this.terms.length === 0 && this.base !== snapIndex + 1)) {
      throw new Error(
        `raft wal: entries ${snapIndex + 1}..${this.base - 1} are missing from ${this.walDir} (a segment was lost)`,
      );
    }
    this.cacheLow = this.lastIndex() + 1;
    return nextSeq;
  }

  private startFirstSegment(nextSeq: number, snapIndex: number): void {
    this.createSegment(nextSeq);
    this.flushPending();
    fsyncSync(this.current.fd);
    fsyncDir(this.walDir);
    this.dirtyFds.clear();
    this.dirDirty = false;
    this.log.info(
      {
        dir: this.walDir,
        segments: this.segments.length,
        firstIndex: this.base,
        lastIndex: this.lastIndex(),
        snapshotIndex: snapIndex,
      },
      "raft wal: recovered",
    );
  }

  private replay(rec: WalRecord, seg: Segment, offset: number, size: number, path: string): void {
    switch (rec.type) {
      case RecordType.SegmentHeader:
        if (offset !== 0)
          throw new WalCorruptionError(path, offset, "segment header in the middle of a segment");
        return;
      case RecordType.HardState:
        this.hardState = rec.hardState;
        return;
      case RecordType.SnapshotMarker:
        this.applyMarker(rec);
        this.lastMarker = rec;
        return;
      case RecordType.Entry: {
        const i = rec.entry.index;
        if (i > seg.maxIndex) seg.maxIndex = i;
        if (this.terms.length === 0 || i < this.base || i > this.lastIndex() + 1) {
          // The first entry seen, or one after a gap left by deleted segments: the log restarts
          // here. A gap that matters (entries after the snapshot missing) is caught afterwards.
          this.terms = [];
          this.segOf = [];
          this.offsets = [];
          this.sizes = [];
          this.base = i;
          // Unknown until a snapshot marker or the snapshot file names the term of entry i - 1.
          this.dummyTerm = i === 1 ? 0 : Number.NaN;
        } else {
          this.truncateFrom(i);
        }
        this.pushIndex(rec.entry.term, seg.seq, offset, size);
        return;
      }
    }
  }
}
