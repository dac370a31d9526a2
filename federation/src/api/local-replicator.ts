// A single-node, in-memory Replicator: every proposal is applied at once as the next log index.
// Nothing is persisted and there are no peers; it exists so the API and CLI can be tested without
// a raft group. Membership changes are refused, not faked.

import type { ApplyResult, IntentStateMachine } from "../intent/index.js";
import { EntryType } from "../raft/types.js";
import { type Replicator, type ReplicatorStatus, UnsupportedError } from "./replicator.js";

export class LocalReplicator implements Replicator {
  constructor(
    private readonly sm: IntentStateMachine,
    readonly nodeId = "local",
    private readonly address = "",
  ) {}

  async propose(data: Uint8Array): Promise<ApplyResult> {
    return this.sm.apply({ term: 1, index: this.sm.index + 1, type: EntryType.Normal, data });
  }

  async read(): Promise<void> {
    // One node: everything committed is already applied.
  }

  otherLeader(): string {
    return ""; // the only node leads
  }

  status(): ReplicatorStatus {
    return {
      nodeId: this.nodeId,
      leaderId: this.nodeId,
      leaderAddress: this.address,
      term: 1,
      commitIndex: this.sm.index,
      appliedIndex: this.sm.index,
      role: "leader",
      members: [{ id: this.nodeId, address: this.address, voter: true, matchIndex: this.sm.index }],
    };
  }

  async addMember(): Promise<void> {
    throw new UnsupportedError(
      "this coordinator runs a single in-memory node; membership changes need a raft group",
    );
  }

  async removeMember(): Promise<void> {
    throw new UnsupportedError(
      "this coordinator runs a single in-memory node; membership changes need a raft group",
    );
  }
}
