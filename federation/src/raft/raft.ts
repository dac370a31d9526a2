// The pure Raft state machine (modelled on etcd's raft.go + rawnode.go): the caller feeds it ticks,
// incoming messages and proposals, and drains Ready batches of {entries and hard state to persist,
// snapshot to install, messages to send, committed entries to apply}, then calls advance().
// No clock, randomness, disk or network in here: all of that is the driver's (RaftNode, the sim).

import {
  applyToConfState,
  decodeConfChange,
  encodeConfChange,
  sortIds,
  validateConfChange,
} from "./confchange.js";
import { ProposalDroppedError, RaftInvariantError } from "./errors.js";
import { entrySize, RaftLog } from "./log.js";
import { Progress, type ProgressState } from "./progress.js";
import { committedIndex, type VoteResult, voteResult } from "./quorum.js";
import { ReadOnly } from "./read-only.js";
import {
  CompactedError,
  type ConfChange,
  ConfChangeType,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  type NodeId,
  type Ready,
  type Role,
  type Snapshot,
  type Storage,
} from "./types.js";

export interface RaftConfig {
  /** This node's id; must be non-empty. */
  id: NodeId;
  /** Initial voters when storage holds no configuration yet (a fresh cluster). */
  voters?: NodeId[];
  /** Initial learners when storage holds no configuration yet. */
  learners?: NodeId[];
  storage: Storage;
  /** Last index the application applied before a restart (entries after it are handed out again). */
  applied?: number;
  /** Ticks without hearing from a leader before campaigning (randomized to [n, 2n)). Default 10. */
  electionTicks?: number;
  /** Ticks between leader heartbeats. Default 1; must be < electionTicks. */
  heartbeatTicks?: number;
  /** Uniform random integer in [0, n); the core's only source of randomness. */
  randomInt: (n: number) => number;
  /** Pre-vote phase before real elections (a partitioned node cannot disrupt the group). Default true. */
  preVote?: boolean;
  /** The leader steps down when it has not heard from a quorum for an election timeout. Default true. */
  checkQuorum?: boolean;
  /** Bytes of entries per Append message. Default 1 MiB. */
  maxSizePerMsg?: number;
  /** Append messages in flight per follower (pipelining depth). Default 256. */
  maxInflightMsgs?: number;
  /** Bytes of entries in flight per follower; 0 = no byte bound. Default 16 MiB. */
  maxInflightBytes?: number;
  /** Bytes of uncommitted entry data the leader accepts before dropping proposals; 0 = no bound. Default 64 MiB. */
  maxUncommittedEntriesSize?: number;
  /** Bytes of committed entries handed out per Ready. Default 64 MiB. */
  maxCommittedSizePerReady?: number;
  /** Bytes of snapshot data per InstallSnapshot chunk. Default 1 MiB. */
  snapshotChunkSize?: number;
  /** Bytes a follower buffers for one incoming snapshot. Default 1 GiB. */
  maxSnapshotBytes?: number;
  /** "safe" (quorum heartbeat round, default) or "lease" (trusts check-quorum timing; needs checkQuorum). */
  readOnlyOption?: "safe" | "lease";
  /** ReadIndex requests the leader holds at once. Default 4096. */
  maxPendingReadIndex?: number;
  /** Followers reject proposals instead of forwarding them to the leader. Default false. */
  disableProposalForwarding?: boolean;
}

export interface ProgressStatus {
  match: number;
  next: number;
  state: ProgressState;
  learner: boolean;
  recentActive: boolean;
  inflight: number;
}

export interface RaftStatus {
  id: NodeId;
  role: Role;
  leader: NodeId;
  term: number;
  vote: NodeId;
  commit: number;
  applied: number;
  firstIndex: number;
  lastIndex: number;
  leadTransferee: NodeId;
  /** Malformed messages step() dropped since start. */
  droppedMessages: number;
  config: ConfState;
  /** Only on the leader. */
  progress?: Record<NodeId, ProgressStatus>;
}

interface PendingReady {
  lastEntry?: { index: number; term: number };
  snapshotIndex?: number;
  snapshotTerm?: number;
  committed: Entry[];
  hardState?: HardState;
}

interface SnapshotAssembly {
  from: NodeId;
  index: number;
  term: number;
  chunks: Uint8Array[];
  received: number;
}

const CAMPAIGN_TRANSFER = new TextEncoder().encode("campaign-transfer");
const EMPTY = new Uint8Array(0);

function isTransferContext(ctx: Uint8Array): boolean {
  if (ctx.length !== CAMPAIGN_TRANSFER.length) return false;
  for (let k = 0; k < ctx.length; k++) if (ctx[k] !== CAMPAIGN_TRANSFER[k]) return false;
  return true;
}

/** Messages with term 0: proposals, reads and transfer requests travel outside the term protocol. */
function isLocalTermless(t: MessageType): boolean {
  return t === MessageType.Propose || t === MessageType.ReadIndex || t === MessageType.TransferLeader;
}

/**
 * Messages that promise nothing about this node's storage, so they may leave before the Ready's
 * writes are durable: the leader's appends, heartbeats, snapshot chunks and TimeoutNow (the
 * leader's own match only counts its entries once persisted), heartbeat responses (they vouch for
 * leadership, not for the log), and requests forwarded to the leader. Acknowledgements of
 * entries, votes and vote requests (the candidate's term and self-vote) wait for the sync.
 */
function sendableBeforePersist(t: MessageType): boolean {
  switch (t) {
    case MessageType.Append:
    case MessageType.Heartbeat:
    case MessageType.Snapshot:
    case MessageType.TimeoutNow:
    case MessageType.HeartbeatResponse:
    case MessageType.ReadIndex:
    case MessageType.ReadIndexResponse:
    case MessageType.Propose:
    case MessageType.TransferLeader:
      return true;
    default:
      return false;
  }
}

function voteRespType(t: MessageType): MessageType {
  return t === MessageType.Vote ? MessageType.VoteResponse : MessageType.PreVoteResponse;
}

/** Builds a message with every field defaulted; callers set what matters. */
export function newMessage(m: Partial<Message> & Pick<Message, "type" | "from" | "to">): Message {
  return {
    term: 0,
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    context: EMPTY,
    ...m,
  };
}

function positiveInt(name: string, v: number | undefined, dflt: number): number {
  const x = v ?? dflt;
  if (!Number.isSafeInteger(x) || x <= 0)
    throw new RangeError(`raft config: ${name} must be a positive integer, got ${v}`);
  return x;
}

function nonNegativeInt(name: string, v: number | undefined, dflt: number): number {
  const x = v ?? dflt;
  if (!Number.isSafeInteger(x) || x < 0)
    throw new RangeError(`raft config: ${name} must be a non-negative integer, got ${v}`);
  return x;
}

export class RaftCore {
  readonly id: NodeId;
  term = 0;
  vote: NodeId = "";
  lead: NodeId = "";
  role: Role = "follower";
  readonly raftLog: RaftLog;

