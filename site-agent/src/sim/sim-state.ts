// The mutable state simulations read and write, owned by one agent: learned MACs, conntrack, NAT
// bindings and port leases, router ARP caches and waiting packets. Every table is bounded by
// SimLimits; `expire(now)` is called by the agent on a timer and returns stale-flow tags.
import { ArpCache } from "./arp-cache.js";
import { ConntrackTable } from "./conntrack.js";
import { MacTable } from "./mac-table.js";
import { type NatLeaseSource, NatPortAllocator } from "./nat-ports.js";
import { NatTable } from "./nat-table.js";

export interface SimLimits {
  macEntries: number;
  macTtlMs: number;
  conntrackEntries: number;
  conntrackIdleMs: number;
  natBindings: number;
  natIdleMs: number;
  natBlocks: number;
  /** A leased SNAT block with no port in use for this long is given back to the site. */
  natBlockIdleMs: number;
  /** Learned next-hop MACs, all routers together. */
  arpEntries: number;
  arpTtlMs: number;
  arpWaitTimeoutMs: number;
  arpRetryMs: number;
  arpQueuePerHop: number;
  arpQueueTotal: number;
  /** Devices one simulation may traverse before it is dropped as a loop. */
  maxDevices: number;
  /** Nested chain jumps before evaluation is dropped as a loop. */
  maxJumpDepth: number;
}

export const DEFAULT_SIM_LIMITS: SimLimits = {
  macEntries: 65536,
  macTtlMs: 300_000,
  conntrackEntries: 262144,
  conntrackIdleMs: 60_000,
  natBindings: 65536,
  natIdleMs: 60_000,
  natBlocks: 1024,
  natBlockIdleMs: 120_000,
  arpEntries: 16384,
  arpTtlMs: 60_000,
  arpWaitTimeoutMs: 3_000,
  arpRetryMs: 1_000,
  arpQueuePerHop: 16,
  arpQueueTotal: 1024,
  maxDevices: 16,
  maxJumpDepth: 16,
};

export class SimState {
  readonly limits: SimLimits;
  readonly macs: MacTable;
  readonly conntrack: ConntrackTable;
  readonly nat: NatTable;
  readonly natPorts: NatPortAllocator;
  readonly arp: ArpCache;

  constructor(natLeases: NatLeaseSource, limits: Partial<SimLimits> = {}) {
    const l = { ...DEFAULT_SIM_LIMITS, ...limits };
    for (const [k, v] of Object.entries(l)) {
      if (!(typeof v === "number" && v > 0))
        throw new RangeError(`SimLimits.${k} must be a positive number, got ${v}`);
    }
    this.limits = l;
    this.macs = new MacTable(l.macEntries, l.macTtlMs);
    this.conntrack = new ConntrackTable(l.conntrackEntries, l.conntrackIdleMs);
    this.nat = new NatTable(l.natBindings, l.natIdleMs, (old, now) => {
      // The replaced binding went idle when it lapsed; its port is free unless the new one reuses it.
      if (old.kind === "snat" && (old.natIp !== now.natIp || old.natPort !== now.natPort))
        this.natPorts.free(old.deviceId, old.natIp, old.natPort, old.expiresAt);
    });
    this.natPorts = new NatPortAllocator(natLeases, l.natBlocks);
    this.arp = new ArpCache(
      l.arpTtlMs,
      l.arpWaitTimeoutMs,
      l.arpRetryMs,
      l.arpQueuePerHop,
      l.arpQueueTotal,
      l.arpEntries,
    );
  }

  /** Expires every table; returns the tags of flows that depended on what expired. */
  expire(now: number): string[] {
    const tags = [
      ...this.macs.expire(now),
      ...this.conntrack.expire(now),
      ...this.nat.expire(now, (b) => {
        if (b.kind === "snat") this.natPorts.free(b.deviceId, b.natIp, b.natPort, now);
      }),
      ...this.dropWithdrawnSnat(),
      ...this.arp.expire(now),
    ];
    this.natPorts.releaseIdle(now, this.limits.natBlockIdleMs);
    return tags;
  }

  /**
   * Connections translated to ports of a block this host lost may collide with the new owner's,
   * so their bindings go (the next packet is simulated again and gets a port this host holds).
   */
  private dropWithdrawnSnat(): string[] {
    const lost = this.natPorts.takeWithdrawn();
    if (lost.length === 0) return [];
    return this.nat.removeWhere(
      (b) =>
        b.kind === "snat" &&
        lost.some(
          (l) =>
            l.deviceId === b.deviceId &&
            l.ip === b.natIp &&
            b.natPort >= l.start &&
            b.natPort < l.start + l.size,
        ),
    );
  }
}
