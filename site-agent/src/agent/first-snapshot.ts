// An agent's first snapshot, taken the way the agent takes it: its own watch client (channel
// settings, parts assembled) into its AgentTopology — the topology store and the engine
// simulator's view, the same code EdgeAgent runs — so the time is until the agent could simulate
// a packet against the snapshot. For measuring: the propagation benchmark and the controller's
// snapshot tools time this path. (Binding the host's ports is the datapath's work and not timed.)
import { silentLogger } from "@isthmus/schema";
import type { RuleSnapshot } from "../sim/packed-rules.js";
import { AgentTopology } from "./agent-topology.js";
import { EngineSimulator } from "./sim-adapter.js";
import { TopologyWatchClient } from "./topology-watch-client.js";

export interface FirstSnapshot {
  /** From the Watch call to the snapshot applied to the store and the simulator's view. */
  ms: number;
  /** As the agent holds it: `objects` without rules, the rules in `packedRules`. */
  snapshot: RuleSnapshot;
  /** Messages the snapshot arrived in. */
  parts: number;
  /** The copies the snapshot went into (the simulator is an EngineSimulator for hostId). */
  topology: AgentTopology;
  simulator: EngineSimulator;
}

export function firstSnapshot(
  address: string,
  hostId: string,
  token?: string,
  timeoutMs = 120_000,
): Promise<FirstSnapshot> {
  const simulator = new EngineSimulator({ hostId });
  const topology = new AgentTopology(simulator);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.stop();
      reject(new Error(`no snapshot within ${timeoutMs} ms (${client.lastError || "no error"})`));
    }, timeoutMs);
    const client: TopologyWatchClient = new TopologyWatchClient({
      address,
      hostId,
      token: token ? () => token : undefined,
      log: silentLogger(),
      sink: {
        get revision() {
          return topology.revision;
        },
        get ready() {
          return topology.ready;
        },
        applySnapshot(snapshot) {
          topology.applySnapshot(snapshot);
          const ms = performance.now() - t0;
          clearTimeout(timer);
          client.stop();
          resolve({ ms, snapshot, parts: client.stats.snapshotMessages, topology, simulator });
        },
        applyChange: (c) => topology.applyChange(c),
      },
    });
    const t0 = performance.now();
    client.start();
  });
}