  private confState: ConfState = { voters: [], learners: [], votersOutgoing: [] };
  private readonly prs = new Map<NodeId, Progress>();
  private votes = new Map<NodeId, boolean>();
  /** Messages that may leave before this Ready's writes are durable (see send()). */
  private msgs: Message[] = [];
  /** Messages that vouch for this Ready's writes (acks, votes): sent only once they are durable. */
  private msgsAfterPersist: Message[] = [];
  private readStates: { requestId: Uint8Array; index: number }[] = [];

  private readonly electionTimeout: number;
  private readonly heartbeatTimeout: number;
  private readonly randomInt: (n: number) => number;
  private readonly preVote: boolean;
  private readonly checkQuorum: boolean;
  private readonly maxSizePerMsg: number;
  private readonly maxInflightMsgs: number;
  private readonly maxInflightBytes: number;
  private readonly maxUncommittedSize: number;
  private readonly maxCommittedSizePerReady: number;
  private readonly snapshotChunkSize: number;
  private readonly maxSnapshotBytes: number;
  private readonly readOnlyOption: "safe" | "lease";
  private readonly disableProposalForwarding: boolean;

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  private leadTransferee: NodeId = "";
  /** Index of the latest conf change in the log; no other may be proposed until it is applied. */
  private pendingConfIndex = 0;
  private uncommittedSize = 0;
  private readonly readOnly: ReadOnly;
  /** ReadIndex requests received before this leader committed an entry of its own term. */
  private pendingReadIndexMessages: Message[] = [];
  private readonly maxPendingReadIndex: number;
  /**
   * Peers owed an append (new entries or a new commit index). Sent once per Ready, so proposals
   * and acknowledgements arriving between two Ready batches coalesce into one message per peer.
   */
  private readonly pendingAppend = new Set<NodeId>();
  private snapshotAssembly: SnapshotAssembly | undefined;
  /** Messages dropped by step() because no correct peer would send them. */
  private droppedMalformed = 0;

  private prevSoft: { leader: NodeId; role: Role };
  private prevHard: HardState;
  private pendingReady: PendingReady | undefined;

  constructor(config: RaftConfig) {
    if (typeof config.id !== "string" || config.id === "")
      throw new RangeError("raft config: id must be a non-empty string");
    this.id = config.id;
    this.electionTimeout = positiveInt("electionTicks", config.electionTicks, 10);
    this.heartbeatTimeout = positiveInt("heartbeatTicks", config.heartbeatTicks, 1);
    if (this.heartbeatTimeout >= this.electionTimeout) {
      throw new RangeError(
        `raft config: heartbeatTicks (${this.heartbeatTimeout}) must be less than electionTicks (${this.electionTimeout})`,
      );
    }
    if (typeof config.randomInt !== "function") throw new RangeError("raft config: randomInt is required");
    this.randomInt = config.randomInt;
    this.preVote = config.preVote ?? true;
    this.checkQuorum = config.checkQuorum ?? true;
    this.maxSizePerMsg = positiveInt("maxSizePerMsg", config.maxSizePerMsg, 1 << 20);
    this.maxInflightMsgs = positiveInt("maxInflightMsgs", config.maxInflightMsgs, 256);
    this.maxInflightBytes = nonNegativeInt("maxInflightBytes", config.maxInflightBytes, 16 << 20);
    this.maxUncommittedSize = nonNegativeInt(
      "maxUncommittedEntriesSize",
      config.maxUncommittedEntriesSize,
      64 << 20,
    );
    this.maxCommittedSizePerReady = positiveInt(
      "maxCommittedSizePerReady",
      config.maxCommittedSizePerReady,
      64 << 20,
    );
    this.snapshotChunkSize = positiveInt("snapshotChunkSize", config.snapshotChunkSize, 1 << 20);
    this.maxSnapshotBytes = positiveInt("maxSnapshotBytes", config.maxSnapshotBytes, 1 << 30);
    this.readOnlyOption = config.readOnlyOption ?? "safe";
    if (this.readOnlyOption !== "safe" && this.readOnlyOption !== "lease") {
      throw new RangeError(
        `raft config: readOnlyOption must be "safe" or "lease", got ${String(config.readOnlyOption)}`,
      );
    }
    if (this.readOnlyOption === "lease" && !this.checkQuorum) {
      throw new RangeError(
        'raft config: readOnlyOption "lease" requires checkQuorum (the lease is the check-quorum window)',
      );
    }
    this.disableProposalForwarding = config.disableProposalForwarding ?? false;
    this.maxPendingReadIndex = positiveInt("maxPendingReadIndex", config.maxPendingReadIndex, 4096);
    this.readOnly = new ReadOnly(this.maxPendingReadIndex);

    this.raftLog = new RaftLog(config.storage);
    const { hardState, confState } = config.storage.initialState();
    if (confState.votersOutgoing.length > 0) {
      throw new RangeError("raft: joint configurations are not supported (storage holds votersOutgoing)");
    }
    const storageEmpty =
      config.storage.lastIndex() === 0 &&
      hardState.term === 0 &&
      hardState.vote === "" &&
      hardState.commit === 0;
    const bootVoters = config.voters ?? [];
    const bootLearners = config.learners ?? [];
    for (const l of bootLearners) {
      if (bootVoters.includes(l))
        throw new RangeError(`raft config: node ${l} is both a voter and a learner`);
    }
    // Configuration of the latest snapshot; committed ConfChange entries after it are replayed.
    this.applyConfState({
      voters: sortIds(confState.voters),
      learners: sortIds(confState.learners),
      votersOutgoing: [],
    });

    if (storageEmpty && bootVoters.length > 0) {
      this.bootstrap(bootVoters, bootLearners);
    } else if (hardState.term !== 0 || hardState.vote !== "" || hardState.commit !== 0) {
      if (hardState.commit < this.raftLog.committed || hardState.commit > this.raftLog.lastIndex()) {
        throw new RaftInvariantError(
          `stored commit ${hardState.commit} is out of range [${this.raftLog.committed}, ${this.raftLog.lastIndex()}]`,
        );
      }
      this.raftLog.committed = hardState.commit;
      this.term = hardState.term;
      this.vote = hardState.vote;
    }
    if (config.applied !== undefined && config.applied > 0) {
      // Membership changes up to `applied` are in effect; later ones apply as the log is re-applied.
      const lo = this.raftLog.firstIndex();
      if (config.applied >= lo) {
        for (const e of this.raftLog.slice(lo, config.applied + 1, Number.MAX_SAFE_INTEGER)) {
          if (e.type === EntryType.ConfChange) this.applyConfChangeToConfig(decodeConfChange(e.data));
        }
      }
      // Applied entries were committed even if the commit index on disk lags (a commit-only hard
      // state need not be synced).
      if (config.applied > this.raftLog.lastIndex()) {
        throw new RaftInvariantError(
          `applied index ${config.applied} is beyond the last stored index ${this.raftLog.lastIndex()}`,
        );
      }
      this.raftLog.commitTo(config.applied);
      this.raftLog.appliedTo(config.applied);
    }
    this.becomeFollower(this.term, "");
    this.prevSoft = { leader: this.lead, role: this.role };
    // Compared with what storage holds, so a bootstrap's hard state is emitted in the first Ready.
    this.prevHard = { ...hardState };
  }

