// What the agent needs from packet simulation (src/sim): given a packet and where it entered, the
// header rewrites, the egress ports, the megaflow mask, the tags the result depended on, packets it
// generated and the flow state to share. sim-adapter.ts implements it over the sim engine; tests use
// small fakes. Topology reaches the simulator through the same snapshot/change stream the agent gets.
import type { topologypb } from "@isthmus/schema";
import type { FlowActions } from "./flow-actions.js";
import type { FlowField } from "./flow-key.js";
import type { FlowStateEntry } from "./flow-state.js";

export interface SimulationInput {
  frame: Buffer;
  /** Flow key of the frame (flow-key.ts layout). */
  key: Buffer;
  /** The topology port the frame entered on (local VM ports). */
  ingressPortId?: string;
  /** Global tunnel key the frame arrived with (gateways). */
  tunnelKey?: number;
  traced: boolean;
  /** Monotonic milliseconds. */
  now: number;
}

export type FlowRewrites = Omit<FlowActions, "outputs" | "dropReason">;

export interface SimulationOutcome {
  rewrites: FlowRewrites;
  /** Topology ports the packet leaves through (several when flooded). Empty = dropped. */
  egressPortIds: string[];
  dropReason?: string;
  /** Fields the result depended on (inPort/tunnelKey are always added); undefined = every field. */
  maskFields?: FlowField[];
  tags: string[];
  /** False when the result must not be reused for other packets (e.g. it consumed state). */
  cacheable: boolean;
  idleTimeoutMs?: number;
  generated: { frame: Buffer; egressPortId: string }[];
  /** Conntrack/NAT entries this packet created, to install here and at the return path's hosts. */
  flowState: FlowStateEntry[];
}

export interface Simulator {
  simulate(input: SimulationInput): SimulationOutcome | Promise<SimulationOutcome>;
  applySnapshot(s: topologypb.TopologySnapshot): void;
  applyChange(c: topologypb.TopologyChange): void;
}
