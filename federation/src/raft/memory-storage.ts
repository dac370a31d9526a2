// In-memory WritableStorage for tests and the deterministic simulation. Writes land in a "written"
// view at once and become durable only at sync(); crash() throws away everything written since the
// last sync, which is how the simulation models a power loss.

import { RaftInvariantError } from "./errors.js";
import { limitSize } from "./log.js";
import {
  CompactedError,
  type ConfState,
  type Entry,
  type HardState,
  type Snapshot,
  UnavailableError,
  type WritableStorage,
} from "./types.js";

interface StorageState {
  hardState: HardState;
  snapshot: Snapshot;
  /** ents[0] is a dummy holding the snapshot's index and term. */
  ents: Entry[];
}

function emptySnapshot(): Snapshot {
  return {
    metadata: { index: 0, term: 0, confState: { voters: [], learners: [], votersOutgoing: [] } },
    data: new Uint8Array(0),
  };
}

function copyState(s: StorageState): StorageState {
  // Entries and snapshots are treated as immutable, so a shallow copy of the array suffices.
  return { hardState: { ...s.hardState }, snapshot: s.snapshot, ents: s.ents.slice() };
}

export interface MemoryStorageOptions {
  /** Most entries kept in memory; append beyond it throws (compact first). Default 10 million. */
  maxEntries?: number;
}

export class MemoryStorage implements WritableStorage {
  private state: StorageState;
  private durable: StorageState;
  private closed = false;
  private readonly maxEntries: number;

  constructor(opts: MemoryStorageOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 10_000_000;
    this.state = {
      hardState: { term: 0, vote: "", commit: 0 },
      snapshot: emptySnapshot(),
      ents: [{ term: 0, index: 0, type: 1, data: new Uint8Array(0) }],
    };
    this.durable = copyState(this.state);
  }

  /** A storage holding a snapshot (e.g. a cluster bootstrapped from one). */
  static fromSnapshot(snap: Snapshot, opts?: MemoryStorageOptions): MemoryStorage {
    const s = new MemoryStorage(opts);
    s.applySnapshot(snap);
    s.durable = copyState(s.state);
    return s;
  }

  initialState(): { hardState: HardState; confState: ConfState } {
    const cs = this.state.snapshot.metadata.confState;
    return {
      hardState: { ...this.state.hardState },
      confState: {
        voters: cs.voters.slice(),
        learners: cs.learners.slice(),
        votersOutgoing: cs.votersOutgoing.slice(),
      },
    };
  }

  private offset(): number {
    return this.state.ents[0]!.index;
  }

  firstIndex(): number {
    return this.offset() + 1;
  }

  lastIndex(): number {
    return this.offset() + this.state.ents.length - 1;
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    const off = this.offset();
    if (lo <= off) throw new CompactedError(lo, off + 1);
    if (hi > this.lastIndex() + 1) throw new UnavailableError(hi - 1, this.lastIndex());
    if (lo > hi) throw new RangeError(`memory storage: invalid range [${lo}, ${hi})`);
    if (lo === hi) return [];
    return limitSize(this.state.ents.slice(lo - off, hi - off), maxBytes);
  }

  term(i: number): number {
    const off = this.offset();
    if (i < off) throw new CompactedError(i, off + 1);
    if (i > this.lastIndex()) throw new UnavailableError(i, this.lastIndex());
    return this.state.ents[i - off]!.term;
  }

  snapshot(): Snapshot {
    return this.state.snapshot;
  }

  append(entries: Entry[]): void {
    this.checkOpen();
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const last = entries[entries.length - 1]!.index;
    if (last < first) return; // all already compacted
    let ents = entries;
    if (first > ents[0]!.index) ents = ents.slice(first - ents[0]!.index);
    const off = this.offset();
    const at = ents[0]!.index - off;
    if (at > this.state.ents.length) {
      throw new RaftInvariantError(
        `memory storage: gap before appended index ${ents[0]!.index} (last ${this.lastIndex()})`,
      );
    }
    if (at - 1 + ents.length > this.maxEntries) {
      throw new RangeError(
        `memory storage: more than maxEntries (${this.maxEntries}) entries; compact first`,
      );
    }
    // In place: state.ents is never shared with the durable copy (copyState slices it).
    const arr = this.state.ents;
    arr.length = at;
    for (const e of ents) arr.push(e);
  }

  setHardState(hs: HardState): void {
    this.checkOpen();
    this.state.hardState = { ...hs };
  }

  applySnapshot(snap: Snapshot): void {
    this.checkOpen();
    const idx = snap.metadata.index;
    if (idx < this.state.snapshot.metadata.index) {
      throw new RaftInvariantError(
        `memory storage: snapshot ${idx} is older than current ${this.state.snapshot.metadata.index}`,
      );
    }
    const off = this.offset();
    // Keep entries after the snapshot if our log agrees with it at its index.
    let keep: Entry[] = [];
    if (idx <= this.lastIndex() && idx >= off && this.state.ents[idx - off]!.term === snap.metadata.term) {
      keep = this.state.ents.slice(idx - off + 1);
    }
    this.state.snapshot = snap;
    this.state.ents = [{ term: snap.metadata.term, index: idx, type: 1, data: new Uint8Array(0) }, ...keep];
    if (this.state.hardState.commit < idx) this.state.hardState = { ...this.state.hardState, commit: idx };
  }

  compact(snap: Snapshot, keepEntries: number): void {
    this.checkOpen();
    const idx = snap.metadata.index;
    const cur = this.state.snapshot.metadata.index;
    if (idx < cur)
      throw new RaftInvariantError(
        `memory storage: snapshot at ${idx} is older than the current one at ${cur}`,
      );
    if (idx === cur) return;
    if (idx > this.lastIndex()) throw new UnavailableError(idx, this.lastIndex());
    const off0 = this.offset();
    if (idx >= off0 && this.state.ents[idx - off0]!.term !== snap.metadata.term) {
      throw new RaftInvariantError(
        `memory storage: snapshot term ${snap.metadata.term} at ${idx} does not match the log's term ${this.state.ents[idx - off0]!.term}`,
      );
    }
    this.state.snapshot = snap;
    const off = this.offset();
    const newFirstDummy = Math.max(off, idx - Math.max(0, keepEntries));
    this.state.ents = this.state.ents.slice(newFirstDummy - off);
    const d = this.state.ents[0]!;
    this.state.ents[0] = { term: d.term, index: d.index, type: 1, data: new Uint8Array(0) };
  }

  async sync(): Promise<void> {
    this.syncNow();
  }

  /** Synchronous sync for the simulation, which runs without an event loop in its hot path. */
  syncNow(): void {
    this.checkOpen();
    this.durable = copyState(this.state);
  }

  /** Simulated crash: everything written since the last sync is lost. Reopens the storage. */
  crash(): void {
    this.state = copyState(this.durable);
    this.closed = false;
  }

  /** True when writes since the last sync would be lost by crash(). */
  hasUnsynced(): boolean {
    return (
      this.state.ents.length !== this.durable.ents.length ||
      this.state.ents.some((e, k) => e !== this.durable.ents[k]) ||
      this.state.snapshot !== this.durable.snapshot ||
      this.state.hardState.term !== this.durable.hardState.term ||
      this.state.hardState.vote !== this.durable.hardState.vote ||
      this.state.hardState.commit !== this.durable.hardState.commit
    );
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private checkOpen(): void {
    if (this.closed) throw new Error("memory storage: closed");
  }
}