  // ---------------------------------------------------------------- public API

  /** Advances logical time by one tick (heartbeats on the leader, election timeouts elsewhere). */
  tick(): void {
    if (this.role === "leader") this.tickHeartbeat();
    else this.tickElection();
  }

  /** Starts an election now (as if the election timeout fired), with pre-vote if enabled. */
  campaign(): void {
    this.hup(false);
  }

  /** Proposes an application command. Throws ProposalDroppedError when it cannot be accepted. */
  propose(data: Uint8Array): void {
    if (!(data instanceof Uint8Array)) throw new TypeError("raft: propose(data) needs a Uint8Array");
    this.stepLocal(
      newMessage({
        type: MessageType.Propose,
        from: this.id,
        to: this.id,
        entries: [{ term: 0, index: 0, type: EntryType.Normal, data }],
      }),
    );
  }

  /** Proposes a membership change; at most one may be uncommitted or unapplied at a time. */
  proposeConfChange(cc: ConfChange): void {
    const why = validateConfChange(this.confState, cc);
    if (why) throw new ProposalDroppedError("invalid-conf-change", why);
    this.stepLocal(
      newMessage({
        type: MessageType.Propose,
        from: this.id,
        to: this.id,
        entries: [{ term: 0, index: 0, type: EntryType.ConfChange, data: encodeConfChange(cc) }],
      }),
    );
  }

  /**
   * Requests a linearizable read: a readState with this id appears in a later Ready once the leader
   * has confirmed its leadership; the read may be served once applied ≥ readState.index. A request
   * forwarded to a leader can be lost; callers retry with a timeout.
   */
  readIndex(requestId: Uint8Array): void {
    this.stepLocal(
      newMessage({ type: MessageType.ReadIndex, from: this.id, to: this.id, context: requestId }),
    );
  }

  /** Asks the leader to hand leadership to `to` (which must be a voter). */
  transferLeadership(to: NodeId): void {
    this.stepLocal(newMessage({ type: MessageType.TransferLeader, from: to, to: this.id }));
  }

  /** Feeds a message received from a peer. Malformed or stale messages are ignored. */
  step(m: Message): void {
    if (!this.wellFormed(m)) return;
    this.stepInternal(m, false);
  }

  hasReady(): boolean {
    if (this.pendingReady) return false;
    if (this.pendingAppend.size > 0) return true;
    if (this.lead !== this.prevSoft.leader || this.role !== this.prevSoft.role) return true;
    const hs = this.hardState();
    if (
      hs.term !== this.prevHard.term ||
      hs.vote !== this.prevHard.vote ||
      hs.commit !== this.prevHard.commit
    )
      return true;
    if (this.raftLog.unstable.snapshot) return true;
    return (
      this.msgs.length > 0 ||
      this.msgsAfterPersist.length > 0 ||
      this.raftLog.unstableEntries().length > 0 ||
      this.raftLog.hasNextEnts() ||
      this.readStates.length > 0
    );
  }

  /**
   * The next batch of work. The caller may send `messages` at once; it must persist snapshot,
   * entries and hard state durably before sending `messagesAfterPersist` and applying committed
   * entries, then call advance() — which is also how the core learns that the leader's own new
   * entries are durable. One Ready at a time.
   */
  ready(): Ready {
    if (this.pendingReady) throw new RaftInvariantError("ready() called again before advance()");
    if (this.pendingAppend.size > 0) {
      if (this.role === "leader") {
        for (const id of this.peerIds()) if (this.pendingAppend.has(id)) this.sendAppend(id);
      }
      this.pendingAppend.clear();
    }
    const entries = this.raftLog.unstableEntries().slice();
    const committed = this.raftLog.nextEnts(this.maxCommittedSizePerReady);
    if (committed.length === 0 && this.raftLog.hasNextEnts()) {
      // Otherwise hasReady() would stay true forever and the driver would spin.
      throw new RaftInvariantError(
        `storage returned no committed entries after applied ${this.raftLog.applied} (committed ${this.raftLog.committed}, first index ${this.raftLog.firstIndex()})`,
      );
    }
    const rd: Ready = {
      entries,
      messages: this.msgs,
      messagesAfterPersist: this.msgsAfterPersist,
      committedEntries: committed,
      readStates: this.readStates,
    };
    this.msgs = [];
    this.msgsAfterPersist = [];
    this.readStates = [];
    const pending: PendingReady = { committed };
    const last = entries[entries.length - 1];
    if (last) pending.lastEntry = { index: last.index, term: last.term };
    const snap = this.raftLog.unstable.snapshot;
    if (snap) {
      rd.snapshot = snap;
      pending.snapshotIndex = snap.metadata.index;
      pending.snapshotTerm = snap.metadata.term;
    }
    const hs = this.hardState();
    if (
      hs.term !== this.prevHard.term ||
      hs.vote !== this.prevHard.vote ||
      hs.commit !== this.prevHard.commit
    ) {
      rd.hardState = hs;
      pending.hardState = hs;
    }
    if (this.lead !== this.prevSoft.leader || this.role !== this.prevSoft.role) {
      rd.softState = { leader: this.lead, role: this.role };
      this.prevSoft = { leader: this.lead, role: this.role };
    }
    this.pendingReady = pending;
    return rd;
  }

  /**
   * The last Ready was written to storage, sent and applied; applies committed membership changes.
   * By default this also reports its writes durable. A driver that syncs in the background passes
   * `{ persisted: false }` and reports durability later with persisted(), so it can take the next
   * Ready while the fsync runs (it must still send each Ready's messagesAfterPersist only after
   * that Ready's writes are durable, in order).
   */
  advance(opts?: { persisted?: boolean }): void {
    const p = this.pendingReady;
    if (!p) throw new RaftInvariantError("advance() called without a pending ready()");
    this.pendingReady = undefined;
    if (p.hardState) this.prevHard = p.hardState;
    if (p.snapshotIndex !== undefined) {
      this.raftLog.stableSnapTo(p.snapshotIndex);
      if (p.snapshotIndex > this.raftLog.applied) this.raftLog.applied = p.snapshotIndex;
      if (opts?.persisted !== false) this.persisted(p.snapshotIndex, p.snapshotTerm!);
    }
    if (p.lastEntry) {
      this.raftLog.stableTo(p.lastEntry.index, p.lastEntry.term);
      if (opts?.persisted !== false) this.persisted(p.lastEntry.index, p.lastEntry.term);
    }
    const lastCommitted = p.committed[p.committed.length - 1];
    if (lastCommitted) {
      let size = 0;
      for (const e of p.committed) {
        if (e.type === EntryType.ConfChange) this.applyConfChange(decodeConfChange(e.data));
        size += e.data.length;
      }
      // Entries may have been applied through a snapshot meanwhile; never move applied backwards.
      if (lastCommitted.index > this.raftLog.applied) this.raftLog.appliedTo(lastCommitted.index);
      this.reduceUncommittedSize(size);
    }
  }

