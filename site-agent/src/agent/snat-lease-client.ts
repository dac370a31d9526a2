// SNAT port blocks from the site controller (SiteService.LeaseSnatBlock): the simulation's
// NatLeaseSource, answered synchronously from blocks leased ahead of time. A request for an
// address with no spare block returns null (that packet is dropped, not cached) and fetches one in
// the background; a spare is fetched as soon as the last one is handed out. Held blocks are
// renewed before they expire, given back when the allocator finds them idle or the agent stops,
// and withdrawn from the allocator when the controller reports them lost.
import { credentials, Metadata } from "@grpc/grpc-js";
import { type Logger, sitepb } from "@isthmus/schema";
import type { NatBlock, NatLeaseSource } from "../sim/index.js";

export interface SiteNatLeasesOptions {
  controller: string;
  /** The host token (current one: it may be renewed). */
  token: () => string | undefined;
  log: Logger;
  /** Bound on lease requests in flight at once. */
  maxInFlight?: number;
  /** Renew at least this often, and when a third of the shortest remaining lease has passed. */
  maxRenewEveryMs?: number;
}

interface Held {
  block: NatBlock;
  natIp: string;
  expiresUnixMs: number;
}

const blockKey = (deviceId: string, ip: number, start: number) => `${deviceId}|${ip}|${start}`;

function ipText(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
}

export class SiteNatLeases implements NatLeaseSource {
  private readonly client: sitepb.SiteServiceClient;
  /** Leased, not yet handed to the allocator, per `${deviceId}|${ip}`. */
  private readonly spare = new Map<string, Held[]>();
  /** Handed to the allocator. */
  private readonly inUse = new Map<string, Held>();
  private readonly inFlight = new Set<string>();
  private renewTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lostListener: ((block: NatBlock) => void) | undefined;
  readonly stats = { leased: 0, renewed: 0, lost: 0, released: 0, failures: 0, lastError: "" };

  constructor(private readonly o: SiteNatLeasesOptions) {
    this.client = new sitepb.SiteServiceClient(o.controller, credentials.createInsecure());
  }

  lease(deviceId: string, ip: number, portStart: number, portEnd: number): NatBlock | null {
    const k = `${deviceId}|${ip}`;
    const list = this.spare.get(k) ?? [];
    const i = list.findIndex(
      (h) => h.block.start <= portEnd && h.block.start + h.block.size - 1 >= portStart,
    );
    if (i >= 0) {
      const [h] = list.splice(i, 1);
      this.inUse.set(blockKey(deviceId, ip, h!.block.start), h!);
      if (list.length === 0) this.fetch(deviceId, ip, portStart, portEnd);
      return h!.block;
    }
    this.fetch(deviceId, ip, portStart, portEnd);
    return null;
  }

  release(block: NatBlock): void {
    const k = blockKey(block.deviceId, block.ip, block.start);
    const h = this.inUse.get(k);
    if (!h) return;
    this.inUse.delete(k);
    void this.rpc<sitepb.ReleaseSnatBlocksResponse>((md, cb) =>
      this.client.releaseSnatBlocks({ blocks: [this.ref(h)] }, md, { deadline: Date.now() + 5000 }, cb),
    ).then(
      (r) => {
        this.stats.released += r.released;
      },
      (err: Error) => this.failure("release", err),
    );
  }

  onLost(listener: (block: NatBlock) => void): void {
    this.lostListener = listener;
  }

  /** Blocks held (spare and in use), for status and tests. */
  held(): NatBlock[] {
    return [...[...this.spare.values()].flat(), ...this.inUse.values()].map((h) => h.block);
  }

