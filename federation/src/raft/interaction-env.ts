// The interpreter behind the raft transcripts in testdata/*.txt: a few in-memory nodes (RaftCore +
// MemoryStorage + a list standing in for the state machine) and a mailbox network driven one
// command at a time, each command returning the text the transcript expects.

import { describeEntry, describeMessage, describeReady } from "./describe.js";
import { ProposalDroppedError } from "./errors.js";
import { MemoryStorage } from "./memory-storage.js";
import { type RaftConfig, RaftCore } from "./raft.js";
import {
  type ConfChange,
  ConfChangeType,
  type Entry,
  EntryType,
  type Message,
  type NodeId,
  type Ready,
} from "./types.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

interface EnvNode {
  id: NodeId;
  core: RaftCore;
  storage: MemoryStorage;
  config: Omit<RaftConfig, "storage" | "applied">;
  /** The "state machine": data of every applied normal entry, in order. */
  applied: string[];
  appliedIndex: number;
  /** A Ready taken by send-ready: written and its early messages sent, not yet synced. */
  inFlight?: Ready;
}

export interface Command {
  name: string;
  args: string[];
  kv: Map<string, string>;
}

export function parseCommand(line: string): Command {
  const parts = line.trim().split(/\s+/);
  const name = parts.shift() ?? "";
  const args: string[] = [];
  const kv = new Map<string, string>();
  for (const p of parts) {
    const eq = p.indexOf("=");
    if (eq > 0) kv.set(p.slice(0, eq), p.slice(eq + 1));
    else args.push(p);
  }
  return { name, args, kv };
}

function ids(list: string | undefined): NodeId[] {
  if (!list) return [];
  return list.split(",").filter((s) => s !== "");
}

function intOpt(c: Command, key: string): number | undefined {
  const v = c.kv.get(key);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`${c.name}: ${key}=${v} is not an integer`);
  return n;
}

function boolOpt(c: Command, key: string): boolean | undefined {
  const v = c.kv.get(key);
  if (v === undefined) return undefined;
  if (v !== "true" && v !== "false") throw new Error(`${c.name}: ${key}=${v} must be true or false`);
  return v === "true";
}

/**
 * The transcripts' "random" election jitter: node k waits electionTicks + (k-1) ticks, so timeouts
 * are deterministic yet staggered (node 1 fires first) and split votes happen only on purpose.
 */
function jitter(id: NodeId, n: number): number {
  const k = Number(id);
  return Number.isSafeInteger(k) && k > 0 ? (k - 1) % n : 0;
}

export class InteractionEnv {
  private readonly nodes = new Map<NodeId, EnvNode>();
  private readonly mailboxes = new Map<NodeId, Message[]>();
  private readonly isolated = new Set<NodeId>();

