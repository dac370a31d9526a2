// The datapath contract the agent drives. Two implementations fit behind it: the userspace one in
// TypeScript (userspace-datapath.ts, always available, and the path every miss takes) and the
// kernel fast path (issue 8: TC eBPF on the VM ports and an external-mode VXLAN device, flows in BPF
// maps). Both forward hits themselves and hand misses to the agent's upcall handler; flows are
// (match, mask, actions, tags) in the fixed layouts of flow-key.ts and flow-actions.ts.
import type { FlowActions } from "./flow-actions.js";
import type { Flow, InstallRequest } from "./flow-table.js";

/** A VM-facing port's frame I/O: batches in, batches out. */
export interface PortIO {
  readonly name: string;
  /** Starts delivering received frames; each call carries one batch. */
  start(onFrames: (frames: Buffer[]) => void): void;
  /** Writes frames; returns how many were written (the rest are dropped and counted). */
  send(frames: Buffer[]): number;
  close(): void;
}

export interface TunnelEndpoint {
  ip: string;
  port: number;
}

/** A packet the datapath could not forward from its flow table. */
export interface Upcall {
  /** Datapath port number it entered on; 0 when it came from a tunnel. */
  portNo: number;
  /** VNI it arrived with (0 from a local port), with the trace bit cleared. */
  tunnelKey: number;
  traced: boolean;
  frame: Buffer;
  /** Its flow key (flow-key.ts layout). */
  key: Buffer;
  /** Tunnel packets: who sent it. */
  from?: TunnelEndpoint;
}

/** The agent's answer to an upcall. */
export interface UpcallDecision {
  /** What to do with this packet. */
  actions: FlowActions;
  /** When set, install a flow so later packets do not come back up. */
  install?: Omit<InstallRequest, "match" | "actions">;
  /** Packets the simulation generated (ARP replies, ICMP errors), each with its own actions. */
  generated?: { frame: Buffer; actions: FlowActions }[];
  /**
   * Run after the flow is installed and before any packet of this decision goes out: flow state
   * for the peers must precede the packet, but encoding it need not delay the install (the window
   * in which later packets of the flow still miss).
   */
  beforeOutput?: () => void;
}

export type UpcallHandler = (u: Upcall) => UpcallDecision | Promise<UpcallDecision>;

export interface PortCounters {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  txDropped: number;
}

export interface DatapathStats {
  ports: Map<number, { name: string; portId: string } & PortCounters>;
  /** Keyed by remote "ip:port". */
  tunnels: Map<string, PortCounters>;
  drops: Map<string, number>;
  flows: number;
  exactEntries: number;
  masks: number;
  upcallQueueDepth: number;
  upcalls: number;
  flowHits: number;
  flowMisses: number;
  installs: number;
}

export interface FlowDump {
  id: number;
  match: Record<string, string | number>;
  actions: string;
  tags: readonly string[];
  packets: number;
  bytes: number;
  ageMs: number;
  idleMs: number;
  /** Kernel datapath: whether the kernel forwards the flow's packets, and why not when it does not. */
  path?: "kernel" | "userspace";
  kernelEntries?: number;
  userspaceReason?: string;
}

export interface Datapath {
  readonly kind: "userspace" | "kernel";
  /** Starts the tunnel socket and timers. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Binds a VM-facing port under a datapath port number (> 0) and its topology port id. */
  addPort(portNo: number, portId: string, io: PortIO): void;
  removePort(portNo: number): void;
  /** Intra-site tunnel keys: frames arriving with `key` go straight to `portNo` (undefined = unmap). */
  setTunnelKeyPort(key: number, portNo: number | undefined): void;
  onUpcall(handler: UpcallHandler): void;
  /** Flow-state messages (VNI 0xFFFFFF) from peers. */
  onFlowState(handler: (payload: Buffer, from: TunnelEndpoint) => void): void;
  sendFlowState(payload: Buffer, to: readonly TunnelEndpoint[]): void;
  install(req: InstallRequest): Flow | undefined;
  /** Removes every flow carrying any of the tags; returns how many. */
  invalidate(tags: Iterable<string>): number;
  /** Removes every flow. */
  flush(): void;
  /** Sends one packet with explicit actions (e.g. a packet the agent generated). */
  execute(frame: Buffer, actions: FlowActions): void;
  dumpFlows(): FlowDump[];
  stats(): DatapathStats;
  /** Counts a drop the agent decided outside the flow table. */
  countDrop(reason: string): void;
}

/** Tunnel-key ranges (DESIGN §5). */
export const TUNNEL_KEY = {
  localMin: 0x000001,
  localMax: 0x0fffff,
  globalMin: 0x100000,
  globalMax: 0x7ffffe,
  traceBit: 0x800000,
  flowState: 0xffffff,
} as const;

export function isLocalTunnelKey(k: number): boolean {
  return k >= TUNNEL_KEY.localMin && k <= TUNNEL_KEY.localMax;
}

export function isGlobalTunnelKey(k: number): boolean {
  return k >= TUNNEL_KEY.globalMin && k <= TUNNEL_KEY.globalMax;
}
