// The kernel fast path behind the agent's Datapath interface. TC eBPF programs on every bound VM
// port and on an external-mode VXLAN device forward packets of installed flows without the agent;
// a miss reaches the agent through the upcall veth (header naming the ingress), is simulated like
// on the userspace path, the resulting flow is written to the BPF map when the programs can carry
// it (else it stays in the userspace table, which then handles those packets through the upcall
// device), and the packet is written back with a trailer the kernel obeys. See
// docs/kernel-datapath.md for why this shape (AF_PACKET taps see frames before TC; an external
// VXLAN device cannot share its UDP port with a socket).
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  type Datapath,
  type DatapathStats,
  type FlowDump,
  isLocalTunnelKey,
  type PortCounters,
  type PortIO,
  TUNNEL_KEY,
  type TunnelEndpoint,
  type Upcall,
  type UpcallHandler,
} from "../datapath.js";
import { countDropIn } from "../drop-reason.js";
import { applyRewrites, describeActions, type FlowActions, validateActions } from "../flow-actions.js";
import { describeKey } from "../flow-key.js";
import { numberShard, ShardedMap, stringShard } from "../flow-sharded-map.js";
import {
  DEFAULT_FLOW_LIMITS,
  type Flow,
  FlowTable,
  type FlowTableLimits,
  type InstallRequest,
} from "../flow-table.js";
import { agentTag } from "../tags.js";
import { UpcallPump, type UpcallPumpSettings, type UpcallTiming } from "../upcall-pump.js";
import { finishOffloads } from "../vnet-offload.js";
import type { BpfMap } from "./bpf-map.js";
import { FLOW_KEY_SIZE, FLOW_VALUE_SIZE } from "./flow-map-codec.js";
import { FlowSetupProfile, type FlowSetupReport, type SetupSample } from "./flow-setup-profile.js";
import { type KernelFlowContext, kernelFlowFor, TUNNEL_PORT_PEER } from "./kernel-flow.js";
import { deleteLink, interfaceWithAddress, type LinkInfo, linkInfo, runIn } from "./netns-exec.js";
import { possibleCpus, TcPrograms } from "./tc-programs.js";
import { UpcallDevice } from "./upcall-device.js";
import { parseUpcall, type ReinjectTarget, withReinjectTrailer } from "./upcall-frame.js";
import {
  idleUpcallRingStats,
  UPCALL_BUSY_POLL_MAX_US,
  UpcallRing,
  type UpcallRingStats,
  upcallRingAvailable,
} from "./upcall-ring.js";

/** VXLAN over IPv4 adds 50 bytes (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8). */
export const VXLAN_OVERHEAD = 50;
/** Entries the compiled `flows` map holds (max_entries in flow.bpf.c). */
export const KERNEL_FLOW_MAP_SIZE = 65536;

export interface KernelDatapathOptions extends UpcallPumpSettings {
  tunnelIp: string;
  /** The VXLAN device's UDP port (every host of a site uses the same one). */
  tunnelPort: number;
  /** Short name (≤ 9 chars, [a-z0-9]) for this agent's devices (`<name>u0/u1/vx`) and pins. */
  name: string;
  /** A bpffs mount (mounted when it is not one yet). */
  bpffs?: string;
  /** A network namespace file to run the datapath in; default: the agent's own namespace. */
  netns?: string;
  /** Where attachments are recorded so a restart after a crash can remove them. */
  stateDir?: string;
  /** Per-port upcall rate limit enforced by the programs. */
  upcallRate?: { perSecond: number; burst: number };
  /**
   * Hand misses up through the programs' ring buffer (default true; without the reader addon the
   * veth is used, with a warning) instead of the upcall veth; frames that do not fit a record
   * still take the veth.
   */
  upcallRing?: boolean;
  /**
   * Busy polling of the upcall ring (µs, 0 = off, the default): after each batch of misses the
   * event loop keeps reading the ring without blocking for this long, so the next miss of a burst
   * of new flows is read without waking the thread. Costs a CPU kept busy for the window after
   * every miss (docs/kernel-datapath.md, ninth pass). Only the ring is polled (not the veth).
   */
  upcallBusyPollUs?: number;
  /**
   * SCHED_FIFO priority the agent's thread busy-polls at (0 = off, the default): while a window is
   * open nothing of the fair class preempts it; its own policy, nice and slice come back when the
   * window closes (docs/kernel-datapath.md, ninth pass).
   */
  upcallBusyPollRealtime?: number;
  flowLimits?: Partial<FlowTableLimits>;
  /** How often kernel counters are read back and idle flows expired. */
  expiryIntervalMs?: number;
  clock?: () => number;
}

interface BoundPort extends PortCounters {
  portNo: number;
  portId: string;
  name: string;
  ifindex: number;
  /** A veth with its peer in another namespace: the programs deliver to it with redirect_peer. */
  peer: boolean;
}

interface KernelEntry {
  key: Buffer;
  /** The key's bytes as a (latin1) string: its name in `entries`. */
  name: string;
  flow: Flow;
  inPortNo: number;
  outPortNo: number | undefined;
  /** The counters of the tunnel peer it sends to (shared by that peer's entries). */
  tunnel: PortCounters | undefined;
  /** Written into the value's agent_id: finds the entry from a bulk read. */
  id: number;
  /** The sync walk that last saw it, or that was under way when it was written. */
  seen: number;
  packets: number;
  bytes: number;
  /** bpf_ktime_get_ns of the last hit, in ms. */
  lastUsedMs: number;
}

/** Entries read per BPF_MAP_LOOKUP_BATCH and per event-loop turn while syncing counters. */
const SYNC_CHUNK = 1024;
/** Entries of the dp_stats array (enum dp_stat in flow.bpf.c). */
const DP_STATS = 14;
/** struct dp_config in flow.bpf.c. */
const CONFIG_SIZE = 32;
/** flow_value.agent_id. */
const VALUE_AGENT_ID = 76;