  run(c: Command): string[] {
    switch (c.name) {
      case "add-nodes":
        return this.addNodes(c);
      case "campaign":
        this.node(c.args[0]).core.campaign();
        return [];
      case "tick-election":
        // Enough ticks for this node's randomized timeout to fire.
        return this.ticks(
          c,
          (n) => (n.config.electionTicks ?? 10) + jitter(n.id, n.config.electionTicks ?? 10),
        );
      case "tick-heartbeat":
        return this.ticks(c, (n) => n.config.heartbeatTicks ?? 1);
      case "tick":
        return this.ticks(c, () => intOpt(c, "n") ?? 1);
      case "process-ready":
        return c.args.flatMap((id) => this.processReady(this.node(id)));
      case "send-ready":
        // The first half of a Ready, as the driver does it: send the messages that may leave at
        // once (the leader's appends), write to storage, and stop before the sync.
        return c.args.flatMap((id) => this.sendReady(this.node(id)));
      case "persist-ready":
        // The second half: sync, send what waited for it, apply, advance.
        return c.args.flatMap((id) => this.persistReady(this.node(id)));
      case "deliver-msgs":
        return this.deliverMsgs(
          c.args.length > 0 ? c.args : [...this.nodes.keys()],
          c.kv.get("drop") === "true",
        );
      case "stabilize":
        return this.stabilize(c.args.length > 0 ? c.args : [...this.nodes.keys()]);
      case "propose":
        return this.guard(() => this.node(c.args[0]).core.propose(enc.encode(c.args[1] ?? "")));
      case "propose-many": {
        const n = this.node(c.args[0]);
        const count = Number(c.args[1]);
        const size = intOpt(c, "size") ?? 1;
        const out: string[] = [];
        for (let k = 0; k < count; k++) {
          out.push(...this.guard(() => n.core.propose(enc.encode("x".repeat(size)))));
        }
        return out;
      }
      case "propose-conf-change":
        return this.proposeConfChange(c);
      case "read-index":
        return this.guard(() => this.node(c.args[0]).core.readIndex(enc.encode(c.args[1] ?? "")));
      case "transfer-leader":
        return this.guard(() => this.node(c.args[0]).core.transferLeadership(c.args[1] ?? ""));
      case "compact":
        return this.compact(this.node(c.args[0]), Number(c.args[1]), intOpt(c, "keep") ?? 0);
      case "isolate":
        this.isolated.add(c.args[0] ?? "");
        return [];
      case "heal":
        this.isolated.clear();
        return [];
      case "crash-restart":
        return this.crashRestart(this.node(c.args[0]));
      case "crash-before-sync": {
        // Writes the next Ready to storage, then crashes before the sync: nothing is sent.
        const n = this.node(c.args[0]);
        if (!n.core.hasReady()) return [`${n.id} has no Ready`];
        const rd = n.core.ready();
        const out = [`> ${n.id} writing Ready (not synced)`, ...describeReady(rd, "  ")];
        if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
        if (rd.entries.length > 0) n.storage.append(rd.entries);
        if (rd.hardState) n.storage.setHardState(rd.hardState);
        return [...out, ...this.crashRestart(n)];
      }
      case "status":
        return this.statusLines(c.args.length > 0 ? c.args : [...this.nodes.keys()]);
      case "raft-log":
        return this.raftLog(this.node(c.args[0]));
      case "applied":
        return [...(c.args.length > 0 ? c.args : [...this.nodes.keys()])].map((id) => {
          const n = this.node(id);
          return `${id}: applied=${n.appliedIndex} [${n.applied.join(" ")}]`;
        });
      case "progress": {
        const n = this.node(c.args[0]);
        return n.core.role === "leader" ? n.core.progressLines() : [`${n.id} is not the leader`];
      }
      default:
        throw new Error(`unknown command ${c.name}`);
    }
  }