  /**
   * The driver's writes up to log position (index, term) are durable. The leader's own entries
   * count toward a quorum only from here: its appends went out before its write (etcd's "persist
   * in parallel with replication"). A report for an entry that was replaced since is ignored.
   */
  persisted(index: number, term: number): void {
    if (!this.raftLog.persistedTo(index, term)) return;
    if (this.role !== "leader") return;
    const self = this.prs.get(this.id);
    if (self?.maybeUpdate(this.raftLog.persistedLastIndex()) && this.maybeCommit()) this.markBroadcast();
  }

  status(): RaftStatus {
    const s: RaftStatus = {
      id: this.id,
      role: this.role,
      leader: this.lead,
      term: this.term,
      vote: this.vote,
      commit: this.raftLog.committed,
      applied: this.raftLog.applied,
      firstIndex: this.raftLog.firstIndex(),
      lastIndex: this.raftLog.lastIndex(),
      leadTransferee: this.leadTransferee,
      droppedMessages: this.droppedMalformed,
      config: {
        voters: this.confState.voters.slice(),
        learners: this.confState.learners.slice(),
        votersOutgoing: [],
      },
    };
    if (this.role === "leader") {
      s.progress = {};
      for (const [id, pr] of this.prs) {
        s.progress[id] = {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          learner: pr.isLearner,
          recentActive: pr.recentActive,
          inflight: pr.inflights.count,
        };
      }
    }
    return s;
  }

