// One deterministic simulation run: a raft-ts cluster of RaftCore + MemoryStorage nodes driven by a
// simulated clock, a faulty simulated network, crash-restarts that lose unsynced writes, membership
// changes and log compaction, with clients writing and reading (ReadIndex) a key-value store.
// Safety invariants are checked as the run goes, and the client history for linearizability at
// the end. Everything random comes from the seed.

import { decodeConfChange, describeConfChange } from "../confchange.js";
import { describeMessage } from "../describe.js";
import { ProposalDroppedError } from "../errors.js";
import { MemoryStorage } from "../memory-storage.js";
import { RaftCore } from "../raft.js";
import {
  ConfChangeType,
  type Entry,
  EntryType,
  type Message,
  MessageType,
  type NodeId,
  type Ready,
  type Role,
} from "../types.js";
import { EventQueue } from "./event-queue.js";
import { decodeCommand, encodeCommand, KvStore } from "./kv.js";
import {
  type CheckResult,
  checkOperations,
  type KvInput,
  type KvOutput,
  kvModel,
  type Operation,
} from "./linearizability.js";
import { type NetworkFaults, SimNetwork } from "./network.js";
import { Prng } from "./prng.js";

export interface SimOptions {
  seed: number;
  /** Simulated ms during which clients issue operations and faults are injected. */
  durationMs: number;
  /** Simulated ms after that with faults healed, for pending operations to finish. */
  drainMs: number;
  initialVoters: number;
  /** Most nodes ever created (membership changes add fresh nodes up to this). */
  maxNodes: number;
  clients: number;
  keys: number;
  tickMs: number;
  /** Mean ms between injected faults (partitions, crashes, membership changes). */
  faultEveryMs: number;
  clientTimeoutMs: number;
  /** Compact a node's log when it has applied this many entries past its snapshot. */
  compactEvery: number;
  /** Fixes the election timeout (ticks) instead of drawing it from the seed (4–12). */
  electionTicks?: number;
  trace?: (line: string) => void;
  /** Also trace every message delivery (very verbose). */
  traceMessages?: boolean;
  /**
   * Deliberately unsafe client reads (served from the contacted node's state without ReadIndex),
   * to prove the checker catches stale reads. Never used by `npm run sim`.
   */
  unsafeLocalReads?: boolean;
  /**
   * Deliberately unsafe, to show the simulation catches it: report each Ready's entries durable
   * as soon as they are written, before the sync, so a leader counts its own unsynced entries.
   */
  unsafeEarlyPersisted?: boolean;
}

export const defaultSimOptions: Omit<SimOptions, "seed"> = {
  durationMs: 8_000,
  drainMs: 4_000,
  initialVoters: 3,
  maxNodes: 6,
  clients: 4,
  keys: 3,
  tickMs: 10,
  faultEveryMs: 400,
  clientTimeoutMs: 1_500,
  compactEvery: 40,
};

export interface SimResult {
  seed: number;
  /** Operations in the checked history (completed, plus writes with unknown outcome). */
  operations: number;
  faults: number;
  violations: string[];
  linearizability: CheckResult;
  stats: {
    elections: number;
    committed: number;
    writesOk: number;
    readsOk: number;
    dropped: number;
    timedOut: number;
    crashes: number;
    partitions: number;
    confChanges: number;
    snapshotsSent: number;
    messages: number;
  };
}

type Event =
  | { kind: "tick"; node: NodeId; gen: number }
  | { kind: "deliver"; msg: Message }
  | { kind: "synced"; node: NodeId; gen: number }
  | { kind: "persisted"; node: NodeId; gen: number }
  | { kind: "client"; client: number }
  | { kind: "timeout"; client: number; opId: number }
  | { kind: "fault" }
  | { kind: "heal" }
  | { kind: "restart"; node: NodeId }
  | { kind: "stop"; node: NodeId }
  | { kind: "liveness-mark" };

interface PendingOp {
  opId: number;
  client: number;
  seq: number;
  input: KvInput;
  call: number;
  node: NodeId;
  /** For reads: the index to wait for once the read state arrives. */
  readIndex?: number;
}