/** dp_stats indexes (enum dp_stat in flow.bpf.c) that are drops, by the agent's drop reason. */
const KERNEL_DROPS: [number, string][] = [
  [2, "vxlan_no_tunnel_key"],
  [4, "upcall_rate_limited"],
  [7, "reinject_malformed"],
  [8, "upcall_failed"],
  [9, "kernel_unknown_port"],
  [10, "vxlan_unknown_key"],
  [13, "upcall_ring_full"],
];
const ST_HIT = 0;
const ST_UPCALL = 1;
const ST_TUNNEL_DELIVER = 5;
const ST_TUNNEL_UPCALL = 11;
const ST_RING_UPCALL = 12;

/**
 * CLOCK_MONOTONIC (process.hrtime, bpf_ktime_get_ns) minus performance.now(), in ms. Both read the
 * same clock from different origins; the first performance.now() call loads code for milliseconds,
 * so it is warmed up, and the tightest of a few paired readings is kept.
 */
function monotonicOffsetMs(): number {
  performance.now();
  let best = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < 8; i++) {
    const hr = Number(process.hrtime.bigint()) / 1e6;
    // Read after hr, so hr - now is at most the true offset; the largest is the closest.
    best = Math.max(best, hr - performance.now());
  }
  return best;
}

function counters(): PortCounters {
  return { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, txDropped: 0 };
}

/** A tunnel_ports value: the port's ifindex, flagged when the programs deliver to its peer. */
function tunnelPortTarget(p: BoundPort): number {
  return p.peer ? (p.ifindex | TUNNEL_PORT_PEER) >>> 0 : p.ifindex;
}

function u32le(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}

export class KernelDatapath implements Datapath {
  readonly kind = "kernel" as const;
  readonly table: FlowTable;
  readonly devices: { upcallKernel: string; upcallAgent: string; vxlan: string };
  /** What start() found and removed from a previous run (`link:`, `tc:`, `pins:` entries). */
  reclaimed: string[] = [];
  private readonly pump: UpcallPump;
  private readonly ports = new Map<number, BoundPort>();
  private readonly keyToPort = new Map<number, number>();
  private readonly tunnels = new Map<string, PortCounters>();
  private readonly drops = new Map<string, number>();
  private readonly kernelDropsSeen = new Map<number, bigint>();
  /** Per-flow indexes, sharded so that growing one never stalls a flow's setup (see ShardedMap). */
  private readonly entries = new ShardedMap<string, KernelEntry>(stringShard);
  /** A flow's entries: most flows have one, held as it is (no Set per flow for GC to move). */
  private readonly entriesByFlow = new ShardedMap<Flow, KernelEntry | Set<KernelEntry>>((f) =>
    numberShard(f.id),
  );
  private readonly entriesById = new ShardedMap<number, KernelEntry>(numberShard);
  private nextEntryId = 1;
  /** The counter read-back in progress (it runs in chunks so a large map never stalls the loop). */
  private walk: { epoch: number; from: Buffer | null; next: Buffer } | undefined;
  private walkEpoch = 0;
  /** dp_stats is per CPU: each entry's value is one u64 per possible CPU. */
  private readonly statsCpus = possibleCpus();
  private readonly statsBufs = {
    keys: Buffer.alloc(DP_STATS * 4),
    values: Buffer.alloc(DP_STATS * 8 * this.statsCpus),
    pos: Buffer.alloc(8),
  };
  private readonly walkBufs = {
    keys: Buffer.alloc(SYNC_CHUNK * FLOW_KEY_SIZE),
    values: Buffer.alloc(SYNC_CHUNK * FLOW_VALUE_SIZE),
    pos: [Buffer.alloc(8), Buffer.alloc(8)] as const,
  };
  private readonly userspaceReason = new WeakMap<Flow, string>();
  private readonly clock: () => number;
  private readonly pinName: string;
  private readonly statePath: string;
  private readonly attached = new Set<string>();
  private readonly linkCache = new Map<string, LinkInfo>();
  private pending: Buffer[] = [];
  private progs: TcPrograms | undefined;
  private maps:
    | { flows: BpfMap; ports: BpfMap; tunnelPorts: BpfMap; config: BpfMap; stats: BpfMap }
    | undefined;
  private device: UpcallDevice | undefined;
  private ring: UpcallRing | undefined;
  private ringMalformedSeen = 0;
  private vxlanIfindex = 0;
  private underlay: { name: string; mtu: number } | undefined;
  private flowStateHandler: ((p: Buffer, from: TunnelEndpoint) => void) | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private flushScheduled = false;
  private stopped = false;
  private kernelInstalls = 0;
  private kernelInstallFailures = 0;
  private tunnelPortWarned = false;
  /** Flow-setup latency of simulated upcalls whose flow went to the kernel (see flowSetup()). */
  private readonly setup = new FlowSetupProfile(4096);
  /** When the batch being handled was read (performance.now()), and when the last kernel entry
   * was encoded: the flow-setup profile's stage boundaries. */
  private batchReadAt = 0;
  private lastEncodedAt = 0;
  private lastWrittenAt = 0;
  /** The ring reader's stamps for the batch being handled (performance.now() scale; NaN when it
   * came up the veth): the loop going to wait, the reader entered, the reader calling back. */
  private batchLoopIdleAt = Number.NaN;
  private batchReaderAt = Number.NaN;
  private batchCalledAt = Number.NaN;
  /** 1 when the batch was read during a busy-poll window, 0 after a wake-up, NaN from the veth. */
  private batchPolled = Number.NaN;
  /** Filled per recorded setup (the profile copies the numbers): no object per new flow. */
  private readonly sample: SetupSample = {
    arrivedAt: 0,
    offeredAt: 0,
    handledAt: 0,
    decidedAt: 0,
    installedAt: 0,
    readAt: 0,
    loopIdleAt: 0,
    readerAt: 0,
    calledAt: 0,
    polled: 0,
    encodedAt: 0,
    writtenAt: 0,
  };
  /** Set while a batch read from the upcall path is handled (it flushes its writes at its end). */
  private inBatch = false;
  /** Reinjection targets, filled per frame written (withReinjectTrailer copies them). */
  private readonly portTarget = { kind: "port" as const, ifindex: 0 };
  private readonly tunnelTarget = { kind: "tunnel" as const, vxlanIfindex: 0, vni: 0, remote: "" };
  /** Per tunnel peer IP: its counters' key and the counters, for the device's own UDP port. */
  private readonly tunnelByIp = new Map<string, PortCounters>();
  /** CLOCK_MONOTONIC ms (the programs' bpf_ktime_get_ns) minus performance.now(). */
  private readonly monoOffsetMs = monotonicOffsetMs();

