// The controller's in-memory copy of the topology as stored (kind/id → encoded TopologyObject),
// kept at the change feed's revision, so an agent's snapshot is framed from memory instead of
// reading every row of the site database per Watch (over a second for a 10k-port site). Framed
// events are kept for the current revision, so agents connecting together share one framing.
// Bounded by bytes; over the bound, or while (re)loading, Watch reads the database as before.
// Objects stay in the part they were first framed in, so a change re-frames only the parts it
// touched; the others are copied under the new revision's header (framing every object anew took
// 0.2-0.3 s at 220k objects, on the first Watch after every change). Once changes have been quiet
// for `prepareAfterMs`, the events are built in the background a part per turn of the event loop,
// so a Watch then finds them ready; under a steady flow of changes nothing is framed until asked.
import type { Logger, topologypb } from "@isthmus/schema";
import type { ChangeFeed } from "./change-feed.js";
import type { Database } from "./db/database.js";
import { encodeTopology, topologyRefOf } from "./objects.js";
import { agentBody, type EncodedWatchEvent, SnapshotPartFrame } from "./snapshot-encoding.js";
import { currentRevision, encodedUpserts } from "./topology-store.js";

export interface TopologyMirrorOptions {
  /** Encoded bytes of objects the copy may hold (the framed events take as much again); 0 = off. */
  maxBytes: number;
  /** Encoded bytes of objects per snapshot event. */
  partBytes: number;
  /** Quiet time after a change before the snapshot is framed in the background (1 000; 0 = only on demand). */
  prepareAfterMs?: number;
}

export const DEFAULT_MIRROR_PREPARE_AFTER_MS = 1_000;

export interface FramedSnapshot {
  revision: number;
  events: EncodedWatchEvent[];
  objects: number;
}

/**
 * off: not started or disabled; loading: reading the database (changes are kept for after);
 * ready: at the feed's revision; stale: missed revisions or a failed load, a reload is due;
 * over-bound: larger than maxBytes, off until restart.
 */
type State = "off" | "loading" | "ready" | "stale" | "over-bound" | "stopped";

/** Objects framed together in one snapshot event; `frame` is theirs while none of them changed. */
interface Part {
  objects: Set<Entry>;
  bytes: number;
  frame: SnapshotPartFrame | undefined;
  /** The part's event as last built, and the revision and field it was built for. */
  event: { ev: EncodedWatchEvent; revision: number; last: boolean } | undefined;
}

interface Entry {
  body: Buffer;
  part: Part;
}

export class TopologyMirror {
  /**
   * Kind → id → entry. Not one map by `${kind}/${id}`: at 100k+ objects each such key was two
   * more heap objects to mark in every full collection (a copied prefix and a concatenation).
   */
  private objects = new Map<number, Map<string, Entry>>();
  private count = 0;
  /** In framing order; none empty. */
  private parts: Part[] = [];
  private bytes = 0;
  private revision = -1;
  private state: State = "off";
  /** Changes delivered while loading, applied after the load's revision. */
  private pending: topologypb.TopologyChange[] = [];
  private framed: FramedSnapshot | undefined;
  private unsubscribe: (() => void) | undefined;
  private loading: Promise<void> | undefined;
  private again = false;
  private prepareTimer: NodeJS.Timeout | undefined;
  /** How often the copy was (re)loaded from the database (a metric and for tests). */
  loads = 0;
  /** Snapshot events built (per part and revision) — in the background or on demand (for tests). */
  eventsBuilt = 0;

  constructor(
    private readonly db: Database,
    private readonly feed: Pick<ChangeFeed, "subscribe">,
    private readonly opts: TopologyMirrorOptions,
    private readonly log: Logger,
  ) {}

  /** Call after the feed started (its head is then at most the revision a load reads). */
  async start(): Promise<void> {
    if (this.opts.maxBytes <= 0) return;
    this.unsubscribe = this.feed.subscribe((c) => this.onChange(c));
    this.reload();
    await this.loading;
  }

