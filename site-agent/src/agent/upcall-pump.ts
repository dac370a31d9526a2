// The miss path both datapaths share: a frame that no installed flow matches is queued (bounded, fair
// per port), handed to the agent's upcall handler (simulation) a few at a time, and the decision is
// installed in the flow table and executed. What differs per datapath — how a frame goes out, when
// writes are flushed, what else an installed or hit flow needs (a kernel map entry) — are hooks.
import type { Logger } from "@isthmus/schema";
import type { TunnelEndpoint, Upcall, UpcallDecision, UpcallHandler } from "./datapath.js";
import { type FlowActions, validateActions } from "./flow-actions.js";
import { extractKey, KEY_SIZE } from "./flow-key.js";
import type { Flow, FlowTable, InstallRequest } from "./flow-table.js";
import { DEFAULT_UPCALL_LIMITS, UpcallQueue, type UpcallQueueLimits } from "./upcall-queue.js";

export interface UpcallPumpHooks {
  /** Applies actions to a frame and queues it for output; `flush` writes what was queued. */
  output(frame: Buffer, actions: FlowActions): void;
  flush(): void;
  countDrop(reason: string): void;
  /** A packet matched an installed flow in userspace, on arrival or after waiting in the queue. */
  flowHit?(flow: Flow, key: Buffer): void;
  /**
   * A simulated packet's flow was installed in the userspace table (times in `t`, an object the
   * pump reuses: read it during the call, do not keep it).
   */
  flowInstalled?(flow: Flow, u: Upcall, t: UpcallTiming): void;
}

/**
 * When a simulated upcall passed each step, performance.now() milliseconds: `arrivedAt` is when the
 * datapath first saw the packet (as passed to `offer`), `offeredAt` when `offer` queued it,
 * `handledAt` when the handler was called, `decidedAt` when its decision was there, `installedAt`
 * when the flow was in the table. A datapath's flow-setup profile splits its latency by these.
 */
export interface UpcallTiming {
  arrivedAt: number;
  offeredAt: number;
  handledAt: number;
  decidedAt: number;
  installedAt: number;
}

/** The datapath options the pump reads (both datapaths' option types carry them). */
export interface UpcallPumpSettings {
  upcallLimits?: Partial<UpcallQueueLimits>;
  /** Upcalls handled concurrently (the handler may await); default 8. */
  upcallConcurrency?: number;
  log: Logger;
}

interface Queued {
  u: Upcall;
  arrivedAt: number;
  offeredAt: number;
  handledAt: number;
  /** The table's install count when offer() found no flow for it. */
  installsAtOffer: number;
}

const EMPTY_ACTIONS: FlowActions = { outputs: [] };
const NO_TAGS: readonly string[] = [];

/** Queue names of the sources seen, kept so a miss does not build its `port:<n>` string. */
const SOURCE_NAMES_LIMIT = 4096;

export class UpcallPump {
  private readonly queue: UpcallQueue<Queued>;
  private readonly key = Buffer.alloc(KEY_SIZE);
  private readonly portSources = new Map<number, string>();
  /**
   * Reused per install and per flowInstalled call (the table and the hook read them during the
   * call and keep nothing of them): every new flow would otherwise allocate both, with a boxed
   * number per time.
   */
  private readonly installReq: InstallRequest = {
    match: this.key,
    mask: this.key,
    actions: { outputs: [] },
    tags: [],
    idleTimeoutMs: undefined,
    hardTimeoutMs: undefined,
    onHit: undefined,
  };
  private readonly timing: UpcallTiming = {
    arrivedAt: 0,
    offeredAt: 0,
    handledAt: 0,
    decidedAt: 0,
    installedAt: 0,
  };
  /** While set, offer() leaves draining to the caller (it drains right after its batch). */
  private holding = false;
  private readonly concurrency: number;
  private handler: UpcallHandler | undefined;
  private inFlight = 0;
  private scheduled = false;
  private stopped = false;
  /** Upcalls handed to the handler. */
  upcalls = 0;
  /** Packets that matched a userspace flow on arrival (not counting re-checks after queueing). */
  arrivalHits = 0;