  constructor(private readonly opts: KernelDatapathOptions) {
    if (!/^[a-z0-9]{1,9}$/.test(opts.name)) {
      throw new Error(
        `kernel datapath: name ${JSON.stringify(opts.name)} must be 1-9 characters of [a-z0-9]`,
      );
    }
    const busy = opts.upcallBusyPollUs ?? 0;
    if (!Number.isInteger(busy) || busy < 0 || busy > UPCALL_BUSY_POLL_MAX_US) {
      throw new RangeError(
        `kernel datapath: upcallBusyPollUs ${busy} must be an integer from 0 (off) to ${UPCALL_BUSY_POLL_MAX_US} µs`,
      );
    }
    if (!Number.isInteger(opts.tunnelPort) || opts.tunnelPort <= 0 || opts.tunnelPort > 65535) {
      throw new Error(
        `kernel datapath: tunnel port ${opts.tunnelPort} must be 1..65535 (the VXLAN device binds it)`,
      );
    }
    const limits = { ...DEFAULT_FLOW_LIMITS, ...opts.flowLimits };
    this.table = new FlowTable(limits);
    this.table.onRemove = (flow) => this.removeKernelEntries(flow);
    this.clock = opts.clock ?? (() => performance.now());
    this.pump = new UpcallPump(this.table, this.clock, opts, {
      output: (frame, actions) => this.output(frame, actions),
      flush: () => this.flushPending(),
      countDrop: (reason) => this.countDrop(reason),
      // A megaflow the kernel has no entry for this exact packet yet (or cannot carry).
      flowHit: (flow, key) => this.installKernel(flow, key),
      flowInstalled: (flow, u, t) => this.flowInstalled(flow, u, t),
    });
    this.devices = { upcallKernel: `${opts.name}u0`, upcallAgent: `${opts.name}u1`, vxlan: `${opts.name}vx` };
    this.pinName = `isthmus-${opts.name}`;
    this.statePath = join(opts.stateDir ?? "/run/isthmus", `kernel-datapath-${opts.name}.json`);
  }

  get tunnelPort(): number {
    return this.opts.tunnelPort;
  }

  /** The pin directory of this datapath's programs and maps. */
  get pinDir(): string {
    return join(this.opts.bpffs ?? "/sys/fs/bpf", this.pinName);
  }

