// Membership changes: their encoding inside a ConfChange log entry, and how one is applied to a
// ConfState. raft-ts changes one voter at a time, so majorities of the old and new configuration
// always overlap; the core refuses a new change while a previous one is not yet applied.

import { RaftInvariantError } from "./errors.js";
import { type ConfChange, ConfChangeType, type ConfState, type NodeId } from "./types.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export function encodeConfChange(cc: ConfChange): Uint8Array {
  return encoder.encode(JSON.stringify({ type: cc.type, nodeId: cc.nodeId, address: cc.address }));
}

export function decodeConfChange(data: Uint8Array): ConfChange {
  let v: unknown;
  try {
    v = JSON.parse(decoder.decode(data));
  } catch (err) {
    throw new RaftInvariantError(`undecodable ConfChange entry: ${(err as Error).message}`);
  }
  const o = v as Partial<ConfChange>;
  if (
    typeof o !== "object" ||
    o === null ||
    !(
      o.type === ConfChangeType.AddVoter ||
      o.type === ConfChangeType.AddLearner ||
      o.type === ConfChangeType.RemoveNode
    ) ||
    typeof o.nodeId !== "string" ||
    o.nodeId === "" ||
    typeof o.address !== "string"
  ) {
    throw new RaftInvariantError(`malformed ConfChange entry: ${JSON.stringify(v)}`);
  }
  return { type: o.type, nodeId: o.nodeId, address: o.address };
}

/** Why `cc` cannot apply to `cs`, or undefined if it can. */
export function validateConfChange(cs: ConfState, cc: ConfChange): string | undefined {
  if (typeof cc.nodeId !== "string" || cc.nodeId === "") return "nodeId must be a non-empty string";
  if (cc.type === ConfChangeType.RemoveNode) {
    if (cs.voters.includes(cc.nodeId) && cs.voters.length === 1) return "cannot remove the last voter";
    return undefined;
  }
  if (cc.type === ConfChangeType.AddVoter || cc.type === ConfChangeType.AddLearner) return undefined;
  return `unknown ConfChange type ${String(cc.type)}`;
}

/** The configuration after applying `cc` (a pure function; `cs` is not modified). */
export function applyToConfState(cs: ConfState, cc: ConfChange): ConfState {
  const voters = cs.voters.filter((v) => v !== cc.nodeId);
  const learners = cs.learners.filter((v) => v !== cc.nodeId);
  switch (cc.type) {
    case ConfChangeType.AddVoter:
      voters.push(cc.nodeId);
      break;
    case ConfChangeType.AddLearner:
      // Demoting a voter straight to learner is allowed: one voter leaves, majorities still overlap.
      learners.push(cc.nodeId);
      break;
    case ConfChangeType.RemoveNode:
      break;
  }
  // A node replaying the log from a bootstrap starts from an empty configuration, so a learner
  // may transiently exist without voters; removing the last voter is refused at proposal time.
  if (voters.length === 0 && cs.voters.length > 0) {
    throw new RaftInvariantError(`conf change ${describeConfChange(cc)} leaves no voters`);
  }
  return { voters: sortIds(voters), learners: sortIds(learners), votersOutgoing: [] };
}

export function sortIds(ids: NodeId[]): NodeId[] {
  return ids.slice().sort((a, b) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0));
}

export function describeConfChange(cc: ConfChange): string {
  const kind =
    cc.type === ConfChangeType.AddVoter
      ? "add-voter"
      : cc.type === ConfChangeType.AddLearner
        ? "add-learner"
        : "remove";
  return `${kind} ${cc.nodeId}`;
}
