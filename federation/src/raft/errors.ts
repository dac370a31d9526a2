// Errors raft-ts raises to its caller. An invariant violation means a bug (or corrupt storage):
// the core refuses to continue rather than risk diverging state, so callers should crash.

/** A broken internal invariant of the raft core. Never caught and ignored. */
export class RaftInvariantError extends Error {
  constructor(message: string) {
    super(`raft invariant violated: ${message}`);
    this.name = "RaftInvariantError";
  }
}

/** Why a proposal (or read, or transfer request) was not accepted. */
export type DropReason =
  | "no-leader"
  | "not-leader"
  | "leader-transfer-in-progress"
  | "uncommitted-size-exceeded"
  | "conf-change-pending"
  | "invalid-conf-change"
  | "invalid-transfer-target"
  | "not-a-member"
  | "read-queue-full";

const reasonText: Record<DropReason, string> = {
  "no-leader": "no leader is known; retry after an election",
  "not-leader": "this node is not the leader",
  "leader-transfer-in-progress": "leadership transfer in progress; retry shortly",
  "uncommitted-size-exceeded":
    "too much uncommitted data in the log (maxUncommittedEntriesSize); retry later",
  "conf-change-pending": "a membership change is still uncommitted or unapplied; only one may be in flight",
  "invalid-conf-change": "membership change is invalid",
  "invalid-transfer-target": "leadership can only be transferred to a voter",
  "not-a-member": "this node is not a member of the group",
  "read-queue-full": "too many pending ReadIndex requests (maxPendingReadIndex); retry later",
};

/** A proposal, read or transfer request the core did not accept. Nothing was appended. */
export class ProposalDroppedError extends Error {
  readonly reason: DropReason;
  constructor(reason: DropReason, detail?: string) {
    super(`raft: proposal dropped: ${reasonText[reason]}${detail ? ` (${detail})` : ""}`);
    this.name = "ProposalDroppedError";
    this.reason = reason;
  }
}
