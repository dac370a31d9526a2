// The userspace datapath: frames from VM ports and the VXLAN socket are looked up in the flow table
// and forwarded by their flow's actions; misses queue for the agent's upcall handler (simulation),
// whose decision is executed and usually installed. Intra-site tunnel keys are delivered straight to
// their port. Port writes are batched per received batch.
import {
  type Datapath,
  type DatapathStats,
  type FlowDump,
  isLocalTunnelKey,
  type PortCounters,
  type PortIO,
  TUNNEL_KEY,
  type TunnelEndpoint,
  type UpcallHandler,
} from "./datapath.js";
import { countDropIn } from "./drop-reason.js";
import { applyRewrites, describeActions, type FlowActions, validateActions } from "./flow-actions.js";
import { describeKey } from "./flow-key.js";
import {
  DEFAULT_FLOW_LIMITS,
  type Flow,
  FlowTable,
  type FlowTableLimits,
  type InstallRequest,
} from "./flow-table.js";
import { UpcallPump, type UpcallPumpSettings } from "./upcall-pump.js";
import { VxlanSocket } from "./vxlan-socket.js";

export interface UserspaceDatapathOptions extends UpcallPumpSettings {
  tunnelIp: string;
  tunnelPort: number;
  flowLimits?: Partial<FlowTableLimits>;
  expiryIntervalMs?: number;
  /** Tunnel socket implementation (vxlan-socket.ts); "auto" = the native batched one when built. */
  tunnelIo?: "auto" | "native" | "dgram";
  clock?: () => number;
}

interface BoundPort extends PortCounters {
  portNo: number;
  portId: string;
  name: string;
  io: PortIO;
  pending: Buffer[];
}

function counters(): PortCounters {
  return { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, txDropped: 0 };
}

