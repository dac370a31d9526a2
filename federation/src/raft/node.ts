// raft-ts: RaftNode, the driver that gives the pure core a clock, a disk, a network and an
// application. One loop drains Ready batches without waiting for the disk: send → apply → write →
// advance; one fsync runs at a time and covers every batch written meanwhile (group commit), and
// as it completes those batches' acknowledgements leave and the core hears they are durable.
import { decodeConfChange } from "./confchange.js";
import { ProposalDroppedError } from "./errors.js";
import { type RaftLogger, silentRaftLogger } from "./logger.js";
import { type RaftConfig, RaftCore, type RaftStatus } from "./raft.js";
import {
  type ConfChange,
  ConfChangeType,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  type NodeId,
  type Ready,
  type Snapshot,
  type StateMachine,
  type Transport,
  type WritableStorage,
} from "./types.js";

export interface RaftNodeOptions<R> {
  id: NodeId;
  /**
   * Member addresses. With empty storage and `join` unset these are the founding voters; with
   * `join` they only tell a new node where the existing members are until it learns the rest.
   */
  peers: Record<NodeId, string>;
  /** Empty storage means "wait to be added by the leader" rather than "found a new group". */
  join?: boolean;
  storage: WritableStorage;
  transport: Transport;
  stateMachine: StateMachine<R>;
  logger?: RaftLogger;
  /** Milliseconds per core tick. Default 100 (DESIGN §5: heartbeat 100 ms). */
  tickMs?: number;
  /** Ticks between heartbeats. Default 1. */
  heartbeatTicks?: number;
  /** Ticks before an election; the core randomizes it to [n, 2n). Default 10 (1 s → 2 s). */
  electionTicks?: number;
  /** Other core settings (pre-vote, check-quorum, size and in-flight bounds, ...). */
  raft?: Omit<
    RaftConfig,
    "id" | "storage" | "randomInt" | "applied" | "voters" | "electionTicks" | "heartbeatTicks"
  >;
  /** Take a snapshot and compact the log after this many applied entries; 0 = never. Default 10 000. */
  snapshotEvery?: number;
  /** Entries kept behind a snapshot for slow followers. Default 1 000. */
  snapshotKeepEntries?: number;
  /** A proposal not applied within this time is rejected (its outcome is then unknown). Default 10 s. */
  proposalTimeoutMs?: number;
  /** A read barrier not satisfied within this time is rejected. Default 5 s. */
  readTimeoutMs?: number;
  /** Proposals and reads waiting at once; more are refused. Default 65 536. */
  maxPending?: number;
  /**
   * Ready batches whose fsync may be in flight at once: the loop takes the next batch while
   * earlier ones sync (their acknowledgements leave in order as each completes). Default 16.
   */
  maxSyncsInFlight?: number;
  /**
   * How long the leader holds an append that carries no entries (it only tells a follower the
   * new commit index, or probes) before sending it. An append with entries to the same follower
   * within this time carries the same or a newer commit index and replaces it, so a steady writer
   * costs one message and one acknowledgement per follower per write instead of two. Followers
   * learn a commit at most this much later; safety never depends on when they do. 0 sends at
   * once. Default 2 ms.
   */
  commitNotifyDelayMs?: number;
  /**
   * A follower whose unsynced writes hold at most this many entries, with no other fsync in
   * flight, fsyncs on its own thread at the end of the event-loop turn (storage.syncBlocking())
   * instead of in the thread pool: a lone append — one client writing — then skips two thread
   * hand-offs on the write's critical path, while everything that arrives in the same turn still
   * shares that fsync. Larger batches keep the pipelined fsync, which overlaps the next batch's
   * work. A leader does the same when leaderInlineSync is on. 0 = never. Default 1.
   */
  inlineSyncMaxEntries?: number;
  /**
   * Whether the leader, too, syncs a lone small write on its own thread (same bound as
   * inlineSyncMaxEntries). Its appends reach the socket first (the fsync waits for the check
   * phase, behind them), so the followers' work still overlaps the leader's fsync; what it gives
   * up is taking their acknowledgements while that fsync runs. Only while at most one proposal
   * made on this node is pending (a lone writer): with more, the loop keeps taking and
   * replicating requests during the fsync. Default false: idle benchmark runs showed no gain
   * out of the run-to-run spread (docs/raft.md), and a leader then never blocks on its disk.
   */
  leaderInlineSync?: boolean;
  /** Called once if the node stops on an unrecoverable error (storage failure, broken invariant). */
  onFatal?: (err: Error) => void;
  /** Randomness for election timeouts; Math.random by default. */
  random?: () => number;
}

export type RaftNodeErrorCode =
  | "dropped"
  | "timeout"
  | "leader-changed"
  | "overwritten"
  | "closed"
  | "failed"
  | "too-many-pending";

