// raft-ts: the shared vocabulary of the core, storage and transport. Plain data only, so the pure
// core (raft.ts), the storages (memory, WAL) and the transports (memory, gRPC adapter outside this
// folder) agree without importing one another. Node ids are strings; indexes and terms are
// non-negative safe integers (2^53 is far beyond any log we will hold).

export type NodeId = string;

export enum EntryType {
  Normal = 1,
  ConfChange = 2,
}

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  /** Application command, or an encoded ConfChange for EntryType.ConfChange. Empty for the leader's no-op. */
  data: Uint8Array;
}

export enum ConfChangeType {
  AddVoter = 1,
  RemoveNode = 2,
  AddLearner = 3,
}

export interface ConfChange {
  type: ConfChangeType;
  nodeId: NodeId;
  /** Where the node listens; carried in the log so every member learns it. */
  address: string;
}

export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
  /** Non-empty while a joint configuration (old ∪ new) is in effect. */
  votersOutgoing: NodeId[];
}

export interface HardState {
  term: number;
  /** "" when the node has not voted in `term`. */
  vote: NodeId;
  commit: number;
}

export interface SnapshotMetadata {
  index: number;
  term: number;
  confState: ConfState;
}

export interface Snapshot {
  metadata: SnapshotMetadata;
  /** The state machine's serialized state at metadata.index. */
  data: Uint8Array;
}

export enum MessageType {
  Append = 1,
  AppendResponse = 2,
  Vote = 3,
  VoteResponse = 4,
  PreVote = 5,
  PreVoteResponse = 6,
  Heartbeat = 7,
  HeartbeatResponse = 8,
  Snapshot = 9,
  SnapshotResponse = 10,
  TimeoutNow = 11,
  ReadIndex = 12,
  ReadIndexResponse = 13,
  /** A follower forwarding client proposals to the leader. */
  Propose = 14,
  TransferLeader = 15,
}

export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  logTerm: number;
  index: number;
  entries: Entry[];
  commit: number;
  reject: boolean;
  rejectHint: number;
  /** Read-index request id, or other opaque context. */
  context: Uint8Array;
  /** Present on Snapshot messages (one message per chunk). */
  snapshot?: SnapshotMetadata;
  snapshotChunk?: Uint8Array;
  snapshotOffset?: number;
  snapshotDone?: boolean;
}

/**
 * Durable state a node needs across restarts. Implementations: MemoryStorage (tests) and
 * WalStorage (segment files with per-record checksums). Both pass storage-contract.test.ts.
 * Reads are synchronous because the core reads them on the hot path; writes happen in the
 * driver between ready() and advance(), and `sync()` must return only after data is durable.
 */
export interface Storage {
  /** HardState and ConfState as last persisted (ConfState from the latest snapshot or conf entries). */
  initialState(): { hardState: HardState; confState: ConfState };
  /** Entries in [lo, hi), at most maxBytes total (always at least one if any). Throws CompactedError / UnavailableError. */
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  /** Term of the entry at index i; the snapshot's term for i == firstIndex()-1. */
  term(i: number): number;
  firstIndex(): number;
  lastIndex(): number;
  snapshot(): Snapshot;
}

export interface WritableStorage extends Storage {
  /** Appends, truncating any conflicting suffix first (entries[0].index may be ≤ lastIndex()). */
  append(entries: Entry[]): void;
  setHardState(hs: HardState): void;
  /** Replaces the log with the snapshot (entries after it that match are kept). */
  applySnapshot(snap: Snapshot): void;
  /** Records a snapshot taken by the application at `index` and drops entries before `index - keep`. */
  compact(snap: Snapshot, keepEntries: number): void;
  /**
   * Optional: compact() with the snapshot written off the caller's thread; until it resolves the
   * storage reads as before the call. A driver runs one at a time and applies no snapshot from
   * the leader while one is in flight.
   */
  compactAsync?(snap: Snapshot, keepEntries: number): Promise<void>;
  /** Makes every write so far durable. Messages that depend on the writes are sent only after this resolves. */
  sync(): Promise<void>;
  /**
   * Optional: makes every write so far durable before returning, on the calling thread. A driver
   * may use it for a lone small write, where handing the fsync to another thread and back costs
   * more than the overlap buys. Never called while a `sync()` is in flight.
   */
  syncBlocking?(): void;
  close(): Promise<void>;
}

export class CompactedError extends Error {
  constructor(index: number, firstIndex: number) {
    super(`raft storage: index ${index} is compacted (first available index is ${firstIndex})`);
    this.name = "CompactedError";
  }
}

export class UnavailableError extends Error {
  constructor(index: number, lastIndex: number) {
    super(`raft storage: index ${index} is not yet available (last index is ${lastIndex})`);
    this.name = "UnavailableError";
  }
}

/** What the core asks the driver to do, in order: persist, then send, then apply. */
export interface Ready {
  /** Set when the hard state changed and must be persisted. */
  hardState?: HardState;
  /** Entries to append to storage before sending `messages`. */
  entries: Entry[];
  /** A snapshot received from the leader, to persist and restore before applying `committedEntries`. */
  snapshot?: Snapshot;
  /**
   * Messages that do not depend on this Ready's writes (the leader's appends and heartbeats, ...):
   * send them at once, before or while persisting, so the leader's disk write overlaps replication.
   */
  messages: Message[];
  /** Messages that vouch for this Ready's writes (acknowledgements, votes): send only once durable. */
  messagesAfterPersist: Message[];
  /** Committed entries to apply to the state machine, in order. */
  committedEntries: Entry[];
  /** Linearizable reads whose index is now known: resolve once the applied index reaches `index`. */
  readStates: { requestId: Uint8Array; index: number }[];
  /** Changed leadership/role, for logs and metrics. */
  softState?: { leader: NodeId; role: Role };
}

export type Role = "follower" | "pre-candidate" | "candidate" | "leader";

/** Transport: delivers messages to peers without ordering or delivery guarantees. */
export interface Transport {
  send(messages: Message[]): void;
  /** Registers the handler for incoming messages. */
  onMessage(handler: (m: Message) => void): void;
  addPeer(id: NodeId, address: string): void;
  removePeer(id: NodeId): void;
  close(): Promise<void>;
}

/** The replicated application. apply() must be deterministic. */
export interface StateMachine<R = unknown> {
  apply(entry: Entry): R;
  snapshot(): Uint8Array;
  restore(data: Uint8Array): void;
}