  async start(): Promise<void> {
    const { netns, log } = this.opts;
    this.reclaimed = this.reclaim();
    if (this.reclaimed.length > 0) {
      log.warn({ reclaimed: this.reclaimed }, "kernel datapath: removed what a previous run left behind");
    }
    this.progs = TcPrograms.load({ bpffs: this.opts.bpffs ?? "/sys/fs/bpf", name: this.pinName });
    try {
      const d = this.devices;
      this.saveState();
      runIn(netns, "ip", [
        "link",
        "add",
        d.upcallKernel,
        "mtu",
        "9000",
        "type",
        "veth",
        "peer",
        "name",
        d.upcallAgent,
        "mtu",
        "9000",
      ]);
      for (const dev of [d.upcallKernel, d.upcallAgent]) {
        // Nothing but the programs and the agent may put frames on the upcall device.
        try {
          runIn(netns, "sysctl", ["-qw", `net.ipv6.conf.${dev}.disable_ipv6=1`]);
        } catch {
          // no IPv6 in this kernel: nothing to silence
        }
        runIn(netns, "ip", ["link", "set", dev, "up"]);
      }
      runIn(netns, "ip", [
        "link",
        "add",
        d.vxlan,
        "type",
        "vxlan",
        "external",
        "dstport",
        String(this.opts.tunnelPort),
        "local",
        this.opts.tunnelIp,
        "nolearning",
      ]);
      runIn(netns, "ip", ["link", "set", d.vxlan, "up"]);
      const up = this.link(d.upcallKernel, true);
      const vx = this.link(d.vxlan, true);
      if (!up || !vx) throw new Error("kernel datapath: devices vanished while being created");
      this.vxlanIfindex = vx.ifindex;
      const p = this.progs;
      this.maps = {
        flows: p.openFlowMap(),
        ports: p.openMap("ports", 4, 16),
        tunnelPorts: p.openMap("tunnel_ports", 4, 4),
        config: p.openMap("config", 4, CONFIG_SIZE),
        stats: p.openStatsMap(this.statsCpus),
      };
      const rate = this.opts.upcallRate ?? { perSecond: 2000, burst: 256 };
      const interval = BigInt(Math.max(1, Math.round(1e9 / rate.perSecond)));
      const ringWanted = this.opts.upcallRing ?? true;
      if (ringWanted && !upcallRingAvailable()) {
        log.warn("kernel datapath: the upcall ring addon is not built; misses use the upcall veth");
      }
      if (ringWanted && upcallRingAvailable()) {
        // Reading before the programs are told to write: no record is left unread.
        this.ring = new UpcallRing(join(this.pinDir, "maps", "upcall_ring"));
        const ring = this.ring;
        this.ring.start((bufs) => this.onRingBuffers(bufs, ring.times));
        const busy = this.opts.upcallBusyPollUs ?? 0;
        if (busy > 0) {
          const rt = this.opts.upcallBusyPollRealtime ?? 0;
          this.ring.setBusyPoll(busy, undefined, rt);
          log.info(
            { busyPollUs: busy, realtimePriority: rt },
            "kernel datapath: busy polling the upcall ring after each miss",
          );
        }
      } else if ((this.opts.upcallBusyPollUs ?? 0) > 0) {
        log.warn("kernel datapath: upcall busy polling needs the upcall ring; it is off");
      }
      const cfg = Buffer.alloc(CONFIG_SIZE);
      cfg.writeUInt32LE(up.ifindex, 0);
      cfg.writeUInt32LE(vx.ifindex, 4);
      cfg.writeBigUInt64LE(interval, 8);
      cfg.writeBigUInt64LE(interval * BigInt(rate.burst), 16);
      cfg.writeUInt32LE(this.ring ? 1 : 0, 24);
      this.maps.config.update(u32le(0), cfg);
      this.maps.ports.update(u32le(vx.ifindex), Buffer.alloc(16)); // port 0 = the tunnel
      this.attach(d.upcallKernel, "upcall_ingress");
      this.attach(d.vxlan, "vxlan_ingress");
      const ul = interfaceWithAddress(netns, this.opts.tunnelIp);
      const ulInfo = ul ? this.link(ul, true) : undefined;
      if (ul && ulInfo) this.underlay = { name: ul, mtu: ulInfo.mtu };
      else
        log.warn(
          { tunnelIp: this.opts.tunnelIp },
          "kernel datapath: no interface holds the tunnel IP; MTU not checked",
        );
      this.device = new UpcallDevice(d.upcallAgent, netns);
      this.device.start((bufs) => this.onUpcallBuffers(bufs));
    } catch (err) {
      await this.stop();
      throw err;
    }
    const every = this.opts.expiryIntervalMs ?? 1000;
    this.expiryTimer = setInterval(() => this.sync(), every);
    this.expiryTimer.unref();
    log.info(
      { devices: this.devices, pins: this.pinDir, underlay: this.underlay, netns: netns ?? "(own)" },
      "kernel datapath started",
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.pump.stop();
    this.setup.close();
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    this.device?.close();
    this.device = undefined;
    this.ring?.close();
    this.ring = undefined;
    if (this.maps) for (const m of Object.values(this.maps)) m.close();
    this.maps = undefined;
    // unload() detaches every program it attached (the VM ports keep their veths).
    this.progs?.unload();
    this.progs = undefined;
    deleteLink(this.opts.netns, this.devices.vxlan);
    deleteLink(this.opts.netns, this.devices.upcallKernel);
    this.ports.clear();
    this.attached.clear();
    rmSync(this.statePath, { force: true });
  }

  /**
   * What the agent binds a VM interface with: the kernel path never reads VM ports itself, so this
   * only checks the interface exists and its MTU plus the VXLAN overhead fits the underlay.
   */
  openPort(ifname: string): PortIO {
    const info = this.link(ifname, true);
    if (!info) throw new Error(`interface ${ifname} does not exist`);
    if (this.underlay && info.mtu + VXLAN_OVERHEAD > this.underlay.mtu) {
      throw new Error(
        `port ${ifname}: MTU ${info.mtu} + ${VXLAN_OVERHEAD} B of VXLAN exceeds the underlay ${this.underlay.name}'s MTU ${this.underlay.mtu}; set the VM MTU to at most ${this.underlay.mtu - VXLAN_OVERHEAD}`,
      );
    }
    return { name: ifname, start() {}, send: () => 0, close() {} };
  }

  addPort(portNo: number, portId: string, io: PortIO): void {
    if (!Number.isInteger(portNo) || portNo <= 0 || portNo > 0xffffffff) {
      throw new Error(`datapath: port number ${portNo} must be an integer in 1..2^32-1`);
    }
    if (this.ports.has(portNo)) throw new Error(`datapath: port number ${portNo} is already bound`);
    const info = this.link(io.name, true);
    if (!info || !this.maps)
      throw new Error(`datapath: cannot bind ${io.name}: ${info ? "not started" : "no such interface"}`);
    const port: BoundPort = {
      portNo,
      portId,
      name: io.name,
      ifindex: info.ifindex,
      peer: info.vethPeerElsewhere,
      ...counters(),
    };
    const pi = Buffer.alloc(16);
    pi.writeUInt32LE(portNo, 0);
    this.maps.ports.update(u32le(info.ifindex), pi);
    this.ports.set(portNo, port);
    this.attach(io.name, "port_ingress");
    for (const [k, n] of this.keyToPort)
      if (n === portNo) this.maps.tunnelPorts.update(u32le(k), u32le(tunnelPortTarget(port)));
  }

  removePort(portNo: number): void {
    const p = this.ports.get(portNo);
    if (!p) return;
    this.ports.delete(portNo);
    this.pump.dropPort(portNo);
    // ifindexes are reused: nothing may keep pointing at this one.
    for (const e of this.entries.valuesArray()) {
      if (e.inPortNo === portNo || e.outPortNo === portNo) this.table.remove(e.flow, "deleted");
    }
    this.table.invalidate([agentTag.port(p.portId)]);
    for (const [k, n] of this.keyToPort) if (n === portNo) this.maps?.tunnelPorts.delete(u32le(k));
    this.maps?.ports.delete(u32le(p.ifindex));
    this.detach(p.name);
    this.linkCache.delete(p.name);
  }

  setTunnelKeyPort(key: number, portNo: number | undefined): void {
    if (!isLocalTunnelKey(key))
      throw new Error(`datapath: tunnel key 0x${key.toString(16)} is not site-local`);
    if (portNo === undefined) {
      this.keyToPort.delete(key);
      this.maps?.tunnelPorts.delete(u32le(key));
      return;
    }
    this.keyToPort.set(key, portNo);
    const port = this.ports.get(portNo);
    if (port) this.maps?.tunnelPorts.update(u32le(key), u32le(tunnelPortTarget(port)));
  }

  onUpcall(handler: UpcallHandler): void {
    this.pump.setHandler(handler);
  }

  onFlowState(handler: (payload: Buffer, from: TunnelEndpoint) => void): void {
    this.flowStateHandler = handler;
  }

  sendFlowState(payload: Buffer, to: readonly TunnelEndpoint[]): void {
    // The VXLAN device's receive path reads an inner Ethernet header; messages are always longer.
    if (payload.length < 14) {
      this.countDrop("flow_state_too_short");
      return;
    }
    for (const t of to) this.sendTunnel(payload, TUNNEL_KEY.flowState, t.ip, t.port);
    // A batch being handled flushes at its end; anything else is flushed on the next turn.
    if (!this.inBatch) this.scheduleFlush();
  }

  install(req: InstallRequest): Flow | undefined {
    validateActions(req.actions);
    const flow = this.table.install(req, this.clock());
    if (flow) this.installKernel(flow, req.match);
    return flow;
  }

  invalidate(tags: Iterable<string>): number {
    return this.table.invalidate(tags);
  }

  flush(): void {
    this.table.clear();
  }

  execute(frame: Buffer, actions: FlowActions): void {
    this.output(frame, actions);
    this.flushPending();
  }

  countDrop(reason: string): void {
    this.countDropN(reason, 1);
  }

  private countDropN(reason: string, n: number): void {
    countDropIn(this.drops, reason, n);
  }

  dumpFlows(): FlowDump[] {
    const now = this.clock();
    return this.table.flows().map((f) => {
      const es = this.entriesByFlow.get(f);
      const kernelEntries = es === undefined ? 0 : es instanceof Set ? es.size : 1;
      const reason = this.userspaceReason.get(f);
      const path =
        kernelEntries > 0 ? `kernel: ${kernelEntries} entries` : `userspace: ${reason ?? "no kernel entry"}`;
      return {
        id: f.id,
        match: describeKey(f.match, f.mask),
        actions: `${describeActions(f.actions)} [${path}]`,
        tags: f.tags,
        packets: f.packets,
        bytes: f.bytes,
        ageMs: Math.round(now - f.installedAt),
        idleMs: Math.round(now - f.lastUsed),
        path: kernelEntries > 0 ? "kernel" : "userspace",
        kernelEntries,
        ...(reason ? { userspaceReason: reason } : {}),
      };
    });
  }

  /**
   * How misses reached the agent: `ring` through the upcall ring buffer (of `upcalls`, every port
   * and tunnel upcall the programs made), `ringFull` dropped for want of room in it, and whether
   * the ring is in use at all.
   */
  upcallPaths(): { ringEnabled: boolean; upcalls: number; ring: number; ringFull: number } {
    const k = this.kernelStats();
    return {
      ringEnabled: this.ring !== undefined,
      upcalls: Number(k[ST_UPCALL]! + k[ST_TUNNEL_UPCALL]!),
      ring: Number(k[ST_RING_UPCALL]!),
      ringFull: Number(k[13]!),
    };
  }

  /**
   * The upcall ring reader's busy-poll counters (UpcallRingStats; all zero when the ring is off):
   * how long the event loop spent polling and how many misses it read without a wake-up.
   */
  upcallBusyPoll(): UpcallRingStats {
    return this.ring?.stats() ?? idleUpcallRingStats();
  }

  /** Datapath counters kept by the programs (enum dp_stat order). */
  kernelStats(): bigint[] {
    const out: bigint[] = new Array(DP_STATS).fill(0n);
    if (!this.maps) return out;
    // One BPF_MAP_LOOKUP_BATCH for the whole array (it runs on every sync and metrics scrape).
    const { keys, values, pos } = this.statsBufs;
    const r = this.maps.stats.lookupBatch(null, pos, keys, values);
    const stride = 8 * this.statsCpus;
    for (let i = 0; i < r.count; i++) {
      const idx = keys.readUInt32LE(i * 4);
      if (idx >= DP_STATS) continue;
      let sum = 0n;
      for (let c = 0; c < this.statsCpus; c++) sum += values.readBigUInt64LE(i * stride + c * 8);
      out[idx] = sum;
    }
    return out;
  }

  /** Entries in the kernel flow map, counted by walking it (tests compare it with the index). */
  kernelMapKeyCount(): number {
    return this.maps?.flows.keys(KERNEL_FLOW_MAP_SIZE).length ?? 0;
  }

  /** Kernel map writes since start, and writes refused (map full or the syscall failed). */
  kernelInstallCounts(): { installs: number; failures: number; entries: number } {
    return {
      installs: this.kernelInstalls,
      failures: this.kernelInstallFailures,
      entries: this.entries.size,
    };
  }

  /** Flows currently written to the kernel map, by their userspace flow. */
  kernelEntryCount(): number {
    return this.entries.size;
  }

  stats(): DatapathStats {
    const s = this.table.stats;
    const k = this.kernelStats();
    this.foldKernelDrops(k);
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
      tunnels: new Map([...this.tunnels].map(([key, v]) => [key, { ...v }])),
      drops: new Map(this.drops),
      flows: this.table.size,
      exactEntries: this.entries.size,
      masks: this.table.maskCount,
      upcallQueueDepth: this.pump.depth,
      upcalls: this.pump.upcalls,
      flowHits: Number(k[ST_HIT]! + k[ST_TUNNEL_DELIVER]!) + this.pump.arrivalHits,
      flowMisses: Number(k[ST_UPCALL]! + k[ST_TUNNEL_UPCALL]!),
      installs: s.installs,
    };
  }