interface SimNode {
  id: NodeId;
  prng: Prng;
  storage: MemoryStorage;
  core: RaftCore;
  kv: KvStore;
  applied: number;
  alive: boolean;
  /** Stopped for good (removed from the group). */
  retired: boolean;
  gen: number;
  /** A Ready carrying a snapshot is being persisted; nothing else happens until it is. */
  inFlight: Ready | undefined;
  mustSync: boolean;
  /**
   * Readies already advanced whose writes are still syncing, oldest first (the driver pipelines:
   * it takes the next Ready while an fsync runs). Each one's messagesAfterPersist and persisted()
   * report wait for its sync; syncs finish in order.
   */
  syncing: { msgs: Message[]; last?: { index: number; term: number }; mustSync: boolean }[];
  /** Simulated time the newest sync finishes (syncs complete in order). */
  syncDoneAt: number;
  /** Term and vote as last synced (a change to either must be synced before messages leave). */
  syncedTerm: number;
  syncedVote: NodeId;
  role: Role;
  /** Client writes waiting to be applied here, by "client:seq". */
  writes: Map<string, PendingOp>;
  /** Client reads waiting for their read state, by context. */
  reads: Map<string, PendingOp>;
  /** Reads with a known index waiting for the apply to catch up. */
  readsWaiting: PendingOp[];
}

const dec = new TextDecoder();
const enc = new TextEncoder();

export function runSimulation(partial: Partial<SimOptions> & { seed: number }): SimResult {
  return new Simulation({ ...defaultSimOptions, ...partial }).run();
}

class Simulation {
  private readonly prng: Prng;
  private readonly diskPrng: Prng;
  private readonly net: SimNetwork;
  private readonly queue = new EventQueue<Event>(1_000_000);
  private readonly nodes = new Map<NodeId, SimNode>();
  private now = 0;
  private nextNodeNum = 1;
  private readonly history: Operation<KvInput, KvOutput>[] = [];
  private readonly pending = new Map<number, PendingOp>();
  private readonly clientSeq: number[];
  private nextOpId = 1;
  private readonly violations: string[] = [];
  /** term → leader elected in it. */
  private readonly leaders = new Map<number, NodeId>();
  /** index → "term:data" of the entry committed there (as first applied anywhere). */
  private readonly committed: string[] = [];
  private readonly stats: SimResult["stats"] = {
    elections: 0,
    committed: 0,
    writesOk: 0,
    readsOk: 0,
    dropped: 0,
    timedOut: 0,
    crashes: 0,
    partitions: 0,
    confChanges: 0,
    snapshotsSent: 0,
    messages: 0,
  };
  private faultsInjected = 0;
  /** Commit index of the leader well after faults stopped; every member must reach it by the end. */
  private livenessMark = -1;
  private readonly end: number;
  /** Per seed: short timeouts relative to network delay make elections (and their races) frequent. */
  private readonly electionTicks: number;

  constructor(private readonly o: SimOptions) {
    this.prng = new Prng(o.seed);
    // A separate stream, so adding disk stalls left every other random choice of a seed as it was.
    this.diskPrng = new Prng((o.seed ^ 0x5eed_d15c) >>> 0);
    const faults: NetworkFaults = {
      dropRate: this.prng.float() * 0.1,
      duplicateRate: this.prng.float() * 0.05,
      minDelayMs: 1,
      maxDelayMs: this.prng.range(2, 30),
      slowRate: this.prng.float() * 0.02,
      slowDelayMs: 300,
    };
    this.net = new SimNetwork(this.prng.fork(), faults);
    this.electionTicks = o.electionTicks ?? this.prng.range(4, 12);
    this.clientSeq = new Array<number>(o.clients).fill(0);
    this.end = o.durationMs;
  }

  private trace(line: string): void {
    if (this.o.trace) this.o.trace(`${String(this.now).padStart(6)}ms ${line}`);
  }

  private violation(what: string): void {
    this.violations.push(`t=${this.now}ms: ${what}`);
    this.trace(`VIOLATION ${what}`);
  }

