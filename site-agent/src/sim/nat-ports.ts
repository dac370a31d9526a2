// SNAT port allocation without collisions between hosts. Ports of a NAT address are split into
// fixed blocks (64 ports by default, as MidoNet does); a host allocates only from blocks it holds
// a lease on, so two hosts never hand out the same (address, port). Leases come from a
// NatLeaseSource: synchronous, never blocking the packet path — the agent backs it with blocks it
// leased ahead of time from the site (and asks for more in the background).

export interface NatBlock {
  deviceId: string;
  ip: number;
  /** First port of the block (a multiple of the block size). */
  start: number;
  size: number;
}

export interface NatLeaseSource {
  /**
   * A block on (deviceId, ip) overlapping [portStart, portEnd] leased to this host that it does not
   * already hold, or null if none is available right now.
   */
  lease(deviceId: string, ip: number, portStart: number, portEnd: number, now: number): NatBlock | null;
  /** Gives a block back (when it has been idle). */
  release(block: NatBlock): void;
  /**
   * Registers the one listener told when a block this host holds is taken away (its lease expired
   * and the site gave it to another host): no port of it may be handed out again.
   */
  onLost?(listener: (block: NatBlock) => void): void;
}

export const DEFAULT_NAT_BLOCK_SIZE = 64;

/**
 * An in-memory lease registry shared by several hosts (tests, single-process setups). Each host
 * gets its own NatLeaseSource view; a block is leased to at most one host at a time.
 */
export class InMemoryNatBlockRegistry {
  private readonly owners = new Map<string, string>();

  constructor(readonly blockSize = DEFAULT_NAT_BLOCK_SIZE) {}

  forHost(hostId: string): NatLeaseSource {
    return {
      lease: (deviceId, ip, portStart, portEnd) => {
        const first = Math.floor(portStart / this.blockSize);
        const last = Math.floor(portEnd / this.blockSize);
        for (let b = first; b <= last; b++) {
          const k = `${deviceId}|${ip}|${b}`;
          if (this.owners.has(k)) continue;
          this.owners.set(k, hostId);
          return { deviceId, ip, start: b * this.blockSize, size: this.blockSize };
        }
        return null;
      },
      release: (block) => {
        const k = `${block.deviceId}|${block.ip}|${block.start / this.blockSize}`;
        if (this.owners.get(k) === hostId) this.owners.delete(k);
      },
    };
  }

  ownerOf(deviceId: string, ip: number, port: number): string | undefined {
    return this.owners.get(`${deviceId}|${ip}|${Math.floor(port / this.blockSize)}`);
  }
}

interface HeldBlock {
  block: NatBlock;
  used: Set<number>;
  /** When the last port of the block was freed (or it was leased), while no port is used. */
  idleSince: number;
}

/**
 * Allocates SNAT ports from leased blocks; bounded by `maxBlocks` held at once. A block with no
 * port in use for a while is given back (`releaseIdle`); a block the source reports lost is
 * withdrawn at once and queued for `takeWithdrawn`, so the bindings using it can be dropped.
 */
export class NatPortAllocator {
  private readonly held = new Map<string, HeldBlock[]>();
  private blocks = 0;
  private withdrawn: NatBlock[] = [];

  constructor(
    private readonly source: NatLeaseSource,
    readonly maxBlocks = 1024,
  ) {
    source.onLost?.((b) => this.withdraw(b));
  }

  /** A free (port) on (deviceId, ip) within [portStart, portEnd]; -1 when none can be had. */
  allocate(
    deviceId: string,
    ip: number,
    portStart: number,
    portEnd: number,
    hint: number,
    now: number,
  ): number {
    const k = `${deviceId}|${ip}`;
    let list = this.held.get(k);
    if (!list) {
      list = [];
      this.held.set(k, list);
    }
    for (const h of list) {
      const p = pickFree(h, portStart, portEnd, hint);
      if (p >= 0) return p;
    }
    while (this.blocks < this.maxBlocks) {
      const block = this.source.lease(deviceId, ip, portStart, portEnd, now);
      if (!block) return -1;
      const h: HeldBlock = { block, used: new Set<number>(), idleSince: now };
      list.push(h);
      this.blocks++;
      const p = pickFree(h, portStart, portEnd, hint);
      if (p >= 0) return p;
    }
    return -1;
  }

  free(deviceId: string, ip: number, port: number, now: number): void {
    for (const h of this.held.get(`${deviceId}|${ip}`) ?? []) {
      if (port >= h.block.start && port < h.block.start + h.block.size && h.used.delete(port)) {
        if (h.used.size === 0) h.idleSince = now;
      }
    }
  }

  /** Gives back every block with no port in use since `now - idleMs`; returns how many. */
  releaseIdle(now: number, idleMs: number): number {
    let n = 0;
    for (const [k, list] of this.held) {
      const keep = list.filter((h) => h.used.size > 0 || now - h.idleSince < idleMs);
      for (const h of list) if (!keep.includes(h)) this.source.release(h.block);
      n += list.length - keep.length;
      if (keep.length === 0) this.held.delete(k);
      else if (keep.length !== list.length) this.held.set(k, keep);
    }
    this.blocks -= n;
    return n;
  }

  /** Blocks withdrawn since the last call (their ports may now belong to another host). */
  takeWithdrawn(): NatBlock[] {
    const out = this.withdrawn;
    this.withdrawn = [];
    return out;
  }

  private withdraw(block: NatBlock): void {
    const k = `${block.deviceId}|${block.ip}`;
    const list = this.held.get(k);
    const i = list?.findIndex((h) => h.block.start === block.start) ?? -1;
    if (!list || i < 0) return;
    list.splice(i, 1);
    if (list.length === 0) this.held.delete(k);
    this.blocks--;
    // Bounded by maxBlocks: each withdrawn block was held, and expire() drains the list.
    this.withdrawn.push(block);
  }

  /** Marks a port as used (a binding learned from elsewhere that falls in a block we hold). */
  reserve(deviceId: string, ip: number, port: number): void {
    for (const h of this.held.get(`${deviceId}|${ip}`) ?? []) {
      if (port >= h.block.start && port < h.block.start + h.block.size) h.used.add(port);
    }
  }

  heldBlocks(): NatBlock[] {
    return [...this.held.values()].flat().map((h) => h.block);
  }
}

function pickFree(h: HeldBlock, portStart: number, portEnd: number, hint: number): number {
  const lo = Math.max(h.block.start, portStart);
  const hi = Math.min(h.block.start + h.block.size - 1, portEnd);
  const n = hi - lo + 1;
  if (n <= 0) return -1;
  for (let i = 0; i < n; i++) {
    const p = lo + ((hint + i) % n);
    if (!h.used.has(p)) {
      h.used.add(p);
      return p;
    }
  }
  return -1;
}
