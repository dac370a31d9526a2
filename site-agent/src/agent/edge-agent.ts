// One host's edge agent without its process shell: applies topology events to the local copy and
// the simulator, invalidates the flows they touch, binds and unbinds the ports assigned to this
// host, answers upcalls, and installs flow state that peers push. agent-process.ts adds gRPC,
// metrics, the admin endpoint and signals around it.
import { componentLogger, type Logger, type topologypb } from "@isthmus/schema";
import type { RuleSnapshot } from "../sim/packed-rules.js";
import { AgentTopology } from "./agent-topology.js";
import type { Datapath, PortIO, TunnelEndpoint } from "./datapath.js";
import { decodeFlowState } from "./flow-state.js";
import type { Simulator } from "./simulator.js";
import type { TopologyStore } from "./topology-store.js";
import { UpcallHandler } from "./upcall-handler.js";

/** Opens the frame I/O for a VM interface bound to this host. */
export type PortOpener = (interfaceName: string) => PortIO;

export interface EdgeAgentOptions {
  hostId: string;
  role: "host" | "gateway";
  datapath: Datapath;
  simulator: Simulator;
  openPort: PortOpener;
  log: Logger;
  clock?: () => number;
  stateRefreshMs?: number;
}

export class EdgeAgent {
  /** The store and the simulator's view, which every snapshot and change goes into together. */
  readonly topology: AgentTopology;
  readonly handler: UpcallHandler;
  private readonly portIdByNo = new Map<number, string>();
  private readonly portNoById = new Map<string, number>();
  private readonly boundKeys = new Map<string, number>();
  private readonly clock: () => number;
  private readonly log: Logger;
  private nextPortNo = 1;
  private readonly bindWarned = new Set<string>();
  readonly stats = { flowStateMessages: 0, flowStateMalformed: 0, invalidated: 0, bindErrors: 0 };

  constructor(private readonly o: EdgeAgentOptions) {
    this.clock = o.clock ?? (() => performance.now());
    this.log = componentLogger(o.log, "edge-agent");
    this.topology = new AgentTopology(o.simulator);
    this.handler = new UpcallHandler({
      hostId: o.hostId,
      role: o.role,
      store: this.store,
      simulator: o.simulator,
      datapath: o.datapath,
      portIdByNo: this.portIdByNo,
      portNoById: this.portNoById,
      stateRefreshMs: o.stateRefreshMs,
      clock: this.clock,
    });
    o.datapath.onUpcall((u) => this.handler.handle(u));
    o.datapath.onFlowState((payload, from) => this.onFlowState(payload, from));
  }

  get store(): TopologyStore {
    return this.topology.store;
  }

  get hostId(): string {
    return this.o.hostId;
  }

  /** Local bindings: topology port id → datapath port number. */
  boundPorts(): Map<string, number> {
    return new Map(this.portNoById);
  }

  applySnapshot(s: RuleSnapshot): void {
    this.topology.applySnapshot(s);
    // A snapshot replaces everything: every cached decision may be stale.
    this.stats.invalidated += this.o.datapath.stats().flows;
    this.o.datapath.flush();
    this.reconcilePorts();
  }

  applyChange(c: topologypb.TopologyChange): void {
    const tags = this.topology.applyChange(c);
    this.stats.invalidated += this.o.datapath.invalidate(tags);
    this.reconcilePorts();
  }

  /** Binds ports newly assigned to this host, unbinds ports that left, keeps tunnel keys current. */
  private reconcilePorts(): void {
    const wanted = new Map(this.store.portsOnHost(this.o.hostId).map((p) => [p.id, p]));
    for (const [portId, portNo] of [...this.portNoById]) {
      if (wanted.has(portId)) continue;
      this.o.datapath.removePort(portNo);
      this.portNoById.delete(portId);
      this.portIdByNo.delete(portNo);
      this.boundKeys.delete(portId);
      this.log.info({ portId, portNo }, "port unbound");
    }
    for (const [portId, port] of wanted) {
      let portNo = this.portNoById.get(portId);
      if (portNo === undefined) {
        let io: PortIO | undefined;
        const no = this.nextPortNo;
        try {
          io = this.o.openPort(port.interfaceName);
          // The datapath may refuse the port too (an interface that vanished, an MTU that does
          // not fit the underlay): the same retry, never an exception out of the watch handler.
          this.o.datapath.addPort(no, portId, io);
        } catch (err) {
          try {
            io?.close();
          } catch {
            // Closing a half-opened port is best effort; the error that matters is logged below.
          }
          this.stats.bindErrors++;
          // Retried every tick; say so once per port rather than every second.
          if (!this.bindWarned.has(portId)) {
            this.bindWarned.add(portId);
            this.log.warn({ err, portId, interface: port.interfaceName }, "cannot bind port yet; retrying");
          }
          continue;
        }
        this.bindWarned.delete(portId);
        portNo = no;
        this.nextPortNo++;
        this.portNoById.set(portId, portNo);
        this.portIdByNo.set(portNo, portId);
        this.log.info({ portId, portNo, interface: port.interfaceName }, "port bound");
      }
      const oldKey = this.boundKeys.get(portId);
      if (oldKey !== port.tunnelKey) {
        if (oldKey !== undefined && oldKey !== 0) this.o.datapath.setTunnelKeyPort(oldKey, undefined);
        if (port.tunnelKey !== 0) this.o.datapath.setTunnelKeyPort(port.tunnelKey, portNo);
        this.boundKeys.set(portId, port.tunnelKey);
      }
    }
  }

  /** Periodic work: retry bindings whose interfaces were missing, expire learned state. */
  tick(): void {
    if (this.store.ready) this.reconcilePorts();
    const tags = this.o.simulator.expire(this.clock());
    if (tags.length > 0) this.stats.invalidated += this.o.datapath.invalidate(tags);
  }

  private onFlowState(payload: Buffer, from: TunnelEndpoint): void {
    let msg: ReturnType<typeof decodeFlowState>;
    try {
      msg = decodeFlowState(payload);
    } catch (err) {
      this.stats.flowStateMalformed++;
      this.o.datapath.countDrop("flow_state_malformed");
      this.log.debug({ err, from }, "malformed flow state message");
      return;
    }
    this.stats.flowStateMessages++;
    // Decisions cached before the state arrived (a return packet dropped as "not established")
    // carry the entry's tag and must be recomputed.
    const tags = this.o.simulator.installFlowState(msg.entries, this.clock());
    if (tags.length > 0) this.o.datapath.invalidate(tags);
    const released = this.o.simulator.takeResubmits?.() ?? [];
    if (released.length > 0) this.handler.resubmitReleased(released);
  }

  async stop(): Promise<void> {
    await this.o.datapath.stop();
  }
}