  run(): SimResult {
    const f = this.net.faults;
    this.trace(
      `seed ${this.o.seed}: electionTicks=${this.electionTicks} drop=${f.dropRate.toFixed(3)} dup=${f.duplicateRate.toFixed(3)} delay=${f.minDelayMs}-${f.maxDelayMs}ms slow=${f.slowRate.toFixed(3)}`,
    );
    const voters: NodeId[] = [];
    for (let k = 0; k < this.o.initialVoters; k++) voters.push(`n${this.nextNodeNum++}`);
    for (const id of voters) this.startNode(id, voters);
    for (let c = 0; c < this.o.clients; c++)
      this.queue.push(this.prng.range(50, 300), { kind: "client", client: c });
    this.queue.push(this.nextFaultDelay(), { kind: "fault" });
    const stopAt0 = this.o.durationMs + this.o.drainMs;
    this.queue.push(stopAt0 - Math.min(1_500, this.o.drainMs / 2), { kind: "liveness-mark" });

    const stopAt = this.o.durationMs + this.o.drainMs;
    let healed = false;
    for (;;) {
      const t = this.queue.peekTime();
      if (t === undefined || t > stopAt) break;
      if (!healed && t > this.end) {
        healed = true;
        this.now = this.end;
        this.healAll();
      }
      const ev = this.queue.pop()!;
      this.now = ev.time;
      try {
        this.handle(ev.value);
      } catch (err) {
        this.violation(`exception: ${(err as Error).stack ?? String(err)}`);
        break;
      }
      if (this.violations.length > 0) break;
    }
    this.now = stopAt;
    // Whatever is still pending has an unknown outcome.
    for (const op of this.pending.values()) this.finishUnknown(op);
    this.pending.clear();
    if (this.violations.length === 0) this.checkLogMatching();
    if (this.violations.length === 0) this.checkConverged();
    let lin: CheckResult = "ok";
    if (this.violations.length === 0) {
      const r = checkOperations(kvModel, this.history);
      lin = r.result;
      if (r.result === "illegal") {
        this.violation(`history is not linearizable (key partition ${r.failedPartition})`);
      }
    }
    const ns = this.net.stats;
    return {
      seed: this.o.seed,
      operations: this.history.length,
      faults: this.faultsInjected + ns.dropped + ns.duplicated,
      violations: this.violations,
      linearizability: lin,
      stats: { ...this.stats, messages: ns.sent },
    };
  }

  // ------------------------------------------------------------------ nodes

  private startNode(id: NodeId, voters: NodeId[]): void {
    const storage = new MemoryStorage();
    const n: SimNode = {
      id,
      prng: this.prng.fork(),
      storage,
      core: undefined as unknown as RaftCore,
      kv: new KvStore(),
      applied: 0,
      alive: true,
      retired: false,
      gen: 0,
      inFlight: undefined,
      syncing: [],
      syncDoneAt: 0,
      mustSync: false,
      syncedTerm: 0,
      syncedVote: "",
      role: "follower",
      writes: new Map(),
      reads: new Map(),
      readsWaiting: [],
    };
    n.core = this.newCore(n, voters);
    this.nodes.set(id, n);
    this.trace(`${id} started${voters.length > 0 ? ` with voters ${voters.join(",")}` : " (joining)"}`);
    this.scheduleTick(n, this.prng.range(1, this.o.tickMs));
    this.pump(n);
  }

  private newCore(n: SimNode, voters: NodeId[]): RaftCore {
    return new RaftCore({
      id: n.id,
      voters,
      storage: n.storage,
      electionTicks: this.electionTicks,
      heartbeatTicks: 1,
      randomInt: (k) => n.prng.int(k),
      maxSizePerMsg: 256,
      maxInflightMsgs: 8,
      maxInflightBytes: 4096,
      maxUncommittedEntriesSize: 8192,
      snapshotChunkSize: 64,
    });
  }

  private scheduleTick(n: SimNode, delay: number): void {
    this.queue.push(this.now + delay, { kind: "tick", node: n.id, gen: n.gen });
  }

