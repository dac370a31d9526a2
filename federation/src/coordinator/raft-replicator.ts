// The Replicator the coordinator runs on: raft-ts's RaftNode carrying encoded IntentCommands.
// Followers forward proposals to the leader inside raft; what cannot be served here (no leader,
// leadership lost mid-proposal) becomes NotLeaderError so the API answers with the leader's address.
import { Metadata, status } from "@grpc/grpc-js";
import { LEADER_TRAILER, serviceError } from "../api/grpc-errors.js";
import { NotLeaderError, type Replicator, type ReplicatorStatus } from "../api/replicator.js";
import type { ApplyResult } from "../intent/index.js";
import { type RaftNode, RaftNodeError } from "../raft/index.js";

export class RaftReplicator implements Replicator {
  constructor(private readonly node: RaftNode<ApplyResult>) {}

  get nodeId(): string {
    return this.node.id;
  }

  async propose(data: Uint8Array): Promise<ApplyResult> {
    try {
      return await this.node.propose(data);
    } catch (err) {
      throw this.translate(err, "write");
    }
  }

  async read(): Promise<void> {
    try {
      await this.node.read();
    } catch (err) {
      throw this.translate(err, "read");
    }
  }

  async addMember(id: string, address: string, learner: boolean): Promise<void> {
    try {
      await (learner ? this.node.addLearner(id, address) : this.node.addVoter(id, address));
    } catch (err) {
      throw this.translate(err, "membership change");
    }
  }

  async removeMember(id: string): Promise<void> {
    try {
      await this.node.removeNode(id);
    } catch (err) {
      throw this.translate(err, "membership change");
    }
  }

  otherLeader(): string {
    const leader = this.node.leaderId();
    return leader && leader !== this.node.id ? this.node.addressOf(leader) : "";
  }

  status(): ReplicatorStatus {
    const st = this.node.status();
    const member = (id: string, voter: boolean) => ({
      id,
      address: st.addresses[id] ?? "",
      voter,
      matchIndex: st.progress?.[id]?.match ?? 0,
    });
    return {
      nodeId: st.id,
      leaderId: st.leader,
      leaderAddress: st.leader ? (st.addresses[st.leader] ?? "") : "",
      term: st.term,
      commitIndex: st.commit,
      appliedIndex: st.applied,
      role: st.role,
      members: [
        ...[...new Set([...st.config.voters, ...st.config.votersOutgoing])]
          .sort()
          .map((id) => member(id, true)),
        ...[...st.config.learners].sort().map((id) => member(id, false)),
      ],
    };
  }

  private translate(err: unknown, what: string): Error {
    if (!(err instanceof RaftNodeError)) return err as Error;
    const leader = err.leader === this.node.id ? "" : err.leader;
    switch (err.code) {
      case "dropped":
      case "overwritten":
        // Certainly not applied: safe to retry, preferably at the leader.
        return new NotLeaderError(leader, leader ? err.leaderAddress : "");
      case "leader-changed":
      case "timeout": {
        // A forwarded proposal may still commit under the new leader: the outcome is unknown.
        const md = new Metadata();
        if (leader && err.leaderAddress) md.set(LEADER_TRAILER, err.leaderAddress);
        return serviceError(
          status.UNAVAILABLE,
          `${what} interrupted (${err.message}); its outcome is unknown — read before retrying a change that is not idempotent`,
          md,
        );
      }
      case "too-many-pending":
        return serviceError(status.RESOURCE_EXHAUSTED, err.message);
      default:
        return serviceError(status.UNAVAILABLE, err.message);
    }
  }
}
