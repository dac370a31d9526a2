// SNAT port blocks leased to hosts, kept in the site database (schema/sql/0003_snat_block_leases).
// A block of a NAT address belongs to at most one host until its lease expires; a host renews what
// it holds and releases it when done. Each call is one SERIALIZABLE transaction behind the lease
// fence, so two hosts asking at once (even through two controller replicas) never get one block.
import type { Database, Tx } from "./db/database.js";
import type { Fence } from "./fence.js";
import { LocalRequestError } from "./local-store.js";

export interface SnatLeaseOptions {
  /** Ports per block (MidoNet's 64). */
  blockSize: number;
  /** How long a lease lasts unless renewed. */
  ttlMs: number;
  /** Blocks one host may hold at once, across every address. */
  maxBlocksPerHost: number;
}

export const DEFAULT_SNAT_LEASES: SnatLeaseOptions = {
  blockSize: 64,
  ttlMs: 10 * 60_000,
  maxBlocksPerHost: 4096,
};

export interface LeasedBlock {
  deviceId: string;
  natIp: string;
  start: number;
  size: number;
  expiresUnixMs: number;
}

export type BlockRef = Pick<LeasedBlock, "deviceId" | "natIp" | "start">;

export class SnatBlockLeases {
  readonly opts: SnatLeaseOptions;

  constructor(
    private readonly db: Database,
    private readonly fence: Fence,
    opts: Partial<SnatLeaseOptions> = {},
  ) {
    this.opts = { ...DEFAULT_SNAT_LEASES, ...opts };
    if (this.opts.blockSize < 1 || 65536 % this.opts.blockSize !== 0) {
      throw new Error(`SNAT block size ${this.opts.blockSize} must divide 65536`);
    }
  }

  private get ttl(): string {
    return `${this.opts.ttlMs} milliseconds`;
  }

  /** A block on (deviceId, natIp) overlapping [portMin, portMax] that no host holds right now. */
  lease(
    hostId: string,
    deviceId: string,
    natIp: string,
    portMin: number,
    portMax: number,
  ): Promise<LeasedBlock> {
    const size = this.opts.blockSize;
    return this.db.tx("snat-lease", async (tx) => {
      await this.fence.check(tx);
      const held = await tx.query(
        "SELECT count(*)::INT8 AS n FROM snat_block_leases WHERE host_id = $1 AND expires_at >= now()",
        [hostId],
      );
      if (Number(held.rows[0]?.n ?? 0) >= this.opts.maxBlocksPerHost) {
        throw new LocalRequestError(
          "host",
          `host ${hostId} already holds ${this.opts.maxBlocksPerHost} SNAT blocks (the bound)`,
          "exhausted",
        );
      }
      const rows = await tx.query(
        `SELECT block_start FROM snat_block_leases
         WHERE device_id = $1 AND nat_ip = $2 AND expires_at >= now()`,
        [deviceId, natIp],
      );
      const taken = new Set(rows.rows.map((r) => Number(r.block_start)));
      for (let b = Math.floor(portMin / size); b <= Math.floor(portMax / size); b++) {
        const start = b * size;
        if (taken.has(start)) continue;
        // An expired row (another host's lapsed lease) is taken over in place.
        const r = await tx.query(
          `INSERT INTO snat_block_leases (device_id, nat_ip, block_start, block_size, host_id, expires_at)
           VALUES ($1, $2, $3, $4, $5, now() + $6::INTERVAL)
           ON CONFLICT (device_id, nat_ip, block_start) DO UPDATE
             SET block_size = excluded.block_size, host_id = excluded.host_id, expires_at = excluded.expires_at
           RETURNING expires_at`,
          [deviceId, natIp, start, size, hostId, this.ttl],
        );
        return { deviceId, natIp, start, size, expiresUnixMs: expiry(r.rows[0]) };
      }
      throw new LocalRequestError(
        "nat_ip",
        `every SNAT block of ${natIp} on ${deviceId} in ports ${portMin}-${portMax} is leased`,
        "exhausted",
      );
    });
  }

  /** Extends the leases `hostId` still holds; the others are reported lost. */
  renew(hostId: string, blocks: BlockRef[]): Promise<{ renewed: LeasedBlock[]; lost: BlockRef[] }> {
    return this.db.tx("snat-renew", async (tx) => {
      await this.fence.check(tx);
      const renewed: LeasedBlock[] = [];
      const lost: BlockRef[] = [];
      for (const b of blocks) {
        const r = await tx.query(
          `UPDATE snat_block_leases SET expires_at = now() + $5::INTERVAL
           WHERE device_id = $1 AND nat_ip = $2 AND block_start = $3 AND host_id = $4
           RETURNING block_size, expires_at`,
          [b.deviceId, b.natIp, b.start, hostId, this.ttl],
        );
        const row = r.rows[0];
        if (row) renewed.push({ ...b, size: Number(row.block_size), expiresUnixMs: expiry(row) });
        else lost.push(b);
      }
      return { renewed, lost };
    });
  }

  /** Gives blocks back; only the holder's own rows are removed. */
  release(hostId: string, blocks: BlockRef[]): Promise<number> {
    return this.db.tx("snat-release", async (tx) => {
      await this.fence.check(tx);
      let n = 0;
      for (const b of blocks) n += await deleteBlock(tx, hostId, b);
      return n;
    });
  }
}

async function deleteBlock(tx: Tx, hostId: string, b: BlockRef): Promise<number> {
  const r = await tx.query(
    "DELETE FROM snat_block_leases WHERE device_id = $1 AND nat_ip = $2 AND block_start = $3 AND host_id = $4",
    [b.deviceId, b.natIp, b.start, hostId],
  );
  return r.rowCount ?? 0;
}

function expiry(row: { expires_at?: unknown } | undefined): number {
  const v = row?.expires_at;
  return v instanceof Date ? v.getTime() : new Date(String(v)).getTime();
}