  // ---- set-up helpers ----

  private link(ifname: string, fresh = false): LinkInfo | undefined {
    if (!fresh) {
      const c = this.linkCache.get(ifname);
      if (c) return c;
    }
    const info = linkInfo(this.opts.netns, ifname);
    if (info) this.linkCache.set(ifname, info);
    return info;
  }

  private attach(ifname: string, program: "port_ingress" | "vxlan_ingress" | "upcall_ingress"): void {
    this.attached.add(ifname);
    this.saveState();
    this.progs!.attach(ifname, program, this.opts.netns);
  }

  private detach(ifname: string): void {
    this.progs?.detach(ifname, this.opts.netns);
    this.attached.delete(ifname);
    this.saveState();
  }

  private saveState(): void {
    mkdirSync(join(this.statePath, ".."), { recursive: true });
    writeFileSync(
      this.statePath,
      JSON.stringify({ pid: process.pid, netns: this.opts.netns ?? null, attached: [...this.attached] }),
    );
  }

  /** Removes the devices and tc attachments a previous run of this name left (crash, kill -9). */
  private reclaim(): string[] {
    const done: string[] = [];
    const netns = this.opts.netns;
    if (existsSync(this.statePath)) {
      let attached: string[] = [];
      try {
        attached =
          (JSON.parse(readFileSync(this.statePath, "utf8")) as { attached?: string[] }).attached ?? [];
      } catch {
        // a torn write: the devices below are still found by name
      }
      for (const ifname of attached) {
        if (!linkInfo(netns, ifname)) continue;
        try {
          runIn(netns, "tc", ["qdisc", "del", "dev", ifname, "clsact"]);
          done.push(`tc:${ifname}`);
        } catch {
          // no clsact left on it
        }
      }
      rmSync(this.statePath, { force: true });
    }
    for (const dev of [this.devices.vxlan, this.devices.upcallKernel]) {
      if (deleteLink(netns, dev)) done.push(`link:${dev}`);
    }
    if (existsSync(this.pinDir)) done.push(`pins:${this.pinDir}`); // TcPrograms.load removes them
    return done;
  }