export class UserspaceDatapath implements Datapath {
  readonly kind = "userspace" as const;
  readonly table: FlowTable;
  private readonly pump: UpcallPump;
  private readonly ports = new Map<number, BoundPort>();
  private readonly keyToPort = new Map<number, number>();
  /** Per remote ip, then port: no string is built per packet to find them. */
  private readonly tunnels = new Map<string, Map<number, PortCounters>>();
  private tunnelCount = 0;
  private readonly drops = new Map<string, number>();
  private readonly socket: VxlanSocket;
  private readonly clock: () => number;
  private readonly dirty = new Set<BoundPort>();
  private lastRxFrom: TunnelEndpoint | undefined;
  private lastRxCounters: PortCounters | undefined;
  private flowStateHandler: ((p: Buffer, from: TunnelEndpoint) => void) | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly opts: UserspaceDatapathOptions) {
    this.table = new FlowTable({ ...DEFAULT_FLOW_LIMITS, ...opts.flowLimits });
    this.socket = new VxlanSocket({ address: opts.tunnelIp, port: opts.tunnelPort, io: opts.tunnelIo });
    this.clock = opts.clock ?? (() => performance.now());
    this.pump = new UpcallPump(this.table, this.clock, opts, {
      output: (frame, actions) => this.output(frame, actions),
      flush: () => this.flushPorts(),
      countDrop: (reason) => this.countDrop(reason),
    });
  }

  get tunnelPort(): number {
    return this.socket.boundPort;
  }

  /** Which tunnel socket is in use: the native batched one, or node:dgram. */
  get tunnelIo(): "native" | "dgram" {
    return this.socket.io;
  }

  async start(): Promise<void> {
    await this.socket.start({
      packet: (vni, frame, from) => this.onTunnelPacket(vni, frame, from),
      bad: (reason) => this.countDrop(reason),
      batchEnd: () => this.flushPorts(),
      sendFailed: (n) => {
        for (let i = 0; i < n; i++) this.countDrop("tunnel_tx_failed");
      },
    });
    const every = this.opts.expiryIntervalMs ?? 1000;
    this.expiryTimer = setInterval(() => this.table.expire(this.clock()), every);
    this.expiryTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.pump.stop();
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    for (const p of this.ports.values()) p.io.close();
    this.ports.clear();
    await this.socket.close();
  }

  addPort(portNo: number, portId: string, io: PortIO): void {
    if (!Number.isInteger(portNo) || portNo <= 0 || portNo > 0xffffffff) {
      throw new Error(`datapath: port number ${portNo} must be an integer in 1..2^32-1`);
    }
    if (this.ports.has(portNo)) throw new Error(`datapath: port number ${portNo} is already bound`);
    const port: BoundPort = { portNo, portId, name: io.name, io, pending: [], ...counters() };
    this.ports.set(portNo, port);
    io.start((frames) => this.onPortFrames(port, frames));
  }

  removePort(portNo: number): void {
    const p = this.ports.get(portNo);
    if (!p) return;
    this.ports.delete(portNo);
    this.pump.dropPort(portNo);
    for (const [k, n] of this.keyToPort) if (n === portNo) this.keyToPort.delete(k);
    p.io.close();
  }

  setTunnelKeyPort(key: number, portNo: number | undefined): void {
    if (!isLocalTunnelKey(key))
      throw new Error(`datapath: tunnel key 0x${key.toString(16)} is not site-local`);
    if (portNo === undefined) this.keyToPort.delete(key);
    else this.keyToPort.set(key, portNo);
  }

  onUpcall(handler: UpcallHandler): void {
    this.pump.setHandler(handler);
  }

  onFlowState(handler: (payload: Buffer, from: TunnelEndpoint) => void): void {
    this.flowStateHandler = handler;
  }

  sendFlowState(payload: Buffer, to: readonly TunnelEndpoint[]): void {
    for (const t of to) {
      this.socket.send(TUNNEL_KEY.flowState, payload, t.ip, t.port);
      this.countTunnelTx(t.ip, t.port, payload.length);
    }
  }

  install(req: InstallRequest): Flow | undefined {
    validateActions(req.actions);
    return this.table.install(req, this.clock());
  }

  invalidate(tags: Iterable<string>): number {
    return this.table.invalidate(tags);
  }

  flush(): void {
    this.table.clear();
  }

  execute(frame: Buffer, actions: FlowActions): void {
    this.output(frame, actions);
    this.flushPorts();
  }

  countDrop(reason: string): void {
    countDropIn(this.drops, reason);
  }

  dumpFlows(): FlowDump[] {
    const now = this.clock();
    return this.table.flows().map((f) => ({
      id: f.id,
      match: describeKey(f.match, f.mask),
      actions: describeActions(f.actions),
      tags: f.tags,
      packets: f.packets,
      bytes: f.bytes,
      ageMs: Math.round(now - f.installedAt),
      idleMs: Math.round(now - f.lastUsed),
    }));
  }

  stats(): DatapathStats {
    const s = this.table.stats;
    return {
      ports: new Map(
        [...this.ports].map(([n, p]) => [
          n,
          {
            name: p.name,
            portId: p.portId,
            rxPackets: p.rxPackets,
            rxBytes: p.rxBytes,
            txPackets: p.txPackets,
            txBytes: p.txBytes,
            txDropped: p.txDropped,
          },
        ]),
      ),
      tunnels: new Map(
        [...this.tunnels].flatMap(([ip, byPort]) =>
          [...byPort].map(([port, c]) => [`${ip}:${port}`, { ...c }] as const),
        ),
      ),
      drops: new Map(this.drops),
      flows: this.table.size,
      exactEntries: this.table.exactSize,
      masks: this.table.maskCount,
      upcallQueueDepth: this.pump.depth,
      upcalls: this.pump.upcalls,
      flowHits: s.exactHits + s.megaflowHits,
      flowMisses: s.misses,
      installs: s.installs,
    };
  }

  // ---- packet path ----

  private onPortFrames(port: BoundPort, frames: Buffer[]): void {
    if (this.stopped || this.ports.get(port.portNo) !== port) return;
    for (const frame of frames) {
      port.rxPackets++;
      port.rxBytes += frame.length;
      this.pump.offer(frame, port.portNo, 0, false);
    }
    this.flushPorts();
  }

  private onTunnelPacket(vni: number, frame: Buffer, from: TunnelEndpoint): void {
    if (this.stopped) return;
    // Datagrams come in runs from one peer, and the socket hands over one endpoint object per peer.
    let t = this.lastRxCounters;
    if (from !== this.lastRxFrom || t === undefined) {
      t = this.tunnelCounters(from.ip, from.port);
      this.lastRxFrom = from;
      this.lastRxCounters = t;
    }
    t.rxPackets++;
    t.rxBytes += frame.length;
    if (vni === TUNNEL_KEY.flowState) {
      // A copy: the frame may be a view into the socket's receive arena, reused by the next batch.
      if (this.flowStateHandler) this.flowStateHandler(Buffer.from(frame), from);
      else this.countDrop("flow_state_unhandled");
      return;
    }
    const traced = (vni & TUNNEL_KEY.traceBit) !== 0;
    const key = vni & ~TUNNEL_KEY.traceBit;
    if (key === 0) {
      this.countDrop("vxlan_key_zero");
      return;
    }
    if (isLocalTunnelKey(key)) {
      // The sender simulated the whole path (egress filters included): deliver as is.
      const portNo = this.keyToPort.get(key);
      const port = portNo === undefined ? undefined : this.ports.get(portNo);
      if (!port) {
        this.countDrop("vxlan_unknown_key");
        return;
      }
      this.queueToPort(port, frame);
    } else {
      this.pump.offer(frame, 0, key, traced, from);
    }
    // Port writes go out when the socket ends the batch (batchEnd → flushPorts).
  }

  private output(frame: Buffer, a: FlowActions): void {
    if (a.outputs.length === 0) {
      this.countDrop(a.dropReason ?? "no_output");
      return;
    }
    if (!applyRewrites(frame, a)) {
      this.countDrop("ttl_expired");
      return;
    }
    for (const o of a.outputs) {
      if (o.kind === "port") {
        const port = this.ports.get(o.portNo);
        if (port) this.queueToPort(port, frame);
        else this.countDrop("output_port_gone");
      } else {
        this.socket.send(o.key, frame, o.remoteIp, o.remotePort);
        this.countTunnelTx(o.remoteIp, o.remotePort, frame.length);
      }
    }
  }

  private queueToPort(port: BoundPort, frame: Buffer): void {
    port.pending.push(frame);
    this.dirty.add(port);
  }

  private flushPorts(): void {
    for (const p of this.dirty) {
      const frames = p.pending;
      p.pending = [];
      const written = p.io.send(frames);
      for (let i = 0; i < written; i++) {
        p.txPackets++;
        p.txBytes += frames[i]!.length;
      }
      if (written < frames.length) {
        p.txDropped += frames.length - written;
        for (let i = written; i < frames.length; i++) this.countDrop("port_tx_full");
      }
    }
    this.dirty.clear();
  }

  private tunnelCounters(ip: string, port: number): PortCounters {
    let byPort = this.tunnels.get(ip);
    let t = byPort?.get(port);
    if (!t) {
      // Bounded by the number of distinct senders; garbage from many addresses is capped.
      if (this.tunnelCount >= 4096) return counters();
      if (!byPort) {
        byPort = new Map();
        this.tunnels.set(ip, byPort);
      }
      t = counters();
      byPort.set(port, t);
      this.tunnelCount++;
    }
    return t;
  }

  private countTunnelTx(ip: string, port: number, bytes: number): void {
    const t = this.tunnelCounters(ip, port);
    t.txPackets++;
    t.txBytes += bytes;
  }
}
