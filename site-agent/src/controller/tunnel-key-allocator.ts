// Site-local tunnel keys (0x000001–0x0FFFFF, DESIGN.md §5): one allocator for both kinds of port
// that hold one — VM ports created through SiteService and routers' uplink ports derived from
// intent — so the two can never be handed the same key. The keys in use are read from the
// in-memory index (VM port bindings and its derived-port keys); the `tunnel_keys` table, written in
// the same transaction as each allocation, backs that up with a primary key.
import type { Tx } from "./db/database.js";
import type { IntentIndex, TunnelKeyMove } from "./translate/index.js";

export const LOCAL_TUNNEL_KEY_MIN = 0x000001;
export const LOCAL_TUNNEL_KEY_MAX = 0x0fffff;

export class TunnelKeyAllocator {
  // Keys are handed out round-robin from here so a key just released (an agent may still hold
  // flows naming it) is not reused at once.
  private cursor = LOCAL_TUNNEL_KEY_MIN;

  constructor(
    private readonly index: IntentIndex,
    private readonly range: { min: number; max: number } = {
      min: LOCAL_TUNNEL_KEY_MIN,
      max: LOCAL_TUNNEL_KEY_MAX,
    },
  ) {}

  get size(): number {
    return this.range.max - this.range.min + 1;
  }

  /**
   * An allocation session for one write: each call returns the lowest key at or after the cursor
   * (wrapping once) that no port holds (one index lookup a candidate) and this session has not
   * handed out yet, or 0 when all are taken.
   */
  begin(): () => number {
    const taken = new Set<number>();
    return () => {
      const { min } = this.range;
      const span = this.size;
      for (let i = 0; i < span; i++) {
        const k = min + ((this.cursor - min + i) % span);
        if (taken.has(k) || this.index.tunnelKeyInUse(k)) continue;
        taken.add(k);
        this.cursor = k >= this.range.max ? min : k + 1;
        return k;
      }
      return 0;
    };
  }
}

/** Writes derived-port key moves to `tunnel_keys` (releases first, so a key can move). */
export async function writeTunnelKeyMoves(tx: Tx, moves: readonly TunnelKeyMove[]): Promise<void> {
  for (const m of moves) {
    if (m.before !== 0 && m.before !== m.after) {
      await tx.query("DELETE FROM tunnel_keys WHERE port_id = $1", [m.portId]);
    }
  }
  for (const m of moves) {
    if (m.after !== 0 && m.before !== m.after) {
      await tx.query("INSERT INTO tunnel_keys (tunnel_key, port_id) VALUES ($1, $2)", [m.after, m.portId]);
    }
  }
}
