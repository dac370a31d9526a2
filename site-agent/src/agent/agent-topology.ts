// The agent's two copies of its site's topology, kept together: the store (what the agent reads
// to bind ports and address hosts and gateways) and the simulator's view (what a flow miss is
// simulated against). A snapshot or change goes into both, in this order, here only — so the
// edge agent and anything measuring its first snapshot (first-snapshot.ts) run the same code.
import type { topologypb } from "@isthmus/schema";
import type { RuleSnapshot } from "../sim/packed-rules.js";
import type { Simulator } from "./simulator.js";
import { TopologyStore } from "./topology-store.js";
import type { TopologySink } from "./topology-watch-client.js";

export class AgentTopology implements TopologySink {
  readonly store = new TopologyStore();

  constructor(readonly simulator: Simulator) {}

  get revision(): number {
    return this.store.revision;
  }

  /** Whether a snapshot has been applied: before it, the agent cannot simulate. */
  get ready(): boolean {
    return this.store.ready;
  }

  /** Replaces both copies; afterwards the simulator can simulate against the snapshot. */
  applySnapshot(s: RuleSnapshot): void {
    this.store.applySnapshot(s);
    this.simulator.applySnapshot(s);
  }

  /** Applies one change to both; returns the tags of flows it makes stale. */
  applyChange(c: topologypb.TopologyChange): Set<string> {
    const tags = this.store.applyChange(c);
    for (const t of this.simulator.applyChange(c)) tags.add(t);
    return tags;
  }
}
