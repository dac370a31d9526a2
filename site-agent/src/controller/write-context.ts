// What every writer in a controller shares: the database, the in-memory intent index, the
// site-local tunnel-key allocator, the single-writer queue, the lease fence, the translator and
// the hook that wakes watch streams.
import type { Logger, topologypb } from "@isthmus/schema";
import type { Database, Tx } from "./db/database.js";
import type { Fence } from "./fence.js";
import type { ChangeLogOptions } from "./topology-store.js";
import type { IntentIndex } from "./translate/index.js";
import type { Translator } from "./translator.js";
import type { TunnelKeyAllocator } from "./tunnel-key-allocator.js";
import type { WriteQueue } from "./write-queue.js";

export interface WriteContext {
  site: string;
  db: Database;
  index: IntentIndex;
  /** Site-local tunnel keys for VM ports and uplink ports (over `index`). */
  keys: TunnelKeyAllocator;
  queue: WriteQueue;
  fence: Fence;
  translator: Translator;
  changeLog: ChangeLogOptions;
  log: Logger;
  /**
   * Called after a commit that produced topology revision `revision`, with the change as logged
   * when the writer has it (this replica's watchers get it without a read of the change log).
   */
  onCommitted(revision: number, change?: topologypb.TopologyChange): void;
  /** Parts of intent the translation skipped as invalid (logged, counted, shown in status). */
  onProblems?(problems: string[]): void;
  /** Test hook: runs inside each write transaction just before COMMIT. */
  beforeCommit?: (tx: Tx, label: string) => Promise<void>;
}