  // ---- kernel flow entries ----

  /** One context for every install (not a fresh object and closures per first packet). */
  private flowContext: KernelFlowContext | undefined;

  private kernelContext(): KernelFlowContext {
    if (!this.flowContext) {
      const self = this;
      this.flowContext = {
        ifindexOfPort: (n) => self.ports.get(n)?.ifindex,
        peerOfPort: (n) => self.ports.get(n)?.peer === true,
        get vxlanIfindex() {
          return self.vxlanIfindex;
        },
        tunnelPort: this.opts.tunnelPort,
      };
    }
    return this.flowContext;
  }

  /** Writes the kernel entry for the packet with userspace key `key` under `flow`, when it can. */
  private installKernel(flow: Flow, key: Buffer): void {
    if (!this.maps || flow.removed) return;
    const e = kernelFlowFor(key, flow.mask, flow.actions, this.kernelContext());
    this.lastEncodedAt = performance.now();
    if ("userspace" in e) {
      this.userspaceReason.set(flow, e.userspace);
      return;
    }
    const name = e.key.toString("latin1");
    const old = this.entries.get(name);
    if (old) this.forgetEntry(old);
    if (this.entries.size >= KERNEL_FLOW_MAP_SIZE) {
      this.userspaceReason.set(flow, "kernel flow map full");
      this.kernelInstallFailures++;
      return;
    }
    const id = this.nextEntryId;
    this.nextEntryId = (this.nextEntryId % 0xffffffff) + 1;
    e.value.writeUInt32LE(id, VALUE_AGENT_ID);
    try {
      this.maps.flows.update(e.key, e.value);
    } catch (err) {
      this.kernelInstallFailures++;
      this.userspaceReason.set(flow, `kernel map update failed: ${(err as Error).message}`);
      return;
    }
    // The kernel forwards the flow's packets from here; the agent's own index of the entry is
    // made after the stamp (it is not part of what a first packet waits for).
    this.lastWrittenAt = performance.now();
    const out = flow.actions.outputs[0];
    const entry: KernelEntry = {
      key: e.key,
      name,
      flow,
      inPortNo: key.readUInt32BE(0),
      outPortNo: out?.kind === "port" ? out.portNo : undefined,
      tunnel: out?.kind === "tunnel" ? this.tunnelCounters(out.remoteIp, out.remotePort) : undefined,
      id,
      seen: this.walkEpoch,
      packets: 0,
      bytes: 0,
      lastUsedMs: 0,
    };
    this.entries.set(name, entry);
    this.entriesById.set(id, entry);
    const cur = this.entriesByFlow.get(flow);
    if (cur === undefined) this.entriesByFlow.set(flow, entry);
    else if (cur instanceof Set) cur.add(entry);
    else this.entriesByFlow.set(flow, new Set([cur, entry]));
    this.kernelInstalls++;
  }

  private forgetEntry(e: KernelEntry): void {
    this.entries.delete(e.name);
    this.entriesById.delete(e.id);
    const cur = this.entriesByFlow.get(e.flow);
    if (cur === e) this.entriesByFlow.delete(e.flow);
    else if (cur instanceof Set) {
      cur.delete(e);
      if (cur.size === 0) this.entriesByFlow.delete(e.flow);
    }
  }

