// What the agent needs from packet simulation (src/sim): given a packet and where it entered, the
// header rewrites and outputs, the megaflow mask, the tags the result depended on, packets it
// generated and the flow state to share. sim-adapter.ts implements it over the sim engine; tests use
// small fakes. Topology and peers' flow state reach the simulator through the agent.
import type { topologypb } from "@isthmus/schema";
import type { RuleSnapshot } from "../sim/packed-rules.js";
import type { FlowActions } from "./flow-actions.js";
import type { FlowField } from "./flow-key.js";
import type { FlowStateEntry } from "./flow-state.js";

export interface SimulationInput {
  frame: Buffer;
  /** Flow key of the frame (flow-key.ts layout). */
  key: Buffer;
  /** The topology port the frame entered on (local VM ports). */
  ingressPortId?: string;
  /** Global tunnel key the frame arrived with (gateways), and the remote site that sent it. */
  tunnelKey?: number;
  fromSite?: string;
  traced: boolean;
  /** Monotonic milliseconds. */
  now: number;
}

export type FlowRewrites = Omit<FlowActions, "outputs" | "dropReason">;

export type SimOutput =
  | { kind: "port"; portId: string }
  | { kind: "tunnel"; key: number; remoteIp: string; remotePort: number; hostId: string };

/** Rewrites applied once, then outputs; a result with rewrites between outputs has several groups. */
export interface OutputGroup {
  rewrites: FlowRewrites;
  outputs: SimOutput[];
}

export interface SimulationOutcome {
  groups: OutputGroup[];
  dropReason?: string;
  /**
   * Fields the result depended on (inPort/tunnelKey are always added); undefined = every field.
   * May be a list shared between outcomes: readers must not modify it.
   */
  maskFields?: readonly FlowField[];
  /**
   * With ipDst in maskFields: how many leading bits of the (IPv4) destination the result depended
   * on, when fewer than 32 (a route lookup read only a prefix); undefined = the whole address.
   */
  ipDstPrefixBits?: number;
  tags: string[];
  /** False when the result must not be reused for other packets (ARP, errors, held packets). */
  cacheable: boolean;
  idleTimeoutMs?: number;
  /** Packets the simulation created, each already simulated. */
  generated: { frame: Buffer; groups: OutputGroup[] }[];
  /** Conntrack/NAT entries this packet created, to share with the return path's hosts. */
  flowState: FlowStateEntry[];
  /** Tags of cached flows this simulation made stale (a MAC moved, state changed). */
  invalidate: string[];
  /** Packets to simulate again now (released by ARP resolution), with where they entered. */
  resubmit: { frame: Buffer; ingressPortId?: string; tunnelKey?: number; fromSite?: string }[];
}

export interface Simulator {
  simulate(input: SimulationInput): SimulationOutcome | Promise<SimulationOutcome>;
  /** Replaces the topology; a snapshot's packed rules are the simulator's to keep (sim/packed-rules.ts). */
  applySnapshot(s: RuleSnapshot): void;
  /** Returns the tags of flows the change makes stale. */
  applyChange(c: topologypb.TopologyChange): string[];
  /** Installs peers' flow state; returns the tags of flows decided without it. */
  installFlowState(entries: FlowStateEntry[], now: number): string[];
  /** Packets that installed flow state released (held for an ARP answer a peer shared). */
  takeResubmits?(): SimulationOutcome["resubmit"];
  /** Keeps this host's own entries alive while a flow using them is active. */
  refreshFlowState(entries: FlowStateEntry[], now: number): void;
  /** Expires learned state; returns the tags of flows that depended on it. */
  expire(now: number): string[];
}