  private node(id: string | undefined): EnvNode {
    const n = this.nodes.get(id ?? "");
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  private guard(fn: () => void): string[] {
    try {
      fn();
      return [];
    } catch (err) {
      if (err instanceof ProposalDroppedError) return [`error: ${err.message}`];
      throw err;
    }
  }

  private addNodes(c: Command): string[] {
    const count = Number(c.args[0]);
    const config: Omit<RaftConfig, "storage" | "applied"> = {
      id: "",
      randomInt: () => 0, // replaced per node below
      voters: ids(c.kv.get("voters")),
      learners: ids(c.kv.get("learners")),
    };
    const opt = (key: string) => intOpt(c, key);
    if (opt("election") !== undefined) config.electionTicks = opt("election");
    if (opt("heartbeat") !== undefined) config.heartbeatTicks = opt("heartbeat");
    if (boolOpt(c, "prevote") !== undefined) config.preVote = boolOpt(c, "prevote");
    if (boolOpt(c, "checkquorum") !== undefined) config.checkQuorum = boolOpt(c, "checkquorum");
    if (opt("max-size-per-msg") !== undefined) config.maxSizePerMsg = opt("max-size-per-msg");
    if (opt("max-inflight") !== undefined) config.maxInflightMsgs = opt("max-inflight");
    if (opt("max-inflight-bytes") !== undefined) config.maxInflightBytes = opt("max-inflight-bytes");
    if (opt("max-uncommitted-size") !== undefined)
      config.maxUncommittedEntriesSize = opt("max-uncommitted-size");
    if (opt("snapshot-chunk-size") !== undefined) config.snapshotChunkSize = opt("snapshot-chunk-size");
    if (c.kv.get("read-only") === "lease") config.readOnlyOption = "lease";
    if (boolOpt(c, "disable-forwarding") !== undefined)
      config.disableProposalForwarding = boolOpt(c, "disable-forwarding");
    const out: string[] = [];
    for (let k = 0; k < count; k++) {
      const id = String(this.nodes.size + 1);
      const storage = new MemoryStorage();
      const nodeConfig = { ...config, id, randomInt: (r: number) => jitter(id, r) };
      const n: EnvNode = {
        id,
        core: undefined as unknown as RaftCore,
        storage,
        config: nodeConfig,
        applied: [],
        appliedIndex: 0,
      };
      n.core = new RaftCore({ ...n.config, storage });
      this.nodes.set(id, n);
      // A new group's first Ready holds only the bootstrap entries; handle it quietly.
      const boot = n.core.hasReady() ? this.processReady(n) : [];
      const st = n.core.status();
      out.push(
        `node ${id}: voters=${st.config.voters.join(",") || "none"} learners=${st.config.learners.join(",") || "none"} term=${st.term} commit=${st.commit}${boot.length > 0 ? " (bootstrapped)" : ""}`,
      );
    }
    return out;
  }

  private ticks(c: Command, count: (n: EnvNode) => number): string[] {
    for (const id of c.args) {
      const n = this.node(id);
      const times = count(n);
      for (let k = 0; k < times; k++) n.core.tick();
    }
    return [];
  }

  private processReady(n: EnvNode): string[] {
    if (n.inFlight) return [`${n.id} has a Ready in flight (persist-ready first)`];
    if (!n.core.hasReady()) return [];
    const rd = n.core.ready();
    const out = [`> ${n.id} handling Ready`, ...describeReady(rd, "  ")];
    this.writeReady(n, rd);
    this.finishReady(n, rd);
    return out;
  }

  private sendReady(n: EnvNode): string[] {
    if (n.inFlight) return [`${n.id} has a Ready in flight (persist-ready first)`];
    if (!n.core.hasReady()) return [`${n.id} has no Ready`];
    const rd = n.core.ready();
    const out = [`> ${n.id} sending Ready (written, not synced)`, ...describeReady(rd, "  ")];
    this.post(rd.messages);
    this.writeReady(n, rd);
    n.inFlight = rd;
    return out;
  }

  private persistReady(n: EnvNode): string[] {
    const rd = n.inFlight;
    if (!rd) return [`${n.id} has no Ready in flight`];
    n.inFlight = undefined;
    const after = rd.messagesAfterPersist.map((m) => `  ${describeMessage(m)}`);
    this.finishReady(n, { ...rd, messages: [] });
    const st = n.core.status();
    return [
      `> ${n.id} persisted Ready: commit=${st.commit}`,
      ...(after.length > 0 ? ["  sent:", ...after.map((l) => `  ${l}`)] : []),
    ];
  }

  private writeReady(n: EnvNode, rd: Ready): void {
    if (rd.snapshot) {
      n.storage.applySnapshot(rd.snapshot);
      n.applied = JSON.parse(dec.decode(rd.snapshot.data)) as string[];
      n.appliedIndex = rd.snapshot.metadata.index;
    }
    if (rd.entries.length > 0) n.storage.append(rd.entries);
    if (rd.hardState) n.storage.setHardState(rd.hardState);
  }

  /** Sync, send (the early messages too, when not sent yet), apply, advance. */
  private finishReady(n: EnvNode, rd: Ready): void {
    n.storage.syncNow();
    this.post(rd.messages);
    this.post(rd.messagesAfterPersist);
    for (const e of rd.committedEntries) this.apply(n, e);
    n.core.advance();
  }

  private post(msgs: Message[]): void {
    for (const m of msgs) {
      if (this.isolated.has(m.from) || this.isolated.has(m.to)) continue;
      if (!this.nodes.has(m.to)) continue;
      let box = this.mailboxes.get(m.to);
      if (!box) {
        box = [];
        this.mailboxes.set(m.to, box);
      }
      box.push(m);
    }
  }

  private apply(n: EnvNode, e: Entry): void {
    if (e.index <= n.appliedIndex) return;
    if (e.index !== n.appliedIndex + 1)
      throw new Error(`node ${n.id}: applying ${e.index} after ${n.appliedIndex}`);
    if (e.type === EntryType.Normal && e.data.length > 0) n.applied.push(dec.decode(e.data));
    n.appliedIndex = e.index;
  }

  private deliverMsgs(targets: NodeId[], drop: boolean): string[] {
    const out: string[] = [];
    for (const id of targets) {
      const box = this.mailboxes.get(id);
      if (!box || box.length === 0) continue;
      this.mailboxes.set(id, []);
      const n = this.nodes.get(id);
      for (const m of box) {
        if (drop || !n) {
          out.push(`dropped: ${describeMessage(m)}`);
          continue;
        }
        out.push(describeMessage(m));
        n.core.step(m);
      }
    }
    return out;
  }

  private stabilize(targets: NodeId[]): string[] {
    const out: string[] = [];
    for (let round = 0; ; round++) {
      if (round > 1000) throw new Error("stabilize: did not converge in 1000 rounds");
      let progressed = false;
      for (const id of targets) {
        // A node whose Ready is in flight (send-ready) waits for persist-ready.
        if (this.node(id).inFlight) continue;
        const lines = this.processReady(this.node(id));
        if (lines.length > 0) progressed = true;
        out.push(...lines);
      }
      for (const id of targets) {
        const lines = this.deliverMsgs([id], false);
        if (lines.length > 0) {
          progressed = true;
          out.push(`> ${id} receiving messages`, ...lines.map((l) => `  ${l}`));
        }
      }
      if (!progressed) return out;
    }
  }

  private proposeConfChange(c: Command): string[] {
    const n = this.node(c.args[0]);
    const kind = c.args[1];
    const target = c.args[2] ?? "";
    const type =
      kind === "add-voter"
        ? ConfChangeType.AddVoter
        : kind === "add-learner"
          ? ConfChangeType.AddLearner
          : kind === "remove"
            ? ConfChangeType.RemoveNode
            : undefined;
    if (type === undefined) throw new Error(`propose-conf-change: unknown kind ${kind}`);
    const cc: ConfChange = { type, nodeId: target, address: `node-${target}` };
    return this.guard(() => n.core.proposeConfChange(cc));
  }

  private compact(n: EnvNode, index: number, keep: number): string[] {
    if (index > n.appliedIndex) throw new Error(`compact: index ${index} beyond applied ${n.appliedIndex}`);
    // The snapshot state is what was applied up to `index`: recompute it from the log.
    const snapState = this.stateAt(n, index);
    const term = n.storage.term(index);
    const st = n.core.status();
    n.storage.compact(
      { metadata: { index, term, confState: st.config }, data: enc.encode(JSON.stringify(snapState)) },
      keep,
    );
    return [`${n.id}: compacted to ${index}, first index now ${n.storage.firstIndex()}`];
  }

  private stateAt(n: EnvNode, index: number): string[] {
    if (index === n.appliedIndex) return n.applied.slice();
    const snap = n.storage.snapshot();
    const state = snap.data.length > 0 ? (JSON.parse(dec.decode(snap.data)) as string[]) : [];
    const ents = n.storage.entries(snap.metadata.index + 1, index + 1, Number.MAX_SAFE_INTEGER);
    for (const e of ents)
      if (e.type === EntryType.Normal && e.data.length > 0) state.push(dec.decode(e.data));
    return state;
  }

  private crashRestart(n: EnvNode): string[] {
    n.inFlight = undefined;
    const lost = n.storage.hasUnsynced();
    n.storage.crash();
    const snap = n.storage.snapshot();
    n.applied = snap.data.length > 0 ? (JSON.parse(dec.decode(snap.data)) as string[]) : [];
    n.appliedIndex = snap.metadata.index;
    n.core = new RaftCore({ ...n.config, storage: n.storage });
    this.mailboxes.set(n.id, []);
    const st = n.core.status();
    return [
      `${n.id} restarted${lost ? " (lost unsynced writes)" : ""}: term=${st.term} vote=${st.vote || "none"} commit=${st.commit} last=${st.lastIndex}`,
    ];
  }

  private statusLines(targets: NodeId[]): string[] {
    return targets.map((id) => {
      const s = this.node(id).core.status();
      let line = `${id}: ${s.role} term=${s.term} leader=${s.leader || "none"} commit=${s.commit} applied=${s.applied} last=${s.lastIndex}`;
      line += ` voters=${s.config.voters.join(",")}`;
      if (s.config.learners.length > 0) line += ` learners=${s.config.learners.join(",")}`;
      if (s.leadTransferee) line += ` transferee=${s.leadTransferee}`;
      return line;
    });
  }

  private raftLog(n: EnvNode): string[] {
    const first = n.storage.firstIndex();
    const last = n.storage.lastIndex();
    if (last < first) return [`${n.id}: log empty (first=${first})`];
    return n.storage.entries(first, last + 1, Number.MAX_SAFE_INTEGER).map(describeEntry);
  }
}