  private removeKernelEntries(flow: Flow): void {
    const cur = this.entriesByFlow.get(flow);
    if (cur === undefined) return;
    this.entriesByFlow.delete(flow);
    for (const e of cur instanceof Set ? cur : [cur]) {
      this.entries.delete(e.name);
      this.entriesById.delete(e.id);
      this.maps?.flows.delete(e.key);
    }
  }

  /**
   * Reads the programs' counters back into the flows, refreshes flow state, expires idle flows.
   * The map is read in bulk (BPF_MAP_LOOKUP_BATCH, SYNC_CHUNK entries a syscall and a turn of the
   * event loop): one lookup syscall per entry cost microseconds each and, at a few hundred
   * entries, held up every upcall behind it for milliseconds.
   */
  sync(): void {
    if (this.stopped || !this.maps || this.walk) return;
    const [a] = this.walkBufs.pos;
    this.walk = { epoch: ++this.walkEpoch, from: null, next: a };
    this.syncChunk();
  }

  private syncChunk(): void {
    const started = performance.now();
    try {
      this.syncChunkTimed();
    } finally {
      this.setup.busy(started, performance.now());
    }
  }

  private syncChunkTimed(): void {
    const w = this.walk;
    if (!w) return;
    if (this.stopped || !this.maps) {
      this.walk = undefined;
      return;
    }
    const { keys, values, pos } = this.walkBufs;
    const r = this.maps.flows.lookupBatch(w.from, w.next, keys, values);
    const now = this.clock();
    const monoMs = Number(process.hrtime.bigint()) / 1e6;
    for (let i = 0; i < r.count; i++) this.syncEntry(values, i * FLOW_VALUE_SIZE, w.epoch, now, monoMs);
    if (!r.done) {
      w.from = w.next;
      w.next = w.next === pos[0] ? pos[1] : pos[0];
      setImmediate(() => this.syncChunk());
      return;
    }
    this.walk = undefined;
    // Entries the walk did not meet are gone from the map; ones written during it were not due.
    this.entries.forEach((e) => {
      if (e.seen < w.epoch) this.forgetEntry(e);
    });
    this.table.expire(now);
    this.foldKernelDrops(this.kernelStats());
  }

  private syncEntry(values: Buffer, off: number, epoch: number, now: number, monoMs: number): void {
    const e = this.entriesById.get(values.readUInt32LE(off + VALUE_AGENT_ID));
    if (!e) return;
    e.seen = epoch;
    const packets = values.readUInt32LE(off + 40) + values.readUInt32LE(off + 44) * 2 ** 32;
    const dp = packets - e.packets;
    if (dp <= 0) return;
    const bytes = values.readUInt32LE(off + 48) + values.readUInt32LE(off + 52) * 2 ** 32;
    const db = bytes - e.bytes;
    e.packets = packets;
    e.bytes = bytes;
    const f = e.flow;
    f.packets += dp;
    f.bytes += db;
    const lastUsedMs = (values.readUInt32LE(off + 56) + values.readUInt32LE(off + 60) * 2 ** 32) / 1e6;
    if (lastUsedMs > e.lastUsedMs) {
      e.lastUsedMs = lastUsedMs;
      const used = now - (monoMs - lastUsedMs);
      if (used > f.lastUsed) f.lastUsed = used;
    }
    const inPort = this.ports.get(e.inPortNo);
    if (inPort) {
      inPort.rxPackets += dp;
      inPort.rxBytes += db;
    }
    if (f.actions.outputs.length === 0) this.countDropN(f.actions.dropReason ?? "no_output", dp);
    const outPort = e.outPortNo === undefined ? undefined : this.ports.get(e.outPortNo);
    if (outPort) {
      outPort.txPackets += dp;
      outPort.txBytes += db;
    }
    if (e.tunnel) {
      e.tunnel.txPackets += dp;
      e.tunnel.txBytes += db;
    }
    f.onHit?.(f, now);
  }

  private foldKernelDrops(k: bigint[]): void {
    const malformed = this.ring?.stats().malformed ?? 0;
    if (malformed > this.ringMalformedSeen) {
      this.countDropN("upcall_ring_malformed", malformed - this.ringMalformedSeen);
      this.ringMalformedSeen = malformed;
    }
    for (const [idx, reason] of KERNEL_DROPS) {
      const seen = this.kernelDropsSeen.get(idx) ?? 0n;
      const d = k[idx]! - seen;
      if (d > 0n) {
        this.kernelDropsSeen.set(idx, k[idx]!);
        this.countDropN(reason, Number(d));
      }
    }
  }

  // ---- upcalls ----

  /** A batch from the ring reader, with its stamps (CLOCK_MONOTONIC ms, see UpcallRing.times). */
  private onRingBuffers(bufs: Buffer[], times: Float64Array): void {
    const readAt = performance.now();
    const off = this.monoOffsetMs;
    this.batchLoopIdleAt = times[0]! - off;
    this.batchReaderAt = times[1]! - off;
    this.batchCalledAt = times[2]! - off;
    this.batchPolled = times[3]!;
    try {
      this.onUpcallBuffers(bufs, readAt);
    } finally {
      this.batchLoopIdleAt = this.batchReaderAt = this.batchCalledAt = this.batchPolled = Number.NaN;
    }
  }

  private onUpcallBuffers(bufs: Buffer[], readAt = performance.now()): void {
    if (this.stopped) return;
    this.batchReadAt = readAt;
    this.inBatch = true;
    try {
      // Simulate the batch's misses at its end rather than on the next check phase: every fd
      // libuv found readable in this poll phase (another datapath's upcall device in the same
      // process, sockets) would otherwise run first while these first packets wait. The pump's
      // drain flushes the writes.
      this.pump.offerBatch(() => {
        for (const b of bufs) this.offerUpcall(b);
      });
    } finally {
      this.inBatch = false;
    }
  }

