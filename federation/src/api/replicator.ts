// What the API needs from the replication layer: propose a command and learn its result, a
// linearizable read barrier, and the group's status. The raft-backed implementation wraps
// raft-ts's RaftNode; LocalReplicator runs the same state machine on one node for tests.
import type { ApplyResult } from "../intent/index.js";

export interface MemberInfo {
  id: string;
  address: string;
  voter: boolean;
  /** Highest index known replicated on the member (leader's view; 0 when unknown). */
  matchIndex: number;
}

export interface ReplicatorStatus {
  nodeId: string;
  leaderId: string;
  leaderAddress: string;
  term: number;
  commitIndex: number;
  appliedIndex: number;
  role: string;
  members: MemberInfo[];
}

export interface Replicator {
  readonly nodeId: string;
  /** Appends an encoded IntentCommand; resolves with its result once applied on this node. */
  propose(data: Uint8Array): Promise<ApplyResult>;
  /** Resolves once this node has applied everything committed before the call (ReadIndex). */
  read(): Promise<void>;
  status(): ReplicatorStatus;
  /** The leader's address when the leader is another node; "" when this node leads or none is known. Cheap. */
  otherLeader(): string;
  addMember(id: string, address: string, learner: boolean): Promise<void>;
  removeMember(id: string): Promise<void>;
}

/** This node cannot serve the call; the leader (if known) can. */
export class NotLeaderError extends Error {
  constructor(
    readonly leaderId: string,
    readonly leaderAddress: string,
  ) {
    super(
      leaderId
        ? `this node is not the leader; retry at ${leaderAddress || "(address unknown)"} (node ${leaderId})`
        : "no leader is known right now (election in progress or no quorum); retry shortly",
    );
    this.name = "NotLeaderError";
  }
}

/** A replicator that cannot do what was asked (e.g. membership changes on a single node). */
export class UnsupportedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnsupportedError";
  }
}