/** Why a propose/read/membership call failed, with who the leader is (when known) to retry there. */
export class RaftNodeError extends Error {
  constructor(
    readonly code: RaftNodeErrorCode,
    message: string,
    readonly leader: NodeId,
    readonly leaderAddress: string,
    options?: { cause?: unknown },
  ) {
    super(
      `raft: ${message.replace(/^raft: /, "")}${leader ? ` (leader is ${leader}${leaderAddress ? ` at ${leaderAddress}` : ""})` : " (no leader known)"}`,
      options,
    );
    this.name = "RaftNodeError";
  }
}

export interface RaftNodeStatus extends RaftStatus {
  addresses: Record<NodeId, string>;
  pendingProposals: number;
  pendingReads: number;
  /** Index of the newest snapshot in storage. */
  snapshotIndex: number;
}

interface PendingProposal<R> {
  resolve(r: R): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
  /** Log position once this node has seen the entry in its log. */
  index?: number;
}

interface PendingRead {
  resolve(): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
  index?: number;
  ctx: Uint8Array;
  /** Ticks since the request was (re)issued; a request forwarded to the leader may be lost. */
  age: number;
}

/** Ticks after which an unanswered read request is issued again. */
const READ_RETRY_TICKS = 5;

/** What a Ready still owes once its writes are durable. */
interface PersistJob {
  after: Message[];
  last?: { index: number; term: number };
  mustSync: boolean;
  /** Entries written by this job's Ready. */
  entries: number;
}

interface PendingConf {
  resolve(): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

// Every application command is wrapped so the proposing node recognises its entry when applied:
// version | u16 origin length | origin id | u48 sequence | payload.
const ENVELOPE_VERSION = 0xa1;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function wrapCommand(origin: Uint8Array, seq: number, data: Uint8Array): Uint8Array {
  const out = Buffer.allocUnsafe(1 + 2 + origin.length + 6 + data.byteLength);
  out[0] = ENVELOPE_VERSION;
  out.writeUInt16BE(origin.length, 1);
  out.set(origin, 3);
  out.writeUIntBE(seq, 3 + origin.length, 6);
  out.set(data, 9 + origin.length);
  return out;
}

function unwrapCommand(data: Uint8Array): { origin: string; seq: number; payload: Uint8Array } | undefined {
  if (data.byteLength < 9 || data[0] !== ENVELOPE_VERSION) return undefined;
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const n = b.readUInt16BE(1);
  if (9 + n > b.length) return undefined;
  return {
    origin: decoder.decode(b.subarray(3, 3 + n)),
    seq: b.readUIntBE(3 + n, 6),
    payload: b.subarray(9 + n),
  };
}

// Snapshots carry the members' addresses next to the application state, so a node restored from
// a snapshot can reach peers whose membership changes were compacted away.
function wrapSnapshot(addresses: Record<NodeId, string>, app: Uint8Array): Uint8Array {
  const meta = Buffer.from(JSON.stringify({ addresses }), "utf8");
  const out = Buffer.allocUnsafe(4 + meta.length + app.byteLength);
  out.writeUInt32BE(meta.length, 0);
  meta.copy(out, 4);
  out.set(app, 4 + meta.length);
  return out;
}

function unwrapSnapshot(data: Uint8Array): { addresses: Record<NodeId, string>; app: Uint8Array } {
  if (data.byteLength === 0) return { addresses: {}, app: data };
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const n = b.readUInt32BE(0);
  if (4 + n > b.length)
    throw new Error("raft node: snapshot data is malformed (address header runs past the end)");
  const meta = JSON.parse(b.subarray(4, 4 + n).toString("utf8")) as { addresses: Record<NodeId, string> };
  return { addresses: meta.addresses ?? {}, app: b.subarray(4 + n) };
}

export class RaftNode<R = unknown> {
  readonly id: NodeId;
  private readonly core: RaftCore;
  private readonly storage: WritableStorage;
  private readonly transport: Transport;
  private readonly sm: StateMachine<R>;
  private readonly log: RaftLogger;
  private readonly opts: Required<
    Pick<
      RaftNodeOptions<R>,
      | "tickMs"
      | "snapshotEvery"
      | "snapshotKeepEntries"
      | "proposalTimeoutMs"
      | "readTimeoutMs"
      | "maxPending"
      | "maxSyncsInFlight"
      | "commitNotifyDelayMs"
      | "inlineSyncMaxEntries"
    >
  >;
  private readonly originBytes: Uint8Array;
  private readonly addresses = new Map<NodeId, string>();
  private readonly proposals = new Map<number, PendingProposal<R>>();
  private readonly proposalAt = new Map<number, number>(); // log index → proposal seq
  private readonly reads = new Map<number, PendingRead>();
  private readonly confs = new Map<string, PendingConf>();
  /** Membership changes applied in the current batch; their callers hear back after advance(). */
  private confsDone: PendingConf[] = [];
  private readonly transfers = new Set<{
    to: NodeId;
    resolve(): void;
    reject(e: Error): void;
    timer: NodeJS.Timeout;
  }>();
  private nextSeq = 1;
  private nextReadId = 1;
  private applied = 0;
  private snapshotIndex = 0;
  /** A snapshot being written by the storage (compactAsync); at most one at a time. */
  private compacting: Promise<void> | undefined;
  /** A member was added while the log is compacted: it will need a snapshot that includes it. */
  private snapshotForNewMember = false;
  private leader: NodeId = "";
  private persistedHard: HardState;
  private ticker: NodeJS.Timeout | undefined;
  private running = false;
  private loopDone: Promise<void> = Promise.resolve();
  /**
   * Readies already advanced whose writes are not yet known durable, oldest first: `waiting` are
   * not covered by an fsync yet, `syncing` by the one running. One fsync runs at a time and the
   * next covers every Ready written meanwhile (group commit).
   */
  private waiting: PersistJob[] = [];
  private syncing: PersistJob[] | undefined;
  /** A blocking fsync of `waiting` is scheduled for the end of this event-loop turn. */
  private inlineSyncPending = false;
  /** A thread-pool sync waits for the check phase, behind the messages this turn handed over. */
  private syncStartPending = false;
  private readonly leaderInlineSync: boolean;
  /** Resolved each time a batch of jobs is released (the loop waits here when too many wait). */
  private released: (() => void)[] = [];
  private closed = false;
  private fatal: Error | undefined;
  private readonly onFatal: ((err: Error) => void) | undefined;
  /** Entry-less appends waiting out commitNotifyDelayMs, at most one per follower (the newest). */
  private readonly heldAppends = new Map<NodeId, Message>();
  private heldTimer: NodeJS.Timeout | undefined;