  /** Resolves when no lease request is in flight (tests). */
  async settled(): Promise<void> {
    for (let i = 0; i < 500 && this.inFlight.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
  }

  /** Gives every held block back (best effort) and stops renewing. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.renewTimer) clearTimeout(this.renewTimer);
    await this.settled(); // a lease granted meanwhile is released with the rest
    const all = [...[...this.spare.values()].flat(), ...this.inUse.values()];
    this.spare.clear();
    this.inUse.clear();
    if (all.length > 0) {
      await this.rpc<sitepb.ReleaseSnatBlocksResponse>((md, cb) =>
        this.client.releaseSnatBlocks(
          { blocks: all.map((h) => this.ref(h)) },
          md,
          { deadline: Date.now() + 2000 },
          cb,
        ),
      ).then(
        (r) => {
          this.stats.released += r.released;
        },
        (err: Error) => this.failure("release at stop", err),
      );
    }
    this.client.close();
  }

  private fetch(deviceId: string, ip: number, portStart: number, portEnd: number): void {
    const k = `${deviceId}|${ip}`;
    if (this.stopped || this.inFlight.has(k) || this.inFlight.size >= (this.o.maxInFlight ?? 64)) return;
    this.inFlight.add(k);
    const req: sitepb.LeaseSnatBlockRequest = {
      deviceId,
      natIp: ipText(ip),
      portMin: portStart,
      portMax: portEnd,
    };
    this.rpc<sitepb.LeaseSnatBlockResponse>((md, cb) =>
      this.client.leaseSnatBlock(req, md, { deadline: Date.now() + 5000 }, cb),
    )
      .then(
        (r) => {
          const b = r.block;
          // Kept even when stopping: stop() waits for requests in flight and releases it too.
          if (!b) return;
          const held: Held = {
            block: { deviceId: b.deviceId, ip, start: b.start, size: b.size },
            natIp: b.natIp,
            expiresUnixMs: b.expiresUnixMs,
          };
          const list = this.spare.get(k) ?? [];
          list.push(held);
          this.spare.set(k, list);
          this.stats.leased++;
          if (!this.stopped) this.scheduleRenew();
        },
        (err: Error) => this.failure(`lease on ${req.natIp}`, err),
      )
      .finally(() => this.inFlight.delete(k));
  }

  private scheduleRenew(): void {
    if (this.stopped) return;
    const now = Date.now();
    let soonest = Number.POSITIVE_INFINITY;
    for (const h of this.all()) soonest = Math.min(soonest, h.expiresUnixMs);
    if (soonest === Number.POSITIVE_INFINITY) return;
    const wait = Math.max(200, Math.min((soonest - now) / 3, this.o.maxRenewEveryMs ?? 60_000));
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.renewAll(), wait);
    this.renewTimer.unref();
  }

  private all(): Held[] {
    return [...[...this.spare.values()].flat(), ...this.inUse.values()];
  }

  /** Renews every held block; blocks the controller says are gone are dropped (and counted). */
  async renewAll(): Promise<void> {
    const all = this.all();
    if (all.length === 0 || this.stopped) return;
    try {
      const r = await this.rpc<sitepb.RenewSnatBlocksResponse>((md, cb) =>
        this.client.renewSnatBlocks(
          { blocks: all.map((h) => this.ref(h)) },
          md,
          { deadline: Date.now() + 5000 },
          cb,
        ),
      );
      const byKey = new Map(all.map((h) => [`${h.block.deviceId}|${h.natIp}|${h.block.start}`, h]));
      for (const b of r.renewed) {
        const h = byKey.get(`${b.deviceId}|${b.natIp}|${b.start}`);
        if (h) h.expiresUnixMs = b.expiresUnixMs;
        this.stats.renewed++;
      }
      for (const b of r.lost) {
        const h = byKey.get(`${b.deviceId}|${b.natIp}|${b.start}`);
        if (!h) continue;
        this.stats.lost++;
        const k = `${h.block.deviceId}|${h.block.ip}`;
        const list = this.spare.get(k);
        const i = list?.indexOf(h) ?? -1;
        if (list && i >= 0) list.splice(i, 1);
        else {
          this.inUse.delete(blockKey(h.block.deviceId, h.block.ip, h.block.start));
          // The allocator withdraws it and drops the connections translated to its ports (they
          // could collide with the new owner's); an operator should know why they broke.
          this.o.log.error(
            { deviceId: b.deviceId, natIp: b.natIp, start: b.start },
            "SNAT block in use was lost (lease expired and taken by another host); its connections are reset",
          );
          this.lostListener?.(h.block);
        }
      }
    } catch (err) {
      this.failure("renew", err as Error);
    }
    this.scheduleRenew();
  }

  private ref(h: Held): sitepb.SnatBlock {
    return {
      deviceId: h.block.deviceId,
      natIp: h.natIp,
      start: h.block.start,
      size: h.block.size,
      expiresUnixMs: 0,
    };
  }

  private failure(what: string, err: Error): void {
    this.stats.failures++;
    this.stats.lastError = `${what}: ${err.message}`;
    this.o.log.warn({ err: err.message }, `SNAT block ${what} failed`);
  }

  private rpc<T>(send: (md: Metadata, cb: (err: Error | null, r: T) => void) => void): Promise<T> {
    const md = new Metadata();
    const token = this.o.token();
    if (token) md.set("authorization", `Bearer ${token}`);
    return new Promise((resolve, reject) => send(md, (err, r) => (err ? reject(err) : resolve(r))));
  }
}
