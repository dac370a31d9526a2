// One-line renderings of entries, messages and Ready batches, shared by the interaction
// transcripts and the simulation's replay trace so both read the same way.

import { decodeConfChange, describeConfChange } from "./confchange.js";
import { type Entry, EntryType, type Message, MessageType, type Ready } from "./types.js";

const decoder = new TextDecoder();

function printable(data: Uint8Array, max = 40): string {
  const s = decoder.decode(data.subarray(0, max));
  return JSON.stringify(data.length > max ? `${s}…` : s);
}

export function describeEntry(e: Entry): string {
  if (e.type === EntryType.ConfChange) {
    let what: string;
    try {
      what = describeConfChange(decodeConfChange(e.data));
    } catch {
      what = "<malformed>";
    }
    return `${e.term}/${e.index} conf ${what}`;
  }
  return `${e.term}/${e.index} ${e.data.length === 0 ? "empty" : printable(e.data)}`;
}

function describeEntries(ents: Entry[]): string {
  return `[${ents.map(describeEntry).join(", ")}]`;
}

export function describeMessage(m: Message): string {
  let s = `${m.from}->${m.to} ${MessageType[m.type] ?? `type${m.type}`} term=${m.term}`;
  switch (m.type) {
    case MessageType.Append:
      s += ` log=${m.logTerm}/${m.index} commit=${m.commit}`;
      if (m.entries.length > 0) s += ` entries=${describeEntries(m.entries)}`;
      break;
    case MessageType.AppendResponse:
      s += ` index=${m.index}`;
      if (m.reject) s += ` reject hint=${m.logTerm}/${m.rejectHint}`;
      break;
    case MessageType.Vote:
    case MessageType.PreVote:
      s += ` log=${m.logTerm}/${m.index}`;
      if (m.context.length > 0) s += ` ctx=${decoder.decode(m.context)}`;
      break;
    case MessageType.VoteResponse:
    case MessageType.PreVoteResponse:
      if (m.reject) s += " reject";
      break;
    case MessageType.Heartbeat:
      s += ` commit=${m.commit}`;
      if (m.context.length > 0) s += ` ctx=${decoder.decode(m.context)}`;
      break;
    case MessageType.HeartbeatResponse:
      if (m.context.length > 0) s += ` ctx=${decoder.decode(m.context)}`;
      break;
    case MessageType.Snapshot: {
      const meta = m.snapshot!;
      s += ` snap=${meta.term}/${meta.index} voters=${meta.confState.voters.join(",")}`;
      if (meta.confState.learners.length > 0) s += ` learners=${meta.confState.learners.join(",")}`;
      s += ` chunk=${m.snapshotOffset ?? 0}+${m.snapshotChunk?.length ?? 0}${m.snapshotDone ? " done" : ""}`;
      break;
    }
    case MessageType.SnapshotResponse:
      s += ` index=${m.index} offset=${m.snapshotOffset ?? 0}`;
      if (m.reject) s += " reject";
      break;
    case MessageType.ReadIndex:
    case MessageType.ReadIndexResponse:
      if (m.type === MessageType.ReadIndexResponse) s += ` index=${m.index}`;
      s += ` ctx=${decoder.decode(m.context)}`;
      break;
    case MessageType.Propose:
      s += ` entries=${describeEntries(m.entries)}`;
      break;
  }
  return s;
}

/** Multi-line rendering of a Ready, each line indented by `indent`. */
export function describeReady(rd: Ready, indent = "  "): string[] {
  const out: string[] = [];
  if (rd.softState) out.push(`${indent}State: ${rd.softState.role}, leader=${rd.softState.leader || "none"}`);
  if (rd.hardState) {
    out.push(
      `${indent}HardState term=${rd.hardState.term} vote=${rd.hardState.vote || "none"} commit=${rd.hardState.commit}`,
    );
  }
  if (rd.snapshot) {
    const m = rd.snapshot.metadata;
    out.push(
      `${indent}Snapshot ${m.term}/${m.index} voters=${m.confState.voters.join(",")} learners=${m.confState.learners.join(",")} bytes=${rd.snapshot.data.length}`,
    );
  }
  if (rd.entries.length > 0) {
    out.push(`${indent}Entries:`);
    for (const e of rd.entries) out.push(`${indent}  ${describeEntry(e)}`);
  }
  if (rd.committedEntries.length > 0) {
    out.push(`${indent}CommittedEntries:`);
    for (const e of rd.committedEntries) out.push(`${indent}  ${describeEntry(e)}`);
  }
  if (rd.messages.length > 0) {
    out.push(`${indent}Messages:`);
    for (const m of rd.messages) out.push(`${indent}  ${describeMessage(m)}`);
  }
  if (rd.messagesAfterPersist.length > 0) {
    out.push(`${indent}Messages after persist:`);
    for (const m of rd.messagesAfterPersist) out.push(`${indent}  ${describeMessage(m)}`);
  }
  if (rd.readStates.length > 0) {
    out.push(`${indent}ReadStates:`);
    for (const r of rd.readStates) out.push(`${indent}  ${decoder.decode(r.requestId)}@${r.index}`);
  }
  return out;
}