  constructor(o: RaftNodeOptions<R>) {
    this.id = o.id;
    this.storage = o.storage;
    this.transport = o.transport;
    this.sm = o.stateMachine;
    this.log = o.logger ?? silentRaftLogger;
    this.onFatal = o.onFatal;
    this.opts = {
      tickMs: o.tickMs ?? 100,
      snapshotEvery: o.snapshotEvery ?? 10_000,
      snapshotKeepEntries: o.snapshotKeepEntries ?? 1_000,
      proposalTimeoutMs: o.proposalTimeoutMs ?? 10_000,
      readTimeoutMs: o.readTimeoutMs ?? 5_000,
      maxPending: o.maxPending ?? 65_536,
      maxSyncsInFlight: o.maxSyncsInFlight ?? 16,
      commitNotifyDelayMs: o.commitNotifyDelayMs ?? 2,
      inlineSyncMaxEntries: o.inlineSyncMaxEntries ?? 1,
    };
    this.leaderInlineSync = o.leaderInlineSync ?? false;
    for (const [k, v] of Object.entries(this.opts)) {
      if (!Number.isFinite(v) || v < 0 || (k === "tickMs" && v <= 0)) {
        throw new RangeError(
          `raft node: option ${k} must be a ${k === "tickMs" ? "positive" : "non-negative"} number`,
        );
      }
    }
    this.originBytes = encoder.encode(o.id);
    const random = o.random ?? Math.random;

    // The application state starts from the newest snapshot; the core hands out the rest again.
    const snap = this.storage.snapshot();
    if (snap.metadata.index > 0) this.restoreSnapshot(snap);
    for (const [id, addr] of Object.entries(o.peers))
      if (!this.addresses.has(id)) this.addresses.set(id, addr);
    this.persistedHard = this.storage.initialState().hardState;
    const initial = this.storage.initialState().confState;
    const fresh = initial.voters.length === 0 && initial.learners.length === 0;
    this.core = new RaftCore({
      ...o.raft,
      id: o.id,
      storage: this.storage,
      applied: this.applied,
      voters: fresh && !o.join ? Object.keys(o.peers) : undefined,
      electionTicks: o.electionTicks ?? 10,
      heartbeatTicks: o.heartbeatTicks ?? 1,
      randomInt: (n) => Math.floor(random() * n),
    });
    for (const [id, addr] of this.addresses) if (id !== this.id) this.transport.addPeer(id, addr);
    this.transport.onMessage((m) => this.onMessage(m));
  }