  /** Human-readable progress of every peer (leader only), for transcripts and debugging. */
  progressLines(): string[] {
    return this.peerIds().map((id) => `${id}: ${this.prs.get(id)!.toString()}`);
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.raftLog.committed };
  }

  // ---------------------------------------------------------------- roles

  /** Voters then learners, recomputed when the configuration changes. */
  private members: NodeId[] = [];

  private peerIds(): NodeId[] {
    return this.members;
  }

  private isVoter(id: NodeId): boolean {
    return this.confState.voters.includes(id);
  }

  private promotable(): boolean {
    return this.isVoter(this.id);
  }

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = "";
    }
    this.lead = "";
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.leadTransferee = "";
    this.votes = new Map();
    const last = this.raftLog.lastIndex();
    for (const [id, pr] of this.prs) {
      const fresh = new Progress(last + 1, this.maxInflightMsgs, this.maxInflightBytes, pr.isLearner);
      // Only what is durable here counts for this node; the rest is acknowledged in advance().
      if (id === this.id) fresh.match = this.raftLog.persistedLastIndex();
      this.prs.set(id, fresh);
    }
    this.pendingConfIndex = 0;
    this.uncommittedSize = 0;
    this.readOnly.reset();
    this.pendingReadIndexMessages = [];
    this.snapshotAssembly = undefined;
    this.pendingAppend.clear();
  }

  private resetRandomizedElectionTimeout(): void {
    const r = this.randomInt(this.electionTimeout);
    if (!Number.isInteger(r) || r < 0 || r >= this.electionTimeout) {
      throw new RaftInvariantError(
        `randomInt(${this.electionTimeout}) returned ${r}, expected an integer in range`,
      );
    }
    this.randomizedElectionTimeout = this.electionTimeout + r;
  }

  private becomeFollower(term: number, lead: NodeId): void {
    this.reset(term);
    this.lead = lead;
    this.role = "follower";
  }

  private becomePreCandidate(): void {
    if (this.role === "leader") throw new RaftInvariantError("invalid transition leader -> pre-candidate");
    // Pre-vote changes neither term nor vote: a node that cannot win disturbs nobody.
    this.votes = new Map();
    this.lead = "";
    this.role = "pre-candidate";
  }

  private becomeCandidate(): void {
    if (this.role === "leader") throw new RaftInvariantError("invalid transition leader -> candidate");
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = "candidate";
  }

  private becomeLeader(): void {
    if (this.role === "follower") throw new RaftInvariantError("invalid transition follower -> leader");
    this.reset(this.term);
    this.lead = this.id;
    this.role = "leader";
    this.prs.get(this.id)?.becomeReplicate();
    // A conf change may not be proposed until this leader's first entry is applied: an entry from
    // an earlier term might still hide an unapplied change.
    this.pendingConfIndex = this.raftLog.lastIndex();
    if (!this.appendEntries([{ term: 0, index: 0, type: EntryType.Normal, data: EMPTY }])) {
      throw new RaftInvariantError("empty entry was dropped when becoming leader");
    }
  }

  private hup(transfer: boolean): void {
    if (this.role === "leader") return;
    if (!this.promotable()) return;
    if (this.hasUnappliedConfChanges()) return;
    if (transfer) this.startCampaign("transfer");
    else if (this.preVote) this.startCampaign("pre-election");
    else this.startCampaign("election");
  }

  private hasUnappliedConfChanges(): boolean {
    if (this.raftLog.applied >= this.raftLog.committed) return false;
    const lo = Math.max(this.raftLog.applied + 1, this.raftLog.firstIndex());
    const ents = this.raftLog.slice(lo, this.raftLog.committed + 1, Number.MAX_SAFE_INTEGER);
    return ents.some((e) => e.type === EntryType.ConfChange);
  }

  private startCampaign(kind: "pre-election" | "election" | "transfer"): void {
    let voteType: MessageType;
    let term: number;
    if (kind === "pre-election") {
      this.becomePreCandidate();
      voteType = MessageType.PreVote;
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      voteType = MessageType.Vote;
      term = this.term;
    }
    if (this.poll(this.id, true) === "won") {
      if (kind === "pre-election") this.startCampaign("election");
      else this.becomeLeader();
      return;
    }
    for (const id of this.confState.voters) {
      if (id === this.id) continue;
      this.send(
        newMessage({
          type: voteType,
          from: this.id,
          to: id,
          term,
          index: this.raftLog.lastIndex(),
          logTerm: this.raftLog.lastTerm(),
          context: kind === "transfer" ? CAMPAIGN_TRANSFER : EMPTY,
        }),
      );
    }
  }

  private poll(id: NodeId, granted: boolean): VoteResult {
    if (!this.votes.has(id)) this.votes.set(id, granted);
    return voteResult(this.confState.voters, this.votes);
  }

  // ---------------------------------------------------------------- ticks

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(false);
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTimeout) {
      this.electionElapsed = 0;
      if (this.checkQuorum) {
        if (!this.quorumActive()) {
          this.becomeFollower(this.term, "");
          return;
        }
      }
      // A transfer that did not finish within an election timeout is abandoned.
      if (this.leadTransferee !== "") this.leadTransferee = "";
    }
    if (this.heartbeatElapsed >= this.heartbeatTimeout) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
    }
  }

  /** Check-quorum: were a majority of voters heard from since the last check? Resets the marks. */
  private quorumActive(): boolean {
    const votes = new Map<NodeId, boolean>();
    for (const id of this.confState.voters) {
      const pr = this.prs.get(id)!;
      votes.set(id, id === this.id || pr.recentActive);
      if (id !== this.id) pr.recentActive = false;
    }
    for (const id of this.confState.learners) this.prs.get(id)!.recentActive = false;
    return voteResult(this.confState.voters, votes) === "won";
  }

  // ---------------------------------------------------------------- step

  /** Rejects (and counts) messages no correct peer sends, so bad input cannot trip an invariant. */
  private wellFormed(m: Message): boolean {
    const ok = this.checkMessage(m);
    if (!ok) this.droppedMalformed++;
    return ok;
  }

  private checkMessage(m: Message): boolean {
    if (typeof m !== "object" || m === null) return false;
    if (typeof m.from !== "string" || m.from === "" || m.from === this.id || m.to !== this.id) return false;
    if (
      typeof m.type !== "number" ||
      !(m.type >= MessageType.Append && m.type <= MessageType.TransferLeader)
    ) {
      return false;
    }
    const nat = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
    if (!nat(m.term) || !nat(m.index) || !nat(m.logTerm) || !nat(m.commit)) return false;
    if (!Array.isArray(m.entries) || !(m.context instanceof Uint8Array)) return false;
    if (m.term === 0 && !isLocalTermless(m.type)) return false;
    if (m.type === MessageType.Snapshot) {
      const meta = m.snapshot;
      if (!meta || !nat(meta.index) || !nat(meta.term) || !Array.isArray(meta.confState?.voters))
        return false;
      if (!Array.isArray(meta.confState.learners)) return false;
      if (m.snapshotChunk !== undefined && !(m.snapshotChunk instanceof Uint8Array)) return false;
      if (m.snapshotOffset !== undefined && !nat(m.snapshotOffset)) return false;
    }
    for (let k = 0; k < m.entries.length; k++) {
      const e = m.entries[k]!;
      if (typeof e !== "object" || e === null || !(e.data instanceof Uint8Array)) return false;
      if (e.type !== EntryType.Normal && e.type !== EntryType.ConfChange) return false;
      if (m.type === MessageType.Append) {
        // Contiguous after (index, logTerm), terms never decreasing and never above the sender's.
        if (e.index !== m.index + 1 + k || !nat(e.term) || e.term > m.term) return false;
        const prevTerm = k === 0 ? m.logTerm : m.entries[k - 1]!.term;
        if (e.term < prevTerm) return false;
      }
    }
    return true;
  }

  /** Steps a request made through the public API: errors are thrown to the caller. */
  private stepLocal(m: Message): void {
    this.stepInternal(m, true);
  }

  private drop(
    local: boolean,
    reason: ConstructorParameters<typeof ProposalDroppedError>[0],
    detail?: string,
  ): void {
    if (local) throw new ProposalDroppedError(reason, detail);
  }

  private stepInternal(m: Message, local: boolean): void {
    if (m.term === 0) {
      // Proposals, reads and transfer requests: no term semantics.
    } else if (m.term > this.term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const force = isTransferContext(m.context);
        const inLease = this.checkQuorum && this.lead !== "" && this.electionElapsed < this.electionTimeout;
        // Within the lease we heard from a live leader: ignore the disruptive candidate.
        if (!force && inLease) return;
      }
      if (m.type === MessageType.PreVote) {
        // Never change term in response to a pre-vote.
      } else if (m.type === MessageType.PreVoteResponse && !m.reject) {
        // A granted pre-vote carries the future term; we bump the term when we win the pre-election.
      } else if (
        m.type === MessageType.Append ||
        m.type === MessageType.Heartbeat ||
        m.type === MessageType.Snapshot
      ) {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, "");
      }
    } else if (m.term < this.term) {
      if (
        (this.checkQuorum || this.preVote) &&
        (m.type === MessageType.Heartbeat || m.type === MessageType.Append)
      ) {
        // A stale leader (e.g. after a partition healed) learns the new term from this response and
        // steps down; otherwise with check-quorum/pre-vote it could never be told.
        this.send(newMessage({ type: MessageType.AppendResponse, from: this.id, to: m.from }));
      } else if (m.type === MessageType.PreVote) {
        this.send(
          newMessage({
            type: MessageType.PreVoteResponse,
            from: this.id,
            to: m.from,
            term: this.term,
            reject: true,
          }),
        );
      }
      return;
    }

    if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
      const canVote =
        this.vote === m.from ||
        (this.vote === "" && this.lead === "") ||
        (m.type === MessageType.PreVote && m.term > this.term);
      if (canVote && this.raftLog.isUpToDate(m.index, m.logTerm)) {
        this.send(newMessage({ type: voteRespType(m.type), from: this.id, to: m.from, term: m.term }));
        if (m.type === MessageType.Vote) {
          this.electionElapsed = 0;
          this.vote = m.from;
        }
      } else {
        this.send(
          newMessage({
            type: voteRespType(m.type),
            from: this.id,
            to: m.from,
            term: this.term,
            reject: true,
          }),
        );
      }
      return;
    }

    switch (this.role) {
      case "leader":
        this.stepLeader(m, local);
        break;
      case "candidate":
      case "pre-candidate":
        this.stepCandidate(m, local);
        break;
      case "follower":
        this.stepFollower(m, local);
        break;
    }
  }

  private stepLeader(m: Message, local: boolean): void {
    switch (m.type) {
      case MessageType.Propose:
        this.leaderPropose(m, local);
        return;
      case MessageType.ReadIndex:
        this.leaderReadIndex(m, local);
        return;
      case MessageType.TransferLeader:
        this.leaderTransfer(m, local);
        return;
    }
    const pr = this.prs.get(m.from);
    if (!pr) return; // not (or no longer) a member
    switch (m.type) {
      case MessageType.AppendResponse:
        this.handleAppendResponse(m, pr);
        break;
      case MessageType.HeartbeatResponse:
        this.handleHeartbeatResponse(m, pr);
        break;
      case MessageType.SnapshotResponse:
        this.handleSnapshotResponse(m, pr);
        break;
    }
  }

  private leaderPropose(m: Message, local: boolean): void {
    if (m.entries.length === 0) return;
    if (!this.prs.has(this.id)) {
      this.drop(local, "not-a-member", "this leader was removed from the group");
      return;
    }
    if (this.leadTransferee !== "") {
      this.drop(local, "leader-transfer-in-progress", `transferring to ${this.leadTransferee}`);
      return;
    }
    const ents: Entry[] = [];
    const prevPendingConf = this.pendingConfIndex;
    for (const e of m.entries) {
      if (e.type === EntryType.ConfChange) {
        let why: string | undefined;
        let cc: ConfChange | undefined;
        try {
          cc = decodeConfChange(e.data);
          why = validateConfChange(this.confState, cc);
        } catch (err) {
          why = (err as Error).message;
        }
        if (!why && cc && cc.nodeId === this.id && cc.type === ConfChangeType.AddLearner) {
          why = "the leader cannot be demoted to learner; transfer leadership first";
        }
        if (why) {
          if (local) throw new ProposalDroppedError("invalid-conf-change", why);
          continue;
        }
        if (this.pendingConfIndex > this.raftLog.applied) {
          if (local) {
            throw new ProposalDroppedError(
              "conf-change-pending",
              `change at index ${this.pendingConfIndex} not yet applied (applied=${this.raftLog.applied})`,
            );
          }
          continue;
        }
        this.pendingConfIndex = this.raftLog.lastIndex() + ents.length + 1;
      }
      ents.push({ term: 0, index: 0, type: e.type, data: e.data });
    }
    if (ents.length === 0) return;
    if (!this.appendEntries(ents)) {
      // Undo the conf-change reservation so a later, smaller batch may carry it.
      this.pendingConfIndex = prevPendingConf;
      this.drop(local, "uncommitted-size-exceeded", `${this.uncommittedSize} bytes uncommitted`);
      return;
    }
    this.markBroadcast();
  }

  private leaderReadIndex(m: Message, local: boolean): void {
    if (this.confState.voters.length === 1 && this.isVoter(this.id)) {
      this.respondToRead(m, this.raftLog.committed);
      return;
    }
    // Until this leader commits an entry of its term it does not know the true commit index.
    if (this.raftLog.term(this.raftLog.committed) !== this.term) {
      if (this.pendingReadIndexMessages.length >= this.maxPendingReadIndex) {
        this.drop(local, "read-queue-full");
        return;
      }
      this.pendingReadIndexMessages.push(m);
      return;
    }
    this.sendReadIndex(m, local);
  }

  private sendReadIndex(m: Message, local: boolean): void {
    if (this.readOnlyOption === "lease") {
      this.respondToRead(m, this.raftLog.committed);
      return;
    }
    try {
      this.readOnly.add(this.raftLog.committed, m);
    } catch (err) {
      if (local) throw err;
      return;
    }
    this.readOnly.recvAck(this.id, m.context);
    this.bcastHeartbeatWithContext(m.context);
  }

  private respondToRead(req: Message, index: number): void {
    if (req.from === this.id) {
      this.readStates.push({ requestId: req.context, index });
    } else {
      this.send(
        newMessage({
          type: MessageType.ReadIndexResponse,
          from: this.id,
          to: req.from,
          index,
          context: req.context,
        }),
      );
    }
  }

  private releasePendingReads(): void {
    if (this.pendingReadIndexMessages.length === 0) return;
    const msgs = this.pendingReadIndexMessages;
    this.pendingReadIndexMessages = [];
    for (const m of msgs) this.sendReadIndex(m, false);
  }

  private leaderTransfer(m: Message, local: boolean): void {
    const to = m.from;
    const pr = this.prs.get(to);
    if (!pr || pr.isLearner) {
      this.drop(local, "invalid-transfer-target", `transfer target ${to} is not a voter`);
      return;
    }
    if (this.leadTransferee !== "") {
      if (this.leadTransferee === to) return;
      this.leadTransferee = "";
    }
    if (to === this.id) return;
    // The transfer must finish within one election timeout.
    this.electionElapsed = 0;
    this.leadTransferee = to;
    if (pr.match === this.raftLog.lastIndex()) this.sendTimeoutNow(to);
    else this.sendAppend(to);
  }

  private sendTimeoutNow(to: NodeId): void {
    this.send(newMessage({ type: MessageType.TimeoutNow, from: this.id, to }));
  }

  private handleAppendResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (m.reject) {
      let nextProbe = m.rejectHint;
      if (m.logTerm > 0) nextProbe = this.raftLog.findConflictByTerm(m.rejectHint, m.logTerm);
      if (pr.maybeDecrTo(m.index, nextProbe)) {
        if (pr.state === "replicate") pr.becomeProbe();
        this.sendAppend(m.from);
      }
      return;
    }
    const oldPaused = pr.isPaused();
    const updated = pr.maybeUpdate(m.index);
    if (updated || (pr.match === m.index && pr.state === "probe")) {
      if (pr.state === "probe") {
        pr.becomeReplicate();
      } else if (pr.state === "snapshot") {
        if (pr.match + 1 >= this.raftLog.firstIndex()) {
          pr.becomeProbe();
          pr.becomeReplicate();
        } else if (pr.match >= pr.pendingSnapshot) {
          // The follower installed the snapshot but we compacted further meanwhile: start over.
          pr.becomeProbe();
        }
      } else {
        pr.inflights.freeLE(m.index);
      }
      if (this.maybeCommit()) {
        this.markBroadcast();
      } else if (oldPaused) {
        this.pendingAppend.add(m.from);
      }
      // Keep the pipeline full.
      while (pr.state === "replicate" && this.maybeSendAppend(m.from, false)) {}
      if (m.from === this.leadTransferee && pr.match === this.raftLog.lastIndex())
        this.sendTimeoutNow(m.from);
    } else if (pr.state === "snapshot" && m.index >= pr.pendingSnapshot) {
      pr.becomeProbe();
      this.sendAppend(m.from);
    }
  }

  private handleHeartbeatResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    pr.probeSent = false;
    if (pr.state === "snapshot") {
      // Resend the chunk the follower is waiting for, in case it was lost.
      if (pr.snapshotSend) this.sendSnapshotChunk(m.from, pr, pr.snapshotSend.acked);
    } else if (pr.match < this.raftLog.lastIndex()) {
      // A full pipeline whose appends were lost would stall forever: free one slot so an append can
      // go out, which the follower answers (possibly with a rejection that resets to probing).
      if (pr.state === "replicate" && pr.inflights.full()) pr.inflights.freeFirstOne();
      // Possibly lost appends: an (empty) append makes the follower reveal a gap. Coalesced with
      // any other append owed to this peer in the same Ready.
      this.pendingAppend.add(m.from);
    }
    if (this.readOnlyOption !== "safe" || m.context.length === 0) return;
    const acks = this.readOnly.recvAck(m.from, m.context);
    if (!acks) return;
    const votes = new Map<NodeId, boolean>();
    for (const id of acks) votes.set(id, true);
    if (voteResult(this.confState.voters, votes) !== "won") return;
    for (const rs of this.readOnly.advance(m.context)) this.respondToRead(rs.req, rs.index);
  }

  private handleSnapshotResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (pr.state !== "snapshot" || pr.pendingSnapshot !== m.index || !pr.snapshotSend) return;
    if (m.reject) {
      pr.becomeProbe();
      return;
    }
    const acked = m.snapshotOffset ?? 0;
    const total = pr.snapshotSend.snapshot.data.length;
    if (acked < 0 || acked > total) return;
    pr.snapshotSend.acked = acked;
    if (acked < total) this.sendSnapshotChunk(m.from, pr, acked);
  }

  private stepCandidate(m: Message, local: boolean): void {
    const myResp = this.role === "pre-candidate" ? MessageType.PreVoteResponse : MessageType.VoteResponse;
    switch (m.type) {
      case MessageType.Propose:
        this.drop(local, "no-leader", `node ${this.id} is campaigning in term ${this.term}`);
        return;
      case MessageType.ReadIndex:
      case MessageType.TransferLeader:
        this.drop(local, "no-leader", `node ${this.id} is campaigning in term ${this.term}`);
        return;
      case MessageType.Append:
        this.becomeFollower(m.term, m.from);
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snapshot:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshotChunk(m);
        return;
      case myResp: {
        const res = this.poll(m.from, !m.reject);
        if (res === "won") {
          if (this.role === "pre-candidate") this.startCampaign("election");
          else {
            this.becomeLeader();
            this.bcastAppend();
          }
        } else if (res === "lost") {
          this.becomeFollower(this.term, "");
        }
        return;
      }
    }
  }

  private stepFollower(m: Message, local: boolean): void {
    switch (m.type) {
      case MessageType.Propose:
        if (!local) return; // never forward twice: a stale forward is dropped, the client retries
        if (this.lead === "") {
          this.drop(local, "no-leader");
          return;
        }
        if (this.disableProposalForwarding) {
          this.drop(local, "not-leader", `leader is ${this.lead}`);
          return;
        }
        this.send({ ...m, from: this.id, to: this.lead });
        return;
      case MessageType.Append:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case MessageType.Snapshot:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshotChunk(m);
        return;
      case MessageType.TransferLeader:
        if (!local) return;
        if (this.lead === "") {
          this.drop(local, "no-leader");
          return;
        }
        this.send({ ...m, to: this.lead });
        return;
      case MessageType.TimeoutNow:
        // Leadership transfer: campaign at once, skipping pre-vote and the lease check.
        this.hup(true);
        return;
      case MessageType.ReadIndex:
        if (!local) return;
        if (this.lead === "") {
          this.drop(local, "no-leader");
          return;
        }
        this.send({ ...m, from: this.id, to: this.lead });
        return;
      case MessageType.ReadIndexResponse:
        this.readStates.push({ requestId: m.context, index: m.index });
        return;
    }
  }

  // ---------------------------------------------------------------- follower handlers

  private handleAppend(m: Message): void {
    if (m.index < this.raftLog.committed) {
      this.send(
        newMessage({
          type: MessageType.AppendResponse,
          from: this.id,
          to: m.from,
          index: this.raftLog.committed,
        }),
      );
      return;
    }
    const lastNew = this.raftLog.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      this.send(newMessage({ type: MessageType.AppendResponse, from: this.id, to: m.from, index: lastNew }));
      return;
    }
    // Tell the leader where our log might match so it can skip a whole divergent term at once.
    let hint = Math.min(m.index, this.raftLog.lastIndex());
    hint = this.raftLog.findConflictByTerm(hint, m.logTerm);
    const hintTerm = this.raftLog.term(hint) ?? 0;
    this.send(
      newMessage({
        type: MessageType.AppendResponse,
        from: this.id,
        to: m.from,
        index: m.index,
        reject: true,
        rejectHint: hint,
        logTerm: hintTerm,
      }),
    );
  }

  private handleHeartbeat(m: Message): void {
    this.raftLog.commitTo(m.commit);
    this.send(
      newMessage({ type: MessageType.HeartbeatResponse, from: this.id, to: m.from, context: m.context }),
    );
  }

  private handleSnapshotChunk(m: Message): void {
    const meta = m.snapshot!;
    if (meta.index <= this.raftLog.committed) {
      this.snapshotAssembly = undefined;
      this.send(
        newMessage({
          type: MessageType.AppendResponse,
          from: this.id,
          to: m.from,
          index: this.raftLog.committed,
        }),
      );
      return;
    }
    const offset = m.snapshotOffset ?? 0;
    const chunk = m.snapshotChunk ?? EMPTY;
    let a = this.snapshotAssembly;
    if (offset === 0) {
      a = { from: m.from, index: meta.index, term: meta.term, chunks: [], received: 0 };
      this.snapshotAssembly = a;
    } else if (!a || a.index !== meta.index || a.term !== meta.term || a.received !== offset) {
      // Out of order or from an older transfer: tell the leader where we are.
      const at = a && a.index === meta.index && a.term === meta.term ? a.received : 0;
      this.send(
        newMessage({
          type: MessageType.SnapshotResponse,
          from: this.id,
          to: m.from,
          index: meta.index,
          snapshotOffset: at,
        }),
      );
      return;
    }
    if (a.received + chunk.length > this.maxSnapshotBytes) {
      this.snapshotAssembly = undefined;
      this.send(
        newMessage({
          type: MessageType.SnapshotResponse,
          from: this.id,
          to: m.from,
          index: meta.index,
          reject: true,
        }),
      );
      return;
    }
    a.chunks.push(chunk);
    a.received += chunk.length;
    if (!m.snapshotDone) {
      this.send(
        newMessage({
          type: MessageType.SnapshotResponse,
          from: this.id,
          to: m.from,
          index: meta.index,
          snapshotOffset: a.received,
        }),
      );
      return;
    }
    this.snapshotAssembly = undefined;
    const data = new Uint8Array(a.received);
    let at = 0;
    for (const c of a.chunks) {
      data.set(c, at);
      at += c.length;
    }
    const snap: Snapshot = { metadata: meta, data };
    if (this.restore(snap)) {
      this.send(
        newMessage({
          type: MessageType.AppendResponse,
          from: this.id,
          to: m.from,
          index: this.raftLog.lastIndex(),
        }),
      );
    } else {
      this.send(
        newMessage({
          type: MessageType.AppendResponse,
          from: this.id,
          to: m.from,
          index: this.raftLog.committed,
        }),
      );
    }
  }

  /** Installs a snapshot from the leader; false if it is stale or our log already covers it. */
  private restore(s: Snapshot): boolean {
    if (s.metadata.index <= this.raftLog.committed) return false;
    if (this.role !== "follower") throw new RaftInvariantError(`restoring a snapshot as ${this.role}`);
    const cs = s.metadata.confState;
    // The snapshot may predate this node's own addition (a joiner catching up from a snapshot taken
    // before its AddLearner entry): it is still a committed prefix of the log, and the node learns
    // its membership by applying the entries after it.
    if (this.raftLog.matchTerm(s.metadata.index, s.metadata.term)) {
      // Our log already holds the snapshot's last entry: just fast-forward the commit index.
      this.raftLog.commitTo(s.metadata.index);
      return false;
    }
    this.raftLog.restore(s);
    this.applyConfState({ voters: sortIds(cs.voters), learners: sortIds(cs.learners), votersOutgoing: [] });
    return true;
  }

  // ---------------------------------------------------------------- leader replication

  private appendEntries(ents: Entry[]): boolean {
    let li = this.raftLog.lastIndex();
    const stamped = ents.map((e) => ({ term: this.term, index: ++li, type: e.type, data: e.data }));
    let size = 0;
    for (const e of stamped) size += e.data.length;
    // A single large proposal is always accepted when nothing is uncommitted, so progress is possible.
    if (this.maxUncommittedSize > 0 && this.uncommittedSize > 0 && size > 0) {
      if (this.uncommittedSize + size > this.maxUncommittedSize) return false;
    }
    this.uncommittedSize += size;
    this.raftLog.append(stamped);
    // The leader's own match does not move here: the entries are not durable until the driver has
    // persisted this Ready and called advance(), which acknowledges them (see advance()).
    return true;
  }

  private reduceUncommittedSize(size: number): void {
    if (this.role !== "leader") return;
    this.uncommittedSize = Math.max(0, this.uncommittedSize - size);
  }

  private maybeCommit(): boolean {
    const mci = committedIndex(this.confState.voters, (id) => this.prs.get(id)?.match ?? 0);
    const before = this.raftLog.committed;
    if (!this.raftLog.maybeCommit(mci, this.term)) return false;
    if (before < this.raftLog.committed) this.releasePendingReads();
    return true;
  }

  private markBroadcast(): void {
    for (const id of this.peerIds()) if (id !== this.id) this.pendingAppend.add(id);
  }

  private bcastAppend(): void {
    for (const id of this.peerIds()) {
      if (id === this.id) continue;
      this.sendAppend(id);
    }
  }

  /** Sends an append (possibly empty, to carry the commit index), then more while the pipeline allows. */
  private sendAppend(to: NodeId): void {
    if (!this.maybeSendAppend(to, true)) return;
    const pr = this.prs.get(to)!;
    while (pr.state === "replicate" && this.maybeSendAppend(to, false)) {}
  }

  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.prs.get(to);
    if (!pr || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.raftLog.term(prevIndex);
    let ents: Entry[] = [];
    let compacted = prevTerm === undefined;
    if (!compacted) {
      try {
        ents = this.raftLog.entries(pr.next, this.maxSizePerMsg);
      } catch (err) {
        if (!(err instanceof CompactedError)) throw err;
        compacted = true;
      }
    }
    if (compacted) return this.sendSnapshot(to, pr);
    if (ents.length === 0 && !sendIfEmpty) return false;
    let bytes = 0;
    for (const e of ents) bytes += entrySize(e);
    this.send(
      newMessage({
        type: MessageType.Append,
        from: this.id,
        to,
        index: prevIndex,
        logTerm: prevTerm!,
        entries: ents,
        commit: this.raftLog.committed,
      }),
    );
    const last = ents[ents.length - 1];
    pr.sentEntries(last ? last.index : prevIndex, ents.length, bytes);
    return true;
  }

  private sendSnapshot(to: NodeId, pr: Progress): boolean {
    if (!pr.recentActive) return false; // do not stream a snapshot into the void
    const snap = this.raftLog.snapshot();
    if (snap.metadata.index === 0) {
      throw new RaftInvariantError(
        `peer ${to} needs a snapshot but none exists (first index ${this.raftLog.firstIndex()})`,
      );
    }
    pr.becomeSnapshot(snap);
    this.sendSnapshotChunk(to, pr, 0);
    return true;
  }

  private sendSnapshotChunk(to: NodeId, pr: Progress, offset: number): void {
    const snap = pr.snapshotSend!.snapshot;
    const chunk = snap.data.subarray(offset, offset + this.snapshotChunkSize);
    this.send(
      newMessage({
        type: MessageType.Snapshot,
        from: this.id,
        to,
        index: snap.metadata.index,
        logTerm: snap.metadata.term,
        snapshot: snap.metadata,
        snapshotChunk: chunk,
        snapshotOffset: offset,
        snapshotDone: offset + chunk.length >= snap.data.length,
      }),
    );
  }

  private bcastHeartbeat(): void {
    this.bcastHeartbeatWithContext(this.readOnly.lastPendingContext() ?? EMPTY);
  }

  private bcastHeartbeatWithContext(ctx: Uint8Array): void {
    for (const id of this.peerIds()) {
      if (id === this.id) continue;
      const pr = this.prs.get(id)!;
      // Never tell a follower to commit past what it is known to hold.
      const commit = Math.min(pr.match, this.raftLog.committed);
      this.send(newMessage({ type: MessageType.Heartbeat, from: this.id, to: id, commit, context: ctx }));
    }
  }

  private send(m: Message): void {
    const termed =
      m.type === MessageType.Vote ||
      m.type === MessageType.VoteResponse ||
      m.type === MessageType.PreVote ||
      m.type === MessageType.PreVoteResponse;
    if (termed) {
      if (m.term === 0) throw new RaftInvariantError(`${MessageType[m.type]} must carry a term`);
    } else if (!isLocalTermless(m.type)) {
      m.term = this.term;
    }
    if (m.to === this.id) throw new RaftInvariantError(`${MessageType[m.type]} addressed to self`);
    if (sendableBeforePersist(m.type)) this.msgs.push(m);
    else this.msgsAfterPersist.push(m);
  }

  // ---------------------------------------------------------------- membership

  /**
   * A brand-new group (empty storage, initial voters given) starts like etcd's Bootstrap: one
   * committed ConfChange entry per initial member at term 1, identical on every initial member.
   * A node that joins later replays these from index 1 and so learns the configuration from the log.
   */
  private bootstrap(voters: NodeId[], learners: NodeId[]): void {
    const ccs: ConfChange[] = [
      ...sortIds(voters).map((nodeId) => ({ type: ConfChangeType.AddVoter, nodeId, address: "" })),
      ...sortIds(learners).map((nodeId) => ({ type: ConfChangeType.AddLearner, nodeId, address: "" })),
    ];
    const ents: Entry[] = ccs.map((cc, k) => ({
      term: 1,
      index: k + 1,
      type: EntryType.ConfChange,
      data: encodeConfChange(cc),
    }));
    this.raftLog.append(ents);
    this.raftLog.committed = ents.length;
    this.term = 1;
    // Take effect now so the node can campaign; re-applying them later changes nothing.
    for (const cc of ccs) this.applyConfChangeToConfig(cc);
  }

  /** Updates the configuration only (replay and bootstrap); false if the change is invalid. */
  private applyConfChangeToConfig(cc: ConfChange): boolean {
    if (validateConfChange(this.confState, cc) !== undefined) return false; // rejected identically everywhere
    this.applyConfState(applyToConfState(this.confState, cc));
    return true;
  }

  private applyConfChange(cc: ConfChange): void {
    if (!this.applyConfChangeToConfig(cc)) return;
    if (this.role !== "leader") return;
    if (!this.isVoter(this.id)) {
      // Removed (or demoted) leader: step down; the remaining voters elect a new leader.
      this.becomeFollower(this.term, "");
      return;
    }
    if (this.leadTransferee !== "" && !this.isVoter(this.leadTransferee)) this.leadTransferee = "";
    // A smaller quorum may commit more right away; new members need their first append.
    this.maybeCommit();
    this.markBroadcast();
  }

  private applyConfState(cs: ConfState): void {
    this.confState = cs;
    this.members = cs.voters.concat(cs.learners);
    const last = this.raftLog.lastIndex();
    const members = new Set(this.peerIds());
    for (const id of [...this.prs.keys()]) if (!members.has(id)) this.prs.delete(id);
    for (const id of this.peerIds()) {
      const learner = cs.learners.includes(id);
      const pr = this.prs.get(id);
      if (pr) {
        pr.isLearner = learner;
      } else {
        const fresh = new Progress(last + 1, this.maxInflightMsgs, this.maxInflightBytes, learner);
        // A new member counts as active so check-quorum does not depose the leader at once and a
        // snapshot may be sent to it.
        fresh.recentActive = true;
        if (id === this.id) fresh.match = this.raftLog.persistedLastIndex();
        this.prs.set(id, fresh);
      }
    }
  }
}