  private live(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.alive && !n.retired);
  }

  private members(): SimNode[] {
    return [...this.nodes.values()].filter((n) => !n.retired);
  }

  private leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.live()) {
      if (n.core.role === "leader" && (!best || n.core.term > best.core.term)) best = n;
    }
    return best;
  }

  private handle(ev: Event): void {
    switch (ev.kind) {
      case "tick": {
        const n = this.nodes.get(ev.node)!;
        if (!n.alive || n.retired || n.gen !== ev.gen) return;
        n.core.tick();
        this.afterStep(n);
        this.scheduleTick(n, this.o.tickMs);
        return;
      }
      case "deliver": {
        const n = this.nodes.get(ev.msg.to);
        if (!n?.alive || n.retired) return;
        if (!this.net.deliverable(ev.msg)) return;
        if (this.o.traceMessages) this.trace(`deliver ${describeMessage(ev.msg)}`);
        n.core.step(ev.msg);
        this.afterStep(n);
        return;
      }
      case "synced": {
        const n = this.nodes.get(ev.node)!;
        if (!n.alive || n.gen !== ev.gen) return;
        this.finishReady(n);
        return;
      }
      case "persisted": {
        const n = this.nodes.get(ev.node)!;
        if (!n.alive || n.gen !== ev.gen) return;
        this.finishSync(n);
        return;
      }
      case "client":
        if (this.now < this.end) this.clientOp(ev.client);
        return;
      case "timeout": {
        const op = this.pending.get(ev.opId);
        if (!op) return;
        this.pending.delete(ev.opId);
        this.stats.timedOut++;
        this.forget(op);
        this.finishUnknown(op);
        this.scheduleClient(op.client);
        return;
      }
      case "fault":
        if (this.now < this.end) {
          this.injectFault();
          this.queue.push(this.now + this.nextFaultDelay(), { kind: "fault" });
        }
        return;
      case "heal":
        if (this.net.isPartitioned()) {
          this.net.heal();
          this.trace("network healed");
        }
        return;
      case "restart":
        this.restart(this.nodes.get(ev.node)!);
        return;
      case "liveness-mark": {
        const l = this.leader();
        this.livenessMark = l ? l.core.raftLog.committed : -1;
        this.trace(`liveness mark: ${l ? `leader ${l.id} has committed ${this.livenessMark}` : "no leader"}`);
        return;
      }
      case "stop": {
        const n = this.nodes.get(ev.node)!;
        if (n.retired) return;
        n.retired = true;
        n.gen++;
        this.failPendingOn(n);
        this.trace(`${n.id} stopped (removed from the group)`);
        return;
      }
    }
  }

  /** After the core changed: check invariants, then persist whatever it produced. */
  private afterStep(n: SimNode): void {
    this.checkRole(n);
    this.pump(n);
  }

  private checkRole(n: SimNode): void {
    const role = n.core.role;
    if (role === n.role) return;
    n.role = role;
    if (role !== "leader") return;
    const term = n.core.term;
    this.stats.elections++;
    this.trace(`${n.id} became leader at term ${term} (last index ${n.core.raftLog.lastIndex()})`);
    const prev = this.leaders.get(term);
    if (prev !== undefined && prev !== n.id)
      this.violation(`two leaders in term ${term}: ${prev} and ${n.id}`);
    this.leaders.set(term, n.id);
    // Leader completeness: every committed entry is in the new leader's log.
    const log = n.core.raftLog;
    const first = log.firstIndex();
    for (let i = Math.max(1, first); i < this.committed.length; i++) {
      const c = this.committed[i];
      if (c === undefined) continue;
      const t = log.term(i);
      if (t === undefined || String(t) !== c.slice(0, c.indexOf(":"))) {
        this.violation(
          `leader ${n.id} (term ${term}) lacks committed entry ${i} (${c.slice(0, 40)}), has term ${t}`,
        );
        return;
      }
    }
  }

  /** Takes the next Ready, writes it to storage (unsynced) and schedules the sync. */
  private pump(n: SimNode): void {
    if (!n.alive || n.retired || n.inFlight || !n.core.hasReady()) return;
    const rd = n.core.ready();
    if (rd.softState) {
      this.trace(
        `${n.id} is ${rd.softState.role} (leader ${rd.softState.leader || "none"}, term ${n.core.term})`,
      );
    }
    // Sent before the write, as the real driver does: a crash before the sync loses the leader's
    // entries on its own disk even though followers may already hold them.
    this.route(rd.messages);
    // Committed entries are applied (and clients answered) before this node's own sync, as the
    // real driver does; a received snapshot is restored only once stored.
    if (!rd.snapshot) this.applyReady(n, rd);
    if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
    if (rd.entries.length > 0) n.storage.append(rd.entries);
    if (rd.hardState) n.storage.setHardState(rd.hardState);
    // Like the real driver (and etcd), a Ready whose only durable change is the commit index is
    // not synced: the commit index is re-learned from the leader after a crash.
    const hs = rd.hardState;
    const mustSync =
      rd.snapshot !== undefined ||
      rd.entries.length > 0 ||
      (hs !== undefined && (hs.term !== n.syncedTerm || hs.vote !== n.syncedVote));
    // Syncs finish in order, each after those before it.
    let delay = mustSync ? this.prng.range(0, 3) : 0;
    // Now and then an fsync stalls (as real disks do) for longer than a network round trip: the
    // window in which a leader's appends are acknowledged before its own write is durable.
    if (mustSync && this.diskPrng.chance(0.05)) delay += this.diskPrng.range(10, 80);
    const at = Math.max(this.now + delay, n.syncDoneAt);
    n.syncDoneAt = at;
    if (rd.snapshot) {
      n.inFlight = rd;
      n.mustSync = mustSync;
      this.queue.push(at, { kind: "synced", node: n.id, gen: n.gen });
      return;
    }
    // Pipelined: advance now, report durability when the sync completes.
    n.syncing.push({ msgs: rd.messagesAfterPersist, last: rd.entries[rd.entries.length - 1], mustSync });
    this.queue.push(at, { kind: "persisted", node: n.id, gen: n.gen });
    n.core.advance({ persisted: false });
    const last = rd.entries[rd.entries.length - 1];
    if (this.o.unsafeEarlyPersisted && last) n.core.persisted(last.index, last.term);
    this.maybeCompact(n);
    this.checkRole(n);
    this.pump(n);
  }

  /** The oldest syncing Ready's writes are durable: send what waited for them, tell the core. */
  private finishSync(n: SimNode): void {
    const s = n.syncing.shift();
    if (!s) return;
    if (s.mustSync) {
      n.storage.syncNow();
      const hs = n.storage.initialState().hardState;
      n.syncedTerm = hs.term;
      n.syncedVote = hs.vote;
    }
    this.route(s.msgs);
    if (s.last) n.core.persisted(s.last.index, s.last.term);
    this.afterStep(n);
  }

  /** The Ready's writes are durable: send, apply, advance. */
  private finishReady(n: SimNode): void {
    const rd = n.inFlight!;
    if (n.mustSync) {
      n.storage.syncNow();
      const hs = n.storage.initialState().hardState;
      n.syncedTerm = hs.term;
      n.syncedVote = hs.vote;
    }
    this.route(rd.messagesAfterPersist);
    if (rd.snapshot) {
      n.kv = KvStore.restore(rd.snapshot.data);
      n.applied = rd.snapshot.metadata.index;
      this.trace(`${n.id} installed snapshot at ${n.applied}`);
      this.applyReady(n, rd);
    }
    n.inFlight = undefined;
    n.core.advance();
    this.maybeCompact(n);
    this.checkRole(n);
    this.pump(n);
  }

  private applyReady(n: SimNode, rd: Ready): void {
    for (const e of rd.committedEntries) this.apply(n, e);
    for (const rs of rd.readStates) {
      const ctx = dec.decode(rs.requestId);
      const op = n.reads.get(ctx);
      if (!op) continue;
      n.reads.delete(ctx);
      op.readIndex = rs.index;
      n.readsWaiting.push(op);
    }
    this.serveReads(n);
  }

  private route(msgs: Message[]): void {
    for (const m of msgs) {
      if (m.type === MessageType.Snapshot && (m.snapshotOffset ?? 0) === 0) this.stats.snapshotsSent++;
      for (const d of this.net.route(m)) {
        if (!this.queue.push(this.now + d, { kind: "deliver", msg: m })) this.stats.dropped++;
      }
    }
  }

  private apply(n: SimNode, e: Entry): void {
    if (e.index <= n.applied) return;
    if (e.index !== n.applied + 1) this.violation(`${n.id} applies ${e.index} after ${n.applied}`);
    n.applied = e.index;
    // State machine safety: every node applies the same entry at each index.
    const key = `${e.term}:${e.type}:${dec.decode(e.data)}`;
    const prev = this.committed[e.index];
    if (prev === undefined) {
      this.committed[e.index] = key;
      this.stats.committed++;
    } else if (prev !== key) {
      this.violation(
        `${n.id} applied ${key.slice(0, 60)} at ${e.index}, others applied ${prev.slice(0, 60)}`,
      );
    }
    if (e.type === EntryType.ConfChange) {
      const cc = decodeConfChange(e.data);
      this.trace(`${n.id} applies conf change ${describeConfChange(cc)} at ${e.index}`);
      // Once the leader applied a removal, the removed node is shut down a little later.
      if (cc.type === ConfChangeType.RemoveNode && n.core.role === "leader") {
        this.queue.push(this.now + 300, { kind: "stop", node: cc.nodeId });
      }
      return;
    }
    if (e.data.length === 0) return;
    const cmd = decodeCommand(e.data);
    n.kv.apply(cmd);
    const op = n.writes.get(`${cmd.client}:${cmd.seq}`);
    if (op) {
      n.writes.delete(`${cmd.client}:${cmd.seq}`);
      if (this.pending.delete(op.opId)) {
        this.stats.writesOk++;
        this.history.push({
          clientId: op.client,
          input: op.input,
          call: op.call,
          ret: this.now,
          output: { value: "" },
        });
        this.scheduleClient(op.client);
      }
    }
  }

  private serveReads(n: SimNode): void {
    if (n.readsWaiting.length === 0) return;
    const still: PendingOp[] = [];
    for (const op of n.readsWaiting) {
      if (op.readIndex! > n.applied) {
        still.push(op);
        continue;
      }
      if (!this.pending.delete(op.opId)) continue;
      this.stats.readsOk++;
      this.history.push({
        clientId: op.client,
        input: op.input,
        call: op.call,
        ret: this.now,
        output: { value: n.kv.get(op.input.key) },
      });
      this.scheduleClient(op.client);
    }
    n.readsWaiting = still;
  }

  private maybeCompact(n: SimNode): void {
    const snapIndex = n.storage.firstIndex() - 1;
    if (n.applied - snapIndex < this.o.compactEvery) return;
    if (n.applied > n.storage.lastIndex()) return;
    const term = n.storage.term(n.applied);
    n.storage.compact(
      { metadata: { index: n.applied, term, confState: n.core.status().config }, data: n.kv.snapshot() },
      this.prng.range(0, 10),
    );
  }

  // ------------------------------------------------------------------ faults

  private nextFaultDelay(): number {
    return this.prng.range(this.o.faultEveryMs / 2, (this.o.faultEveryMs * 3) / 2);
  }

  private injectFault(): void {
    const r = this.prng.float();
    if (r < 0.35) this.partition();
    else if (r < 0.65) this.crash();
    else if (r < 0.85) this.changeMembership();
    else if (this.net.isPartitioned()) this.queue.push(this.now, { kind: "heal" });
  }

  private partition(): void {
    const ids = this.members().map((n) => n.id);
    if (ids.length < 2) return;
    const a: NodeId[] = [];
    const b: NodeId[] = [];
    if (this.prng.chance(0.5)) {
      const lone = this.prng.pick(ids);
      for (const id of ids) (id === lone ? a : b).push(id);
    } else {
      for (const id of ids) (this.prng.chance(0.5) ? a : b).push(id);
      if (a.length === 0 || b.length === 0) return;
    }
    this.net.partition([a, b]);
    this.faultsInjected++;
    this.stats.partitions++;
    this.trace(`partition ${this.net.describePartition()}`);
    this.queue.push(this.now + this.prng.range(200, 2500), { kind: "heal" });
  }

  private crash(): void {
    const live = this.live();
    if (live.length === 0) return;
    // Leaders crash more often than chance would have it: that is where the subtle cases live
    // (entries of old terms, half-replicated appends, elections racing with recovery).
    const leader = this.leader();
    const n = leader && this.prng.chance(0.5) ? leader : this.prng.pick(live);
    const lost = n.storage.hasUnsynced();
    n.alive = false;
    n.gen++;
    n.inFlight = undefined;
    n.syncing = [];
    n.syncDoneAt = 0;
    n.storage.crash();
    this.failPendingOn(n);
    this.faultsInjected++;
    this.stats.crashes++;
    this.trace(`${n.id} crashed${lost ? ", losing unsynced writes" : ""}`);
    this.queue.push(this.now + this.prng.range(50, 2000), { kind: "restart", node: n.id });
  }

  private restart(n: SimNode): void {
    if (n.alive || n.retired) return;
    n.alive = true;
    n.gen++;
    const snap = n.storage.snapshot();
    n.kv = KvStore.restore(snap.data);
    n.applied = snap.metadata.index;
    n.role = "follower";
    const hs = n.storage.initialState().hardState;
    n.syncedTerm = hs.term;
    n.syncedVote = hs.vote;
    n.core = this.newCore(n, this.bootstrapVoters(n));
    const st = n.core.status();
    this.trace(
      `${n.id} restarted: term ${st.term}, commit ${st.commit}, last ${st.lastIndex}, snapshot ${n.applied}`,
    );
    this.scheduleTick(n, this.prng.range(1, this.o.tickMs));
    this.pump(n);
  }

  /** Initial members bootstrap from a voter list; joiners start empty. Restarts pass the same. */
  private bootstrapVoters(n: SimNode): NodeId[] {
    const num = Number(n.id.slice(1));
    if (num <= this.o.initialVoters) {
      const v: NodeId[] = [];
      for (let k = 1; k <= this.o.initialVoters; k++) v.push(`n${k}`);
      return v;
    }
    return [];
  }

  private changeMembership(): void {
    const leader = this.leader();
    if (!leader) return;
    const cfg = leader.core.status().config;
    const options: (() => void)[] = [];
    const propose = (type: ConfChangeType, nodeId: NodeId) => () => {
      try {
        leader.core.proposeConfChange({ type, nodeId, address: `sim://${nodeId}` });
        this.faultsInjected++;
        this.stats.confChanges++;
        const what = describeConfChange({ type, nodeId, address: "" });
        this.trace(`proposed ${what} via ${leader.id}`);
        // One at a time: a second change while this one is unapplied must be refused.
        try {
          leader.core.proposeConfChange({ type: ConfChangeType.AddLearner, nodeId: "probe", address: "" });
          this.violation(`${leader.id} accepted a second membership change while ${what} was pending`);
        } catch (err) {
          if (!(err instanceof ProposalDroppedError) || err.reason !== "conf-change-pending") {
            this.violation(
              `second membership change refused for the wrong reason: ${(err as Error).message}`,
            );
          }
        }
        this.afterStep(leader);
      } catch (err) {
        if (!(err instanceof ProposalDroppedError)) throw err;
      }
    };
    if (this.nextNodeNum <= this.o.maxNodes && cfg.learners.length === 0) {
      options.push(() => {
        const id = `n${this.nextNodeNum}`;
        const before = this.stats.confChanges;
        propose(ConfChangeType.AddLearner, id)();
        if (this.stats.confChanges > before) {
          this.nextNodeNum++;
          this.startNode(id, []);
        }
      });
    }
    for (const l of cfg.learners) options.push(propose(ConfChangeType.AddVoter, l));
    if (cfg.voters.length > 3) {
      for (const v of cfg.voters) options.push(propose(ConfChangeType.RemoveNode, v));
    }
    for (const l of cfg.learners)
      if (this.prng.chance(0.2)) options.push(propose(ConfChangeType.RemoveNode, l));
    if (options.length === 0) return;
    this.prng.pick(options)();
  }

  private healAll(): void {
    this.net.heal();
    for (const n of this.nodes.values()) if (!n.alive && !n.retired) this.restart(n);
    this.trace("end of faults: network healed, crashed nodes restarted");
  }

  // ------------------------------------------------------------------ clients

  private scheduleClient(client: number): void {
    this.queue.push(this.now + this.prng.range(0, 20), { kind: "client", client });
  }

  private clientOp(client: number): void {
    const targets = this.members();
    if (targets.length === 0) return;
    const node = this.prng.pick(targets);
    const seq = ++this.clientSeq[client]!;
    const key = `k${this.prng.int(this.o.keys)}`;
    const isWrite = this.prng.chance(0.55);
    const input: KvInput = isWrite ? { op: "put", key, value: `c${client}.${seq}` } : { op: "get", key };
    const op: PendingOp = { opId: this.nextOpId++, client, seq, input, call: this.now, node: node.id };
    if (!node.alive) {
      // The client's connection fails at once: the operation never reached raft.
      this.scheduleClient(client);
      return;
    }
    try {
      if (isWrite) {
        node.core.propose(encodeCommand({ client, seq, key, value: (input as { value: string }).value }));
        node.writes.set(`${client}:${seq}`, op);
      } else if (this.o.unsafeLocalReads) {
        this.history.push({
          clientId: client,
          input,
          call: this.now,
          ret: this.now,
          output: { value: node.kv.get(key) },
        });
        this.scheduleClient(client);
        return;
      } else {
        node.core.readIndex(enc.encode(`r${client}.${seq}`));
        node.reads.set(`r${client}.${seq}`, op);
      }
    } catch (err) {
      if (!(err instanceof ProposalDroppedError)) throw err;
      // Rejected before entering the log: it did not happen, so it is not part of the history.
      this.stats.dropped++;
      this.scheduleClient(client);
      return;
    }
    this.pending.set(op.opId, op);
    this.queue.push(this.now + this.o.clientTimeoutMs, { kind: "timeout", client, opId: op.opId });
    this.afterStep(node);
  }

  private forget(op: PendingOp): void {
    const n = this.nodes.get(op.node);
    if (!n) return;
    n.writes.delete(`${op.client}:${op.seq}`);
    n.reads.delete(`r${op.client}.${op.seq}`);
    n.readsWaiting = n.readsWaiting.filter((o) => o.opId !== op.opId);
  }

  /** A node went away: its clients learn nothing more (the timeout records the unknown outcome). */
  private failPendingOn(n: SimNode): void {
    n.writes.clear();
    n.reads.clear();
    n.readsWaiting = [];
  }

  private finishUnknown(op: PendingOp): void {
    // A read without an answer had no effect; a write might have happened at any later time.
    if (op.input.op === "put") {
      this.history.push({
        clientId: op.client,
        input: op.input,
        call: op.call,
        ret: Infinity,
        output: { value: "" },
      });
    }
  }

  // ------------------------------------------------------------------ end-of-run checks

  /**
   * Liveness once faults stop: a leader exists, and every member has applied what the leader had
   * committed well before the end (a node stuck, e.g. unable to install a snapshot, shows here).
   */
  private checkConverged(): void {
    const leader = this.leader();
    if (!leader) {
      this.violation("no leader at the end of the fault-free drain period");
      return;
    }
    if (this.livenessMark < 0) {
      this.violation("no leader in the middle of the fault-free drain period");
      return;
    }
    for (const n of this.members()) {
      if (n.applied < this.livenessMark) {
        this.violation(
          `${n.id} applied only ${n.applied} by the end; the leader had committed ${this.livenessMark}`,
        );
        return;
      }
    }
  }

  /** Log matching: where two logs hold an entry with the same index and term, they agree before it. */
  private checkLogMatching(): void {
    const logs = this.members().map((n) => {
      const first = n.storage.firstIndex();
      const last = n.storage.lastIndex();
      const ents = last >= first ? n.storage.entries(first, last + 1, Number.MAX_SAFE_INTEGER) : [];
      const byIndex = new Map<number, Entry>();
      for (const e of ents) byIndex.set(e.index, e);
      return { id: n.id, first, last, byIndex };
    });
    for (let a = 0; a < logs.length; a++) {
      for (let b = a + 1; b < logs.length; b++) {
        const x = logs[a]!;
        const y = logs[b]!;
        const lo = Math.max(x.first, y.first);
        let hi = Math.min(x.last, y.last);
        // Find the highest index where the terms agree; below it everything must be identical.
        while (hi >= lo && x.byIndex.get(hi)!.term !== y.byIndex.get(hi)!.term) hi--;
        for (let i = lo; i <= hi; i++) {
          const ex = x.byIndex.get(i)!;
          const ey = y.byIndex.get(i)!;
          if (ex.term !== ey.term || ex.type !== ey.type || dec.decode(ex.data) !== dec.decode(ey.data)) {
            this.violation(`log matching: ${x.id} and ${y.id} agree at ${hi} but differ at ${i}`);
            return;
          }
        }
      }
    }
  }
}
