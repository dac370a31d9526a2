// Rules a topology view holds packed rather than as objects. A 10k-port site's snapshot carries
// ~150k rules and a host's flows cross a few of its chains: holding each as an object (and its id
// as a string, in a map) was most of what an agent's first snapshot allocated, indexed and then
// garbage-collected before it could forward. The agent's decoder keeps a snapshot's rules as
// positions in the received messages instead (agent/snapshot-rules.ts); the view asks for a
// chain's rules as objects when it compiles the chain, and looks a rule up by id when a change
// replaces or deletes it.
import type { topologypb } from "@isthmus/schema";

export interface PackedRules {
  /** Rules held, current or not (indexes 0 … count − 1). */
  readonly count: number;
  /** The index of the current rule with this id, or −1 (none, or retired). */
  find(id: string): number;
  /** The chain rule `i` is filed under. */
  chainOf(i: number): string;
  /** The indexes of the chain's current rules. */
  rulesOf(chainId: string): number[];
  /**
   * Rule `i` as an object, decoded now. A rule whose bytes do not decode still comes back, with
   * its id and chain, and throws its error from `condition` (compileRule keeps it as the rule's
   * error: evaluating the rule drops the packet, fail closed).
   */
  rule(i: number): topologypb.Rule;
  /** Rule `i` is current no more: a change replaced or deleted it. */
  retire(i: number): void;
}

/** A snapshot whose rules may come packed (the agent's decoder packs them; `objects` then has none). */
export type RuleSnapshot = topologypb.TopologySnapshot & { packedRules?: PackedRules };
