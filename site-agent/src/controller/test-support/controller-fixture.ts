// Builds the controller's write path (index, queue, fence, applier, local writer) on a test
// database, with the lease held, for tests of the pieces below the gRPC layer.
import { silentLogger } from "@isthmus/schema";
import { Database, type Tx } from "../db/database.js";
import { migrate } from "../db/migrations.js";
import { leaseFence } from "../fence.js";
import { IntentApplier } from "../intent-applier.js";
import { ControllerLease } from "../lease.js";
import { LocalWriter, type PortInput } from "../local-store.js";
import { IntentIndex } from "../translate/index.js";
import { siteTranslator, type Translator } from "../translator.js";
import { TunnelKeyAllocator } from "../tunnel-key-allocator.js";
import type { WriteContext } from "../write-context.js";
import { WriteQueue } from "../write-queue.js";

export interface Fixture {
  db: Database;
  lease: ControllerLease;
  ctx: WriteContext;
  applier: IntentApplier;
  local: LocalWriter;
  committed: number[];
  close(): Promise<void>;
}

export async function controllerFixture(
  url: string,
  opts: {
    holder?: string;
    translator?: Translator;
    /** Site-local key range (default the whole 0x000001–0x0FFFFF). */
    keyRange?: { min: number; max: number };
    beforeCommit?: (tx: Tx, label: string) => Promise<void>;
    /** Lease TTL (2 s); large builds stall the event loop longer than that. */
    leaseTtlMs?: number;
  } = {},
): Promise<Fixture> {
  const log = silentLogger();
  const db = new Database({ url, log, retry: { maxAttempts: 30 } });
  await migrate(db);
  const holder = opts.holder ?? "ctl-1";
  const lease = new ControllerLease(db, { holder, ttlMs: opts.leaseTtlMs ?? 2_000, renewEveryMs: 500 }, log);
  await lease.attempt();
  lease.start();
  const committed: number[] = [];
  const index = new IntentIndex("a");
  const ctx: WriteContext = {
    site: "a",
    db,
    index,
    keys: new TunnelKeyAllocator(index, opts.keyRange),
    queue: new WriteQueue(),
    fence: leaseFence(holder, () => lease.currentToken()),
    translator: opts.translator ?? siteTranslator,
    changeLog: { retention: 100_000 },
    log,
    onCommitted: (r) => committed.push(r),
    beforeCommit: opts.beforeCommit,
  };
  const applier = new IntentApplier(ctx);
  await applier.load();
  return {
    db,
    lease,
    ctx,
    applier,
    local: new LocalWriter(ctx),
    committed,
    async close() {
      await lease.stop(false);
      await db.close();
    },
  };
}

/** Everything a clean apply determines, for comparing two databases. */
export async function dumpState(db: Database): Promise<unknown> {
  const q = async (sql: string) => (await db.pool.query(sql)).rows;
  const hex = (rows: Record<string, unknown>[]) =>
    rows.map((r) =>
      Object.fromEntries(
        Object.entries(r).map(([k, v]) => [k, Buffer.isBuffer(v) ? v.toString("hex") : String(v)]),
      ),
    );
  return {
    applied: hex(await q("SELECT applied_index FROM intent_state")),
    intent: hex(await q("SELECT kind, id, body, revision FROM intent_objects ORDER BY kind, id")),
    topology: hex(await q("SELECT kind, id, body FROM topology_objects ORDER BY kind, id")),
  };
}

/** VM port `vm<n>` on a network, bound to no host, MAC 02:00:00:00:00:0<n> (n < 10). */
export function vmPortInput(
  n: number,
  networkId: string,
  ips: string[],
  securityGroupIds: string[] = [],
): PortInput {
  return {
    name: `vm${n}`,
    networkId,
    hostId: "",
    interfaceName: "",
    mac: `02:00:00:00:00:0${n}`,
    ips,
    securityGroupIds,
  };
}
