// Fencing: every write transaction first checks that this replica still holds the controller
// lease with the token it was granted. Under SERIALIZABLE the check and the write commit
// together, so a deposed controller (lease taken over) cannot write even one row.
import type { Tx } from "./db/database.js";

export interface Fence {
  check(tx: Tx): Promise<void>;
  /**
   * For a write that reads the lease row in its own statement (one round trip less): the holder
   * and token the row must show. Throws FencedOut when this replica holds no lease.
   */
  claim(): Promise<LeaseClaim>;
}

export interface LeaseClaim {
  holder: string;
  token: number;
}

/** Throws FencedOut unless the lease row read inside the transaction is `claim`'s. */
export function verifyLeaseRow(
  claim: LeaseClaim,
  row: { holder?: unknown; token?: unknown } | undefined,
): void {
  if (!row || row.holder !== claim.holder || Number(row.token) !== claim.token) {
    throw new FencedOut(
      `controller ${claim.holder} lost the lease (token ${claim.token}); now held by ${row?.holder ?? "nobody"} with token ${row?.token ?? "-"}`,
    );
  }
}

export class FencedOut extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FencedOut";
  }
}

/**
 * Holder + token check against the controller_lease row. `token` may be async: the controller's
 * renews a lease that lapsed only locally before answering (ControllerLease.tokenNow).
 */
export function leaseFence(
  holder: string,
  token: () => number | undefined | Promise<number | undefined>,
): Fence {
  const claim = async (): Promise<LeaseClaim> => {
    const mine = await token();
    if (mine === undefined) throw new FencedOut(`controller ${holder} does not hold the lease`);
    return { holder, token: mine };
  };
  return {
    claim,
    async check(tx) {
      const c = await claim();
      const r = await tx.query("SELECT holder, token FROM controller_lease WHERE id = 1");
      verifyLeaseRow(c, r.rows[0]);
    },
  };
}