  /** Starts ticking. The node answers messages from the moment it is constructed. */
  start(): this {
    if (this.ticker || this.closed) return this;
    this.ticker = setInterval(() => {
      if (this.closed || this.fatal) return;
      this.guard(() => this.core.tick());
      this.retryReads();
    }, this.opts.tickMs);
    this.log.info(
      {
        id: this.id,
        applied: this.applied,
        tickMs: this.opts.tickMs,
        peers: Object.fromEntries(this.addresses),
      },
      "raft node started",
    );
    return this;
  }

  /** Replicates `data`; resolves with the state machine's apply() result once applied on this node. */
  propose(data: Uint8Array): Promise<R> {
    const seq = this.nextSeq++;
    return new Promise<R>((resolve, reject) => {
      if (!this.admit(reject)) return;
      const timer = setTimeout(() => {
        this.dropProposal(
          seq,
          "timeout",
          `proposal not applied within ${this.opts.proposalTimeoutMs} ms; outcome unknown`,
        );
      }, this.opts.proposalTimeoutMs);
      timer.unref?.();
      this.proposals.set(seq, { resolve, reject, timer });
      try {
        this.core.propose(wrapCommand(this.originBytes, seq, data));
      } catch (err) {
        this.dropProposal(seq, "dropped", (err as Error).message, err);
        if (!(err instanceof ProposalDroppedError)) this.die(err as Error);
        return;
      }
      this.kick();
    });
  }

  /** A linearizable read barrier: resolves once this node has applied everything committed before the call. */
  read(): Promise<void> {
    const id = this.nextReadId++;
    return new Promise<void>((resolve, reject) => {
      if (!this.admit(reject)) return;
      const timer = setTimeout(() => {
        this.reads.delete(id);
        reject(this.error("timeout", `read barrier not confirmed within ${this.opts.readTimeoutMs} ms`));
      }, this.opts.readTimeoutMs);
      timer.unref?.();
      // The leader keys pending reads by this context, so it names the node as well as the read.
      const ctx = Buffer.allocUnsafe(8 + this.originBytes.length);
      ctx.writeDoubleBE(id, 0);
      ctx.set(this.originBytes, 8);
      this.reads.set(id, { resolve, reject, timer, ctx, age: 0 });
      try {
        this.core.readIndex(ctx);
      } catch (err) {
        clearTimeout(timer);
        this.reads.delete(id);
        reject(this.error("dropped", (err as Error).message, err));
        return;
      }
      this.kick();
    });
  }

  addVoter(id: NodeId, address: string): Promise<void> {
    return this.changeMembership({ type: ConfChangeType.AddVoter, nodeId: id, address });
  }

  addLearner(id: NodeId, address: string): Promise<void> {
    return this.changeMembership({ type: ConfChangeType.AddLearner, nodeId: id, address });
  }

  removeNode(id: NodeId): Promise<void> {
    return this.changeMembership({ type: ConfChangeType.RemoveNode, nodeId: id, address: "" });
  }

