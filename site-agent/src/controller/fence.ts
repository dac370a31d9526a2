// Fencing: every write transaction first checks that this replica still holds the controller
// lease with the token it was granted. Under SERIALIZABLE the check and the write commit
// together, so a deposed controller (lease taken over) cannot write even one row.
import type { Tx } from "./db/database.js";

export interface Fence {
  check(tx: Tx): Promise<void>;
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
  return {
    async check(tx) {
      const mine = await token();
      if (mine === undefined) throw new FencedOut(`controller ${holder} does not hold the lease`);
      const r = await tx.query("SELECT holder, token FROM controller_lease WHERE id = 1");
      const row = r.rows[0];
      if (!row || row.holder !== holder || Number(row.token) !== mine) {
        throw new FencedOut(
          `controller ${holder} lost the lease (token ${mine}); now held by ${row?.holder ?? "nobody"} with token ${row?.token ?? "-"}`,
        );
      }
    },
  };
}