  /** Whether snapshots come from memory now. */
  get ready(): boolean {
    return this.state === "ready";
  }

  /**
   * The snapshot at the feed's revision, framed; undefined when the copy is not usable now (the
   * caller reads the database). Synchronous: a caller subscribed to the feed before calling gets
   * every change after the returned revision from its subscription.
   */
  snapshot(): FramedSnapshot | undefined {
    if (this.state !== "ready") return undefined;
    if (this.framed?.revision !== this.revision) {
      this.compact();
      const events =
        this.parts.length === 0
          ? [SnapshotPartFrame.of([]).event("snapshot", this.revision)]
          : this.parts.map((_, i) => this.partEvent(i));
      this.framed = { revision: this.revision, objects: this.count, events };
    }
    return this.framed;
  }

  /** Part i's event at the current revision, built unless it already was. */
  private partEvent(i: number): EncodedWatchEvent {
    const p = this.parts[i]!;
    const last = i === this.parts.length - 1;
    if (p.event && p.event.revision === this.revision && p.event.last === last) return p.event.ev;
    p.frame ??= SnapshotPartFrame.of(Array.from(p.objects, (e) => e.body));
    const ev = p.frame.event(last ? "snapshot" : "snapshotPart", this.revision);
    p.event = { ev, revision: this.revision, last };
    this.eventsBuilt++;
    return ev;
  }

  /** (Re)starts the quiet-time wait after which the snapshot is framed in the background. */
  private schedulePrepare(): void {
    const after = this.opts.prepareAfterMs ?? DEFAULT_MIRROR_PREPARE_AFTER_MS;
    if (after <= 0) return;
    if (this.prepareTimer) clearTimeout(this.prepareTimer);
    this.prepareTimer = setTimeout(() => {
      this.prepareTimer = undefined;
      this.prepare();
    }, after);
    this.prepareTimer.unref();
  }

  /** Builds the current revision's events a part per turn; a change meanwhile abandons it (and waits again). */
  private prepare(): void {
    if (this.state !== "ready" || this.framed?.revision === this.revision) return;
    this.compact();
    const revision = this.revision;
    const parts = this.parts;
    let i = 0;
    const step = () => {
      if (this.state !== "ready" || this.revision !== revision || this.parts !== parts) return;
      if (i < parts.length) {
        this.partEvent(i++);
        setImmediate(step);
        return;
      }
      this.snapshot(); // every part's event is built: this only collects them
    };
    step();
  }

  /** How many parts hold objects (for tests). */
  get partCount(): number {
    return this.parts.length;
  }

  /**
   * Deletes leave parts less than full; when there are twice as many as the bytes need, every
   * object is placed again (a rare full re-framing instead of ever more, ever smaller events).
   */
  private compact(): void {
    const needed = Math.ceil(this.bytes / Math.max(1, this.opts.partBytes));
    if (this.parts.length <= 2 * needed + 1) return;
    const entries = [...this.objects.values()].flatMap((byId) => [...byId.values()]);
    this.parts = [];
    for (const e of entries) this.place(e);
  }

  /** Adds an entry to the open (last) part, or opens a new one when it would not fit. */
  private place(e: Entry): void {
    let p = this.parts[this.parts.length - 1];
    if (!p || (p.objects.size > 0 && p.bytes + e.body.length > this.opts.partBytes)) {
      p = { objects: new Set(), bytes: 0, frame: undefined, event: undefined };
      this.parts.push(p);
    }
    e.part = p;
    p.objects.add(e);
    p.bytes += e.body.length;
    p.frame = undefined;
    p.event = undefined;
  }

  stop(): void {
    this.state = "stopped";
    if (this.prepareTimer) clearTimeout(this.prepareTimer);
    this.prepareTimer = undefined;
    this.unsubscribe?.();
    this.clear();
  }