  /** `clock` is the flow table's; arrival times for flow-setup latency use performance.now(). */
  constructor(
    private readonly table: FlowTable,
    private readonly clock: () => number,
    private readonly settings: UpcallPumpSettings,
    private readonly hooks: UpcallPumpHooks,
  ) {
    this.queue = new UpcallQueue({ ...DEFAULT_UPCALL_LIMITS, ...settings.upcallLimits });
    this.concurrency = settings.upcallConcurrency ?? 8;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) {
      throw new Error(`upcall pump: upcallConcurrency ${this.concurrency} must be an integer ≥ 1`);
    }
  }

  /** Packets waiting for the handler. */
  get depth(): number {
    return this.queue.size;
  }

  /**
   * Offers a batch and drains once after it, instead of scheduling a drain on the next turn
   * (the datapath simulates a batch's misses at the end of its read).
   */
  offerBatch(offers: () => void): void {
    this.holding = true;
    try {
      offers();
    } finally {
      this.holding = false;
    }
    this.drain();
  }

  setHandler(handler: UpcallHandler): void {
    this.handler = handler;
  }

  /** Forgets a port's queued packets (it went away). */
  dropPort(portNo: number): void {
    this.queue.drop(`port:${portNo}`);
  }

  stop(): void {
    this.stopped = true;
  }

  /**
   * A frame that entered on `portNo` (0 = from a tunnel, with `tunnelKey`): forwarded by its flow
   * when one matches, else queued (as a copy) for the handler. The caller flushes after a batch of offers.
   * `arrivedAt` (performance.now() ms) is when the datapath first saw it, when earlier than now.
   * `owned`: the frame is the caller's to give away (a buffer of its own, not a view into a receive
   * arena), so it is queued as it is rather than copied.
   */
  offer(
    frame: Buffer,
    portNo: number,
    tunnelKey: number,
    traced: boolean,
    from?: TunnelEndpoint,
    arrivedAt?: number,
    owned = false,
  ): void {
    if (!extractKey(frame, portNo, tunnelKey, this.key)) {
      this.hooks.countDrop("malformed_frame");
      return;
    }
    const flow = traced ? undefined : this.table.lookup(this.key, frame.length, this.clock());
    if (flow) {
      this.arrivalHits++;
      this.hooks.flowHit?.(flow, this.key);
      this.hooks.output(frame, flow.actions);
      return;
    }
    const source = portNo !== 0 ? this.portSource(portNo) : `tunnel:${from?.ip ?? "?"}`;
    // A copy unless owned: the caller's frame may be a view into a receive arena that its next
    // batch reuses (AF_PACKET ports, the native tunnel socket), and a queued packet outlives the batch.
    const u: Upcall = {
      portNo,
      tunnelKey,
      traced,
      frame: owned ? frame : Buffer.from(frame),
      key: Buffer.from(this.key),
      from,
    };
    const offeredAt = performance.now();
    const queued: Queued = {
      u,
      arrivedAt: arrivedAt ?? offeredAt,
      offeredAt,
      handledAt: 0,
      installsAtOffer: this.table.stats.installs,
    };
    if (!this.queue.push(source, queued)) {
      this.hooks.countDrop("upcall_queue_full");
      return;
    }
    if (!this.holding) this.schedule();
  }

  private portSource(portNo: number): string {
    let s = this.portSources.get(portNo);
    if (s === undefined) {
      if (this.portSources.size >= SOURCE_NAMES_LIMIT) this.portSources.clear();
      s = `port:${portNo}`;
      this.portSources.set(portNo, s);
    }
    return s;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.drain();
    });
  }

  /** Hands queued packets to the handler until the queue is empty or `concurrency` are in flight. */
  drain(): void {
    const hooks = this.hooks;
    while (!this.stopped && this.inFlight < this.concurrency) {
      const q = this.queue.take();
      if (!q) break;
      const u = q.u;
      // An earlier upcall may have installed this packet's flow while it waited (the table's
      // install count tells whether anything was installed since the offer looked).
      const flow =
        u.traced || this.table.stats.installs === q.installsAtOffer
          ? undefined
          : this.table.lookup(u.key, u.frame.length, this.clock());
      if (flow) {
        hooks.flowHit?.(flow, u.key);
        hooks.output(u.frame, flow.actions);
        continue;
      }
      if (!this.handler) {
        hooks.countDrop("no_upcall_handler");
        continue;
      }
      this.upcalls++;
      this.inFlight++;
      if (hooks.flowInstalled) q.handledAt = performance.now();
      let decision: ReturnType<UpcallHandler>;
      try {
        decision = this.handler(u);
      } catch (err) {
        this.inFlight--;
        this.failed(err);
        continue;
      }
      if (decision instanceof Promise) {
        decision.then(
          (d) => {
            this.inFlight--;
            this.apply(q, d);
            hooks.flush();
            this.schedule();
          },
          (err) => {
            this.inFlight--;
            this.failed(err);
            this.schedule();
          },
        );
      } else {
        this.inFlight--;
        this.apply(q, decision);
      }
    }
    hooks.flush();
  }

  private failed(err: unknown): void {
    this.hooks.countDrop("upcall_error");
    this.settings.log.warn({ err }, "upcall handler failed; packet dropped");
  }

  private apply(q: Queued, d: UpcallDecision): void {
    if (this.stopped) return;
    const u = q.u;
    const hooks = this.hooks;
    if (d.install && !u.traced) {
      const decidedAt = hooks.flowInstalled ? performance.now() : 0;
      validateActions(d.actions);
      const req = this.installReq;
      const ins = d.install;
      req.match = u.key;
      req.mask = ins.mask;
      req.actions = d.actions;
      req.tags = ins.tags;
      req.idleTimeoutMs = ins.idleTimeoutMs;
      req.hardTimeoutMs = ins.hardTimeoutMs;
      req.onHit = ins.onHit;
      let flow: Flow | undefined;
      try {
        flow = this.table.install(req, this.clock());
      } finally {
        // Nothing of this decision stays reachable from the reused request.
        req.match = req.mask = this.key;
        req.actions = EMPTY_ACTIONS;
        req.tags = NO_TAGS;
        req.onHit = undefined;
      }
      if (flow) {
        flow.packets++;
        flow.bytes += u.frame.length;
        if (hooks.flowInstalled) {
          const t = this.timing;
          t.arrivedAt = q.arrivedAt;
          t.offeredAt = q.offeredAt;
          t.handledAt = q.handledAt;
          t.decidedAt = decidedAt;
          t.installedAt = performance.now();
          hooks.flowInstalled(flow, u, t);
        }
      }
    }
    d.beforeOutput?.();
    for (const g of d.generated ?? []) hooks.output(g.frame, g.actions);
    hooks.output(u.frame, d.actions);
  }
}