  /** Asks the leader to hand over to `to`; resolves when `to` is leader. */
  transferLeadership(to: NodeId, timeoutMs = 5_000): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (!this.admit(reject)) return;
      if (this.leader === to) {
        resolve();
        return;
      }
      const entry = {
        to,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.transfers.delete(entry);
          reject(this.error("timeout", `leadership did not move to ${to} within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      entry.timer.unref?.();
      this.transfers.add(entry);
      try {
        this.core.transferLeadership(to);
      } catch (err) {
        clearTimeout(entry.timer);
        this.transfers.delete(entry);
        reject(this.error("dropped", (err as Error).message, err));
        return;
      }
      this.kick();
    });
  }

  /** Starts an election at once (tests and operators; normally timeouts do this). */
  campaign(): void {
    this.guard(() => this.core.campaign());
  }

  status(): RaftNodeStatus {
    return {
      ...this.core.status(),
      addresses: Object.fromEntries(this.addresses),
      pendingProposals: this.proposals.size,
      pendingReads: this.reads.size,
      snapshotIndex: this.snapshotIndex,
    };
  }

  isLeader(): boolean {
    return this.core.status().role === "leader";
  }

  leaderId(): NodeId {
    return this.leader;
  }

  addressOf(id: NodeId): string {
    return this.addresses.get(id) ?? "";
  }

  /** Stops ticking, finishes the batch in progress, fails waiting calls, closes transport and storage. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.ticker) clearInterval(this.ticker);
    await this.loopDone;
    this.sendHeld();
    await this.allPersisted();
    await this.compacting;
    this.failAll("closed", "node is closed");
    await this.transport.close();
    await this.storage.close();
    this.log.info({ id: this.id, applied: this.applied }, "raft node closed");
  }

  // ---------------------------------------------------------------- internals

  private admit(reject: (e: Error) => void): boolean {
    if (this.fatal) {
      reject(this.error("failed", `node stopped after an unrecoverable error: ${this.fatal.message}`));
      return false;
    }
    if (this.closed) {
      reject(this.error("closed", "node is closed"));
      return false;
    }
    if (this.proposals.size + this.reads.size >= this.opts.maxPending) {
      reject(
        this.error(
          "too-many-pending",
          `${this.opts.maxPending} proposals and reads already waiting (maxPending)`,
        ),
      );
      return false;
    }
    return true;
  }

  private error(code: RaftNodeErrorCode, message: string, cause?: unknown): RaftNodeError {
    const leader = this.leader;
    return new RaftNodeError(code, message, leader, leader ? (this.addresses.get(leader) ?? "") : "", {
      cause,
    });
  }

  private changeMembership(cc: ConfChange): Promise<void> {
    const key = `${cc.type}:${cc.nodeId}`;
    return new Promise<void>((resolve, reject) => {
      if (!this.admit(reject)) return;
      if (this.confs.has(key)) {
        reject(this.error("dropped", `the same membership change for ${cc.nodeId} is already in progress`));
        return;
      }
      const timer = setTimeout(() => {
        this.confs.delete(key);
        reject(
          this.error(
            "timeout",
            `membership change for ${cc.nodeId} not applied within ${this.opts.proposalTimeoutMs} ms`,
          ),
        );
      }, this.opts.proposalTimeoutMs);
      timer.unref?.();
      this.confs.set(key, { resolve, reject, timer });
      try {
        this.core.proposeConfChange(cc);
      } catch (err) {
        clearTimeout(timer);
        this.confs.delete(key);
        reject(this.error("dropped", (err as Error).message, err));
        return;
      }
      this.kick();
    });
  }

  private onMessage(m: Message): void {
    if (this.closed || this.fatal) return;
    this.guard(() => this.core.step(m));
  }

  /** Runs a core call; an exception from the core other than a dropped proposal stops the node. */
  private guard(f: () => void): void {
    try {
      f();
    } catch (err) {
      if (err instanceof ProposalDroppedError) throw err;
      this.die(err as Error);
      return;
    }
    this.kick();
  }

  private kick(): void {
    if (this.running || this.closed || this.fatal) return;
    if (!this.core.hasReady()) return;
    this.running = true;
    // With nothing being persisted, this is a lone request (one client's write, a follower's
    // single append): handle it as soon as the current callback ends instead of a loop turn
    // later. Under load a sync is in flight, and waiting for the check phase gathers everything
    // that arrives in this poll phase into one Ready (one append per follower, one fsync).
    // With a blocking fsync scheduled for the end of this turn, that fsync is the gathering
    // point: everything handled before it shares it.
    const schedule = this.pendingJobs() === 0 || this.inlineSyncPending ? queueMicrotask : setImmediate;
    this.loopDone = new Promise<void>((resolve) => {
      schedule(() => {
        this.loop().finally(() => {
          this.running = false;
          resolve();
          if (!this.closed && !this.fatal) this.kick();
        });
      });
    });
  }

  private async loop(): Promise<void> {
    try {
      while (!this.fatal && this.core.hasReady()) {
        while (this.pendingJobs() >= Math.max(1, this.opts.maxSyncsInFlight) && !this.fatal) {
          await new Promise<void>((resolve) => this.released.push(resolve));
        }
        const rd = this.core.ready();
        if (rd.snapshot) {
          // Rare: store and restore a snapshot from the leader with nothing else in flight.
          await this.allPersisted();
          await this.handleSnapshotReady(rd, rd.snapshot);
          this.core.advance();
        } else {
          this.startReady(rd);
          this.core.advance({ persisted: false });
        }
        for (const p of this.confsDone.splice(0)) p.resolve();
        this.maybeSnapshot();
        if (this.closed) return;
      }
    } catch (err) {
      this.die(err as Error);
    }
  }

  /**
   * Handles a Ready without waiting for its fsync: send `messages`, apply committed entries,
   * write, start the sync. When the sync completes (in order with earlier ones), its
   * acknowledgements leave and the core hears its entries are durable (persisted()), which is
   * when the leader counts its own entries toward a quorum.
   */
  private startReady(rd: Ready): void {
    if (rd.softState) this.onSoftState(rd.softState.leader);
    if (rd.messages.length > 0) this.send(rd.messages);
    if (rd.entries.length > 0) this.noteOwnEntries(rd.entries);
    this.applyReady(rd);
    let mustSync = false;
    if (rd.entries.length > 0) {
      this.storage.append(rd.entries);
      mustSync = true;
    }
    if (rd.hardState) {
      this.storage.setHardState(rd.hardState);
      // Term and vote must be durable before anyone hears of them; the commit index need not be
      // (it is re-learned from the leader), so a commit-only change rides along with the next sync.
      if (rd.hardState.term !== this.persistedHard.term || rd.hardState.vote !== this.persistedHard.vote) {
        mustSync = true;
      }
      this.persistedHard = rd.hardState;
    }
    this.waiting.push({
      after: rd.messagesAfterPersist,
      last: rd.entries[rd.entries.length - 1],
      mustSync,
      entries: rd.entries.length,
    });
    this.pumpSyncs(rd.messages.length > 0);
  }

  /**
   * Sends a Ready's `messages`, holding entry-less appends for commitNotifyDelayMs: the next
   * append with entries to that follower supersedes one (it carries a commit index at least as
   * new), and the timer sends whatever is still held.
   */
  private send(messages: Message[]): void {
    if (this.opts.commitNotifyDelayMs === 0) {
      this.transport.send(messages);
      return;
    }
    const out: Message[] = [];
    for (const m of messages) {
      if (m.type === MessageType.Append) {
        if (m.entries.length === 0) {
          this.heldAppends.set(m.to, m);
          continue;
        }
        this.heldAppends.delete(m.to);
      }
      out.push(m);
    }
    if (out.length > 0) this.transport.send(out);
    if (this.heldAppends.size > 0 && !this.heldTimer) {
      this.heldTimer = setTimeout(() => this.sendHeld(), this.opts.commitNotifyDelayMs);
    }
  }

  private sendHeld(): void {
    if (this.heldTimer) clearTimeout(this.heldTimer);
    this.heldTimer = undefined;
    if (this.heldAppends.size === 0) return;
    const held = [...this.heldAppends.values()];
    this.heldAppends.clear();
    if (!this.closed && !this.fatal) this.transport.send(held);
  }

  private pendingJobs(): number {
    return this.waiting.length + (this.syncing?.length ?? 0);
  }

  /**
   * Starts the next fsync if none runs, or releases jobs that need none (in order). `justSent`:
   * the Ready being written handed messages to the transport in this callback (the leader's
   * appends). Those reach the socket only at the check phase (gRPC's HTTP/2 session writes from a
   * native immediate), so the WAL write and the fsync's hand-off to the thread pool wait for the
   * check phase too, behind them: on two cores the pool thread waking would otherwise compete with
   * the appends it should overlap, and they would leave after this node's own disk write.
   */
  private pumpSyncs(justSent = false): void {
    if (this.syncing || this.inlineSyncPending || this.syncStartPending) return;
    if (this.waiting.length === 0 || this.fatal) return;
    if (!this.waiting.some((j) => j.mustSync)) {
      const free = this.waiting;
      this.waiting = [];
      this.release(free);
      return;
    }
    if (this.shouldSyncInline()) {
      this.inlineSyncPending = true;
      setImmediate(() => this.syncInline());
      return;
    }
    if (justSent) {
      this.syncStartPending = true;
      setImmediate(() => {
        // Not skipped when closing: close() waits for every written batch to be durable.
        this.syncStartPending = false;
        this.pumpSyncs();
      });
      return;
    }
    const batch = this.waiting;
    this.waiting = [];
    this.syncing = batch;
    this.storage.sync().then(
      () => {
        this.syncing = undefined;
        this.release(batch);
        this.pumpSyncs();
      },
      (err) => this.die(err as Error),
    );
  }

  /** A lone small write: see `inlineSyncMaxEntries` and `leaderInlineSync`. */
  private shouldSyncInline(): boolean {
    if (!this.storage.syncBlocking || this.opts.inlineSyncMaxEntries === 0) return false;
    // A leader blocks its loop only for a lone writer: with other proposals of this node waiting,
    // requests arriving during the fsync must keep being taken and replicated (blocking there
    // halved 16-client throughput in an A/B at load 14).
    if (this.leader === this.id && (!this.leaderInlineSync || this.proposals.size > 1)) return false;
    let entries = 0;
    for (const j of this.waiting) entries += j.entries;
    return entries <= this.opts.inlineSyncMaxEntries;
  }

  /** The end of the turn that wrote a lone small batch: fsync here, then release what waited. */
  private syncInline(): void {
    this.inlineSyncPending = false;
    // Not skipped when closing: close() waits for every written batch to be durable.
    if (this.fatal || this.waiting.length === 0) return;
    const batch = this.waiting;
    this.waiting = [];
    try {
      this.storage.syncBlocking!();
    } catch (err) {
      this.die(err as Error);
      return;
    }
    this.release(batch);
    this.pumpSyncs();
  }

  /** The jobs' writes are durable: their acknowledgements leave, and the core hears it. */
  private release(batch: PersistJob[]): void {
    if (this.fatal) return;
    for (const j of batch) {
      if (j.after.length > 0) this.transport.send(j.after);
      if (j.last) {
        const { index, term } = j.last;
        this.guard(() => this.core.persisted(index, term));
      }
    }
    for (const r of this.released.splice(0)) r();
    this.kick();
  }

  /** Resolves once every advanced Ready's writes are durable (or the node failed). */
  private async allPersisted(): Promise<void> {
    while (this.pendingJobs() > 0 && !this.fatal) {
      await new Promise<void>((resolve) => this.released.push(resolve));
    }
  }

  /**
   * A Ready carrying a snapshot from the leader, handled with no other write in flight: store the
   * snapshot (and any entries and hard state), sync, send what waited for it, then restore the
   * state machine and apply.
   */
  private async handleSnapshotReady(rd: Ready, snap: Snapshot): Promise<void> {
    await this.compacting; // our own snapshot's write first: the storage takes one at a time
    if (rd.softState) this.onSoftState(rd.softState.leader);
    if (rd.messages.length > 0) this.send(rd.messages);
    if (rd.entries.length > 0) this.noteOwnEntries(rd.entries);
    this.storage.applySnapshot(snap);
    if (rd.entries.length > 0) this.storage.append(rd.entries);
    if (rd.hardState) {
      this.storage.setHardState(rd.hardState);
      this.persistedHard = rd.hardState;
    }
    await this.storage.sync();
    if (rd.messagesAfterPersist.length > 0) this.transport.send(rd.messagesAfterPersist);
    this.restoreSnapshot(snap);
    this.log.info({ id: this.id, index: snap.metadata.index }, "raft node: installed snapshot from leader");
    this.applyReady(rd);
  }

  /** Applies a Ready's committed entries and records its read states. */
  private applyReady(rd: Ready): void {
    for (const e of rd.committedEntries) this.applyEntry(e);
    for (const rs of rd.readStates) {
      const id = Buffer.from(
        rs.requestId.buffer,
        rs.requestId.byteOffset,
        rs.requestId.byteLength,
      ).readDoubleBE(0);
      const r = this.reads.get(id);
      if (r) r.index = rs.index;
    }
    this.resolveReads();
  }

  private onSoftState(leader: NodeId): void {
    if (leader === this.leader) return;
    const prev = this.leader;
    this.leader = leader;
    // Appends held from our own leadership are stale now.
    this.heldAppends.clear();
    this.log.info(
      { id: this.id, leader, previous: prev, term: this.core.status().term },
      "raft node: leader changed",
    );
    // Proposals not yet in our log were either dropped with the old leader or are lost in flight;
    // those already in the log stay: they will be applied or overwritten, and we find out which.
    for (const [seq, p] of this.proposals) {
      if (p.index === undefined)
        this.dropProposal(seq, "leader-changed", "leader changed before the proposal reached the log");
    }
    for (const t of this.transfers) {
      if (t.to === leader) {
        clearTimeout(t.timer);
        this.transfers.delete(t);
        t.resolve();
      }
    }
  }

  private noteOwnEntries(entries: Entry[]): void {
    for (const e of entries) {
      if (e.type !== EntryType.Normal) continue;
      const cmd = unwrapCommand(e.data);
      if (!cmd || cmd.origin !== this.id) continue;
      const p = this.proposals.get(cmd.seq);
      if (!p) continue;
      p.index = e.index;
      this.proposalAt.set(e.index, cmd.seq);
    }
  }

  private applyEntry(e: Entry): void {
    if (e.index <= this.applied) return; // already covered by a restored snapshot
    this.applied = e.index;
    const waiting = this.proposalAt.get(e.index);
    if (waiting !== undefined) this.proposalAt.delete(e.index);
    if (e.type === EntryType.ConfChange) {
      this.applyConfChange(decodeConfChange(e.data));
    } else if (e.data.byteLength > 0) {
      const cmd = unwrapCommand(e.data);
      const result = this.sm.apply(cmd ? { ...e, data: cmd.payload } : e);
      if (cmd && cmd.origin === this.id) {
        const p = this.proposals.get(cmd.seq);
        if (p) {
          clearTimeout(p.timer);
          this.proposals.delete(cmd.seq);
          p.resolve(result);
        }
        if (waiting === cmd.seq) return;
      }
    }
    // Our proposal had been at this index but a different entry won it (a new leader's log).
    if (waiting !== undefined)
      this.dropProposal(waiting, "overwritten", `log index ${e.index} went to another entry`);
  }

  private applyConfChange(cc: ConfChange): void {
    if (cc.type === ConfChangeType.RemoveNode) {
      this.addresses.delete(cc.nodeId);
      if (cc.nodeId !== this.id) this.transport.removePeer(cc.nodeId);
    } else {
      // A new member starts with an empty log and is caught up by snapshot when the log is
      // compacted; the core only installs a snapshot whose configuration names the node, so the
      // stored one must be retaken after this change.
      if (this.storage.firstIndex() > 1) this.snapshotForNewMember = true;
      if (cc.address) this.addresses.set(cc.nodeId, cc.address);
      if (cc.nodeId !== this.id && cc.address) this.transport.addPeer(cc.nodeId, cc.address);
    }
    this.log.info(
      { id: this.id, change: ConfChangeType[cc.type], node: cc.nodeId, address: cc.address },
      "raft node: membership changed",
    );
    const key = `${cc.type}:${cc.nodeId}`;
    const p = this.confs.get(key);
    if (p) {
      clearTimeout(p.timer);
      this.confs.delete(key);
      this.confsDone.push(p); // the core switches configuration in advance()
    }
  }

  private retryReads(): void {
    for (const r of this.reads.values()) {
      if (r.index !== undefined || ++r.age < READ_RETRY_TICKS) continue;
      r.age = 0;
      try {
        this.core.readIndex(r.ctx);
      } catch {
        // No leader right now; the next retry or the timeout settles it.
      }
    }
    this.kick();
  }

  private resolveReads(): void {
    for (const [id, r] of this.reads) {
      if (r.index !== undefined && r.index <= this.applied) {
        clearTimeout(r.timer);
        this.reads.delete(id);
        r.resolve();
      }
    }
  }

  private restoreSnapshot(snap: Snapshot): void {
    const { addresses, app } = unwrapSnapshot(snap.data);
    this.sm.restore(app);
    for (const [id, addr] of Object.entries(addresses)) {
      this.addresses.set(id, addr);
      if (id !== this.id && this.core) this.transport.addPeer(id, addr);
    }
    this.applied = Math.max(this.applied, snap.metadata.index);
    this.snapshotIndex = snap.metadata.index;
  }

  private maybeSnapshot(): void {
    if (this.compacting) return; // the next one is considered once this one is stored
    const due = this.opts.snapshotEvery > 0 && this.applied - this.snapshotIndex >= this.opts.snapshotEvery;
    const forMember = this.snapshotForNewMember && this.applied > this.snapshotIndex;
    this.snapshotForNewMember = false;
    if (!due && !forMember) return;
    const index = this.applied;
    const snap: Snapshot = {
      metadata: { index, term: this.storage.term(index), confState: this.core.status().config },
      data: wrapSnapshot(Object.fromEntries(this.addresses), this.sm.snapshot()),
    };
    this.snapshotIndex = index;
    const done = () =>
      this.log.info(
        { id: this.id, index, bytes: snap.data.byteLength, firstIndex: this.storage.firstIndex() },
        "raft node: took a snapshot and compacted the log",
      );
    if (!this.storage.compactAsync) {
      this.storage.compact(snap, this.opts.snapshotKeepEntries);
      done();
      return;
    }
    // The file (~14 MB at 100k intent objects) is written and fsynced on the thread pool while
    // the node keeps stepping: written synchronously it stalled each member for a second or more
    // on a loaded machine, all three at about the same index.
    this.compacting = this.storage
      .compactAsync(snap, this.opts.snapshotKeepEntries)
      .then(done, (err: Error) => this.die(err))
      .finally(() => {
        this.compacting = undefined;
      });
  }

  private dropProposal(seq: number, code: RaftNodeErrorCode, message: string, cause?: unknown): void {
    const p = this.proposals.get(seq);
    if (!p) return;
    clearTimeout(p.timer);
    this.proposals.delete(seq);
    if (p.index !== undefined && this.proposalAt.get(p.index) === seq) this.proposalAt.delete(p.index);
    p.reject(this.error(code, message, cause));
  }

  private failAll(code: RaftNodeErrorCode, message: string): void {
    for (const seq of [...this.proposals.keys()]) this.dropProposal(seq, code, message);
    for (const [id, r] of this.reads) {
      clearTimeout(r.timer);
      this.reads.delete(id);
      r.reject(this.error(code, message));
    }
    for (const [key, c] of this.confs) {
      clearTimeout(c.timer);
      this.confs.delete(key);
      c.reject(this.error(code, message));
    }
    for (const t of this.transfers) {
      clearTimeout(t.timer);
      t.reject(this.error(code, message));
    }
    this.transfers.clear();
  }

  private die(err: Error): void {
    if (this.fatal) return;
    this.fatal = err;
    if (this.ticker) clearInterval(this.ticker);
    if (this.heldTimer) clearTimeout(this.heldTimer);
    this.log.error(
      { id: this.id, err: err.message, stack: err.stack },
      "raft node stopped on an unrecoverable error",
    );
    this.failAll("failed", `node stopped after an unrecoverable error: ${err.message}`);
    for (const r of this.released.splice(0)) r(); // nothing more will be persisted
    this.onFatal?.(err);
  }
}