  private onChange(c: topologypb.TopologyChange): void {
    if (this.state === "loading") {
      this.pending.push(c);
      return;
    }
    if (this.state === "stale") {
      this.reload(); // a failed load: try again now that the database answers the feed
      return;
    }
    if (this.state !== "ready" || c.revision <= this.revision) return;
    if (c.revision !== this.revision + 1) {
      // The feed skipped revisions (the log was pruned past it): start over from the database.
      this.log.warn({ at: this.revision, got: c.revision }, "topology mirror missed revisions; reloading");
      this.state = "stale";
      this.clear();
      this.reload();
      return;
    }
    this.apply(c);
  }

  private apply(c: topologypb.TopologyChange): void {
    for (const d of c.deletes) this.remove(d.kind, d.id);
    // This replica's own commits come with their encodings (a catch-up is 100k+ objects).
    const bodies = encodedUpserts(c);
    for (const [i, o] of c.upserts.entries()) {
      const ref = topologyRefOf(o);
      this.remove(ref.kind, ref.id);
      const body = bodies?.[i] ?? encodeTopology(o);
      this.add(ref.kind, ref.id, body);
    }
    this.revision = c.revision;
    this.framed = undefined;
    if (this.bytes > this.opts.maxBytes) this.overBound();
    else this.schedulePrepare();
  }

  /** Files an object's stored bytes, as agents are sent them (agentBody: rules without intent_id). */
  private add(kind: number, id: string, stored: Buffer): void {
    const body = agentBody(stored);
    const e: Entry = { body, part: undefined as unknown as Part };
    let byId = this.objects.get(kind);
    if (byId === undefined) {
      byId = new Map();
      this.objects.set(kind, byId);
    }
    byId.set(id, e);
    this.count++;
    this.bytes += body.length;
    this.place(e);
  }

  private remove(kind: number, id: string): void {
    const byId = this.objects.get(kind);
    const old = byId?.get(id);
    if (byId === undefined || old === undefined) return;
    this.bytes -= old.body.length;
    byId.delete(id);
    this.count--;
    const p = old.part;
    p.objects.delete(old);
    p.bytes -= old.body.length;
    p.frame = undefined;
    p.event = undefined;
    if (p.objects.size === 0) this.parts.splice(this.parts.indexOf(p), 1);
  }

  private overBound(): void {
    this.log.warn(
      { bytes: this.bytes, maxBytes: this.opts.maxBytes },
      "topology is larger than the mirror's bound; snapshots are read from the database",
    );
    this.state = "over-bound";
    this.clear();
  }

  private clear(): void {
    this.objects = new Map();
    this.count = 0;
    this.parts = [];
    this.bytes = 0;
    this.framed = undefined;
    this.pending = [];
  }

  /** Loads from the database, once more if asked again meanwhile. */
  private reload(): void {
    if (this.loading) {
      this.again = true;
      return;
    }
    this.loading = (async () => {
      do {
        this.again = false;
        await this.load();
      } while (this.again && this.state !== "stopped" && this.state !== "ready");
    })().finally(() => {
      this.loading = undefined;
    });
  }

  private async load(): Promise<void> {
    this.state = "loading";
    this.clear();
    this.loads++;
    try {
      const read = await this.db.tx(
        "topology-mirror",
        async (tx) => {
          const revision = await currentRevision(tx);
          const rows = await tx.query("SELECT kind, id, body FROM topology_objects ORDER BY kind, id");
          return { revision, rows: rows.rows };
        },
        { readOnly: true },
      );
      if ((this.state as State) === "stopped") return;
      for (const row of read.rows) {
        this.add(Number(row.kind), row.id as string, row.body as Buffer);
        if (this.bytes > this.opts.maxBytes) {
          this.overBound();
          return;
        }
      }
      this.revision = read.revision;
      const pending = this.pending;
      this.pending = [];
      this.state = "ready";
      // Changes after the load's revision, in order; a gap among them reloads again.
      for (const c of pending) this.onChange(c);
      this.schedulePrepare();
    } catch (err) {
      if ((this.state as State) === "stopped") return;
      this.log.warn(
        { err: (err as Error).message },
        "loading the topology mirror failed; snapshots read the database until a reload succeeds",
      );
      this.state = "stale";
      this.clear();
    }
  }
}
