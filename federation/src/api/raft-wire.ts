// Converts raft-ts messages to and from their wire form (isthmus.v1.RaftMessage). Incoming
// messages are checked field by field; a malformed one is refused with the field named, so the
// transport can drop and count it instead of feeding garbage to the core.
import type { raftpb } from "@isthmus/schema";
import { type Entry, EntryType, type Message, MessageType, type SnapshotMetadata } from "../raft/index.js";

const EMPTY = Buffer.alloc(0);

/** Views bytes as a Buffer without copying (ts-proto's bytes fields are Buffers). */
function asBuffer(b: Uint8Array | undefined): Buffer {
  if (!b || b.byteLength === 0) return EMPTY;
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

export class RaftWireError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`malformed raft message: field ${field}: ${reason}`);
    this.name = "RaftWireError";
  }
}

export function toWire(m: Message): raftpb.RaftMessage {
  return {
    type: m.type as number as raftpb.RaftMessageType,
    from: m.from,
    to: m.to,
    term: m.term,
    logTerm: m.logTerm,
    index: m.index,
    entries: m.entries.map((e) => ({
      term: e.term,
      index: e.index,
      type: e.type as number as raftpb.RaftEntryType,
      data: asBuffer(e.data),
    })),
    commit: m.commit,
    reject: m.reject,
    rejectHint: m.rejectHint,
    context: asBuffer(m.context),
    snapshot: m.snapshot
      ? {
          index: m.snapshot.index,
          term: m.snapshot.term,
          confState: {
            voters: m.snapshot.confState.voters,
            learners: m.snapshot.confState.learners,
            votersOutgoing: m.snapshot.confState.votersOutgoing,
          },
        }
      : undefined,
    snapshotChunk: asBuffer(m.snapshotChunk),
    snapshotOffset: m.snapshotOffset ?? 0,
    snapshotDone: m.snapshotDone ?? false,
  };
}

const MESSAGE_TYPES = new Set<number>(
  Object.values(MessageType).filter((v): v is number => typeof v === "number"),
);

export function fromWire(p: raftpb.RaftMessage): Message {
  if (!MESSAGE_TYPES.has(p.type)) throw new RaftWireError("type", `unknown message type ${p.type}`);
  if (p.from === "") throw new RaftWireError("from", "must not be empty");
  if (p.to === "") throw new RaftWireError("to", "must not be empty");
  const entries: Entry[] = p.entries.map((e, k) => {
    const type = e.type as number;
    if (type !== EntryType.Normal && type !== EntryType.ConfChange) {
      throw new RaftWireError(`entries[${k}].type`, `unknown entry type ${e.type}`);
    }
    return { term: e.term, index: e.index, type: e.type as number as EntryType, data: e.data };
  });
  const m: Message = {
    type: p.type as number as MessageType,
    from: p.from,
    to: p.to,
    term: p.term,
    logTerm: p.logTerm,
    index: p.index,
    entries,
    commit: p.commit,
    reject: p.reject,
    rejectHint: p.rejectHint,
    context: p.context,
  };
  if (p.snapshot) {
    const cs = p.snapshot.confState;
    const meta: SnapshotMetadata = {
      index: p.snapshot.index,
      term: p.snapshot.term,
      confState: {
        voters: cs?.voters ?? [],
        learners: cs?.learners ?? [],
        votersOutgoing: cs?.votersOutgoing ?? [],
      },
    };
    m.snapshot = meta;
    m.snapshotChunk = p.snapshotChunk;
    m.snapshotOffset = p.snapshotOffset;
    m.snapshotDone = p.snapshotDone;
  } else if (p.type === (MessageType.Snapshot as number)) {
    throw new RaftWireError("snapshot", "a snapshot message must carry snapshot metadata");
  }
  return m;
}