  /** One buffer read from the ring or the upcall veth: counted and offered to the pump. */
  private offerUpcall(b: Buffer): void {
    const u = parseUpcall(b);
    if ("drop" in u) {
      this.countDrop(u.drop);
      return;
    }
    const fin = finishOffloads(u.vnetFrame);
    if ("drop" in fin) {
      this.countDrop(fin.drop);
      return;
    }
    const { portNo, tunId, remote } = u.meta;
    // The miss time the program stamped, on performance.now()'s scale.
    const missAt = Number(u.meta.missNs) / 1e6 - this.monoOffsetMs;
    // Every buffer the ring reader and the upcall device hand over is a copy of its own (and
    // segments are new buffers): the pump may queue the frames without copying them again.
    for (const frame of fin.frames) {
      if (portNo !== 0) {
        const port = this.ports.get(portNo);
        if (!port) {
          this.countDrop("upcall_port_gone");
          continue;
        }
        port.rxPackets++;
        port.rxBytes += frame.length;
        this.pump.offer(frame, portNo, 0, false, undefined, missAt, true);
        continue;
      }
      const from = { ip: remote, port: this.opts.tunnelPort };
      const t = this.tunnelCounters(remote, this.opts.tunnelPort);
      t.rxPackets++;
      t.rxBytes += frame.length;
      if (tunId === TUNNEL_KEY.flowState) {
        if (this.flowStateHandler) this.flowStateHandler(frame, from);
        else this.countDrop("flow_state_unhandled");
        continue;
      }
      const key = tunId & ~TUNNEL_KEY.traceBit;
      if (key === 0) {
        this.countDrop("vxlan_key_zero");
        continue;
      }
      this.pump.offer(frame, 0, key, (tunId & TUNNEL_KEY.traceBit) !== 0, from, missAt, true);
    }
  }

  private flowInstalled(flow: Flow, u: Upcall, t: UpcallTiming): void {
    const before = this.kernelInstalls;
    this.installKernel(flow, u.key);
    if (this.kernelInstalls === before) return;
    const s = this.sample;
    s.arrivedAt = t.arrivedAt;
    s.offeredAt = t.offeredAt;
    s.handledAt = t.handledAt;
    s.decidedAt = t.decidedAt;
    s.installedAt = t.installedAt;
    s.readAt = Math.min(this.batchReadAt, t.offeredAt);
    s.loopIdleAt = this.batchLoopIdleAt;
    s.readerAt = this.batchReaderAt;
    s.calledAt = this.batchCalledAt;
    s.polled = this.batchPolled;
    s.encodedAt = this.lastEncodedAt;
    s.writtenAt = this.lastWrittenAt;
    this.setup.record(s);
  }

  /**
   * Flow-setup latencies (ms) of simulated upcalls whose flow went to the kernel, recorded after
   * `mark` (a previous `total`): `fromMiss` runs from the program's miss (the first packet handed
   * up, stamped in the upcall header) to the map entry being written — what a flow's first packet
   * waits, the agent's event loop included; `fromRead` is the agent's share, from reading the frame.
   * `stages`, `cpuMs` and `gcMs` split them (see FlowSetupProfile).
   */
  flowSetup(mark = 0): FlowSetupReport & {
    upcallPaths: ReturnType<KernelDatapath["upcallPaths"]>;
    upcallRing: UpcallRingStats;
  } {
    return { ...this.setup.since(mark), upcallPaths: this.upcallPaths(), upcallRing: this.upcallBusyPoll() };
  }

  // ---- re-injection ----

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
        if (!port) {
          this.countDrop("output_port_gone");
          continue;
        }
        const target = this.portTarget;
        target.ifindex = port.ifindex;
        this.reinject(frame, target);
        port.txPackets++;
        port.txBytes += frame.length;
      } else {
        this.sendTunnel(frame, o.key, o.remoteIp, o.remotePort);
      }
    }
  }

  private sendTunnel(frame: Buffer, vni: number, ip: string, port: number): void {
    if (port !== this.opts.tunnelPort && !this.tunnelPortWarned) {
      // The device sends to its own UDP port; a peer listening elsewhere is misconfigured.
      this.tunnelPortWarned = true;
      this.opts.log.warn(
        { peer: `${ip}:${port}`, ours: this.opts.tunnelPort },
        "peer tunnel port differs from ours",
      );
    }
    const target = this.tunnelTarget;
    target.vxlanIfindex = this.vxlanIfindex;
    target.vni = vni;
    target.remote = ip;
    this.reinject(frame, target);
    const t = this.tunnelCounters(ip, port);
    t.txPackets++;
    t.txBytes += frame.length;
  }

  private reinject(frame: Buffer, target: ReinjectTarget): void {
    this.pending.push(withReinjectTrailer(frame, target));
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flushPending();
    });
  }

  private flushPending(): void {
    if (this.pending.length === 0) return;
    const frames = this.pending;
    this.pending = [];
    const written = this.device ? this.device.send(frames) : 0;
    if (written < frames.length) this.countDropN("upcall_device_tx_full", frames.length - written);
  }

  /** The counters of tunnel peer `ip`:`port` (no key string built for the device's own port). */
  private tunnelCounters(ip: string, port: number): PortCounters {
    const own = port === this.opts.tunnelPort;
    if (own) {
      const c = this.tunnelByIp.get(ip);
      if (c) return c;
    }
    const t = this.tunnelCountersByKey(`${ip}:${port}`);
    if (own && this.tunnels.get(`${ip}:${port}`) === t) this.tunnelByIp.set(ip, t);
    return t;
  }

  private tunnelCountersByKey(k: string): PortCounters {
    let t = this.tunnels.get(k);
    if (!t) {
      if (this.tunnels.size >= 4096) return counters();
      t = counters();
      this.tunnels.set(k, t);
    }
    return t;
  }
}
