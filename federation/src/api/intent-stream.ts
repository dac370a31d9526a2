// Streams committed intent to one watcher (a site's WatchIntent or an admin's Watch): after a
// linearizable read barrier, either the journal's changes after `fromIndex` or — when those were
// dropped — a snapshot, then every new change as it is applied, in log order, without gaps.
// A watcher that cannot keep up is cut (bounded buffer) and resumes from its last index.
import { type ServerWritableStream, type ServiceError, status } from "@grpc/grpc-js";
import { intentpb, type Logger, type sitesyncpb } from "@isthmus/schema";
import type { AppliedEvent, IntentStateMachine } from "../intent/index.js";
import { serviceError, toServiceError } from "./grpc-errors.js";
import type { Replicator } from "./replicator.js";

export interface StreamLimits {
  /** Messages queued for one slow watcher before it is cut (it reconnects from its last index). */
  maxBuffered: number;
  /** How often an idle watcher is told the index it is now current at. */
  progressIntervalMs: number;
  /** Open watch streams on this node. */
  maxStreams: number;
}

export const DEFAULT_STREAM_LIMITS: StreamLimits = {
  maxBuffered: 10_000,
  progressIntervalMs: 1_000,
  maxStreams: 1_000,
};

/** Open streams of one server, so shutdown can end them instead of waiting on them. */
export class OpenStreams {
  private readonly ends = new Set<(err: ServiceError) => void>();

  constructor(readonly limit: number) {}

  get size(): number {
    return this.ends.size;
  }

  add(end: (err: ServiceError) => void): () => void {
    if (this.ends.size >= this.limit) {
      throw serviceError(
        status.RESOURCE_EXHAUSTED,
        `this coordinator already serves ${this.limit} watch streams (the limit)`,
      );
    }
    this.ends.add(end);
    return () => this.ends.delete(end);
  }

  closeAll(reason: string): void {
    for (const end of [...this.ends]) end(serviceError(status.UNAVAILABLE, reason));
  }
}

/** Call metadata by which a watcher says it assembles snapshots sent in parts. */
export const SNAPSHOT_PARTS_HEADER = "isthmus-snapshot-parts";
/**
 * Call metadata by which a watcher asks for a snapshot instead of the journal's entries when it
 * is at least this many entries behind (replaying costs it a transaction per entry).
 */
export const SNAPSHOT_AFTER_LAG_HEADER = "isthmus-snapshot-after-lag";
/**
 * Call metadata by which a watcher asks to be told where the leader is when this node is not it
 * (WatchIntentResponse.leader_address).
 */
export const LEADER_HINTS_HEADER = "isthmus-leader-hints";
/** How often a stream that asked for leader hints checks whether the leader moved. */
export const LEADER_HINT_CHECK_MS = 250;

/** Encoded objects per snapshot part (the receiver's default limit is 4 MiB a message). */
export const DEFAULT_SNAPSHOT_PART_BYTES = 1024 * 1024;

/**
 * The snapshot as stream events: in parts of at most `partBytes` of encoded objects (at least one
 * object each), every part but the last as snapshot_part, the last as snapshot — or, with
 * `partBytes` undefined, the whole snapshot as one event (watchers that do not assemble parts).
 */
export function snapshotEvents(
  snapshot: intentpb.IntentSnapshot,
  partBytes: number | undefined,
  sizeOf: (o: intentpb.IntentObject) => number = (o) => intentpb.IntentObject.encode(o).finish().length,
): sitesyncpb.WatchIntentResponse[] {
  if (partBytes === undefined) return [{ snapshot }];
  const parts: intentpb.IntentObject[][] = [];
  let part: intentpb.IntentObject[] = [];
  let bytes = 0;
  for (const o of snapshot.objects) {
    const size = sizeOf(o);
    if (part.length > 0 && bytes + size > partBytes) {
      parts.push(part);
      part = [];
      bytes = 0;
    }
    part.push(o);
    bytes += size;
  }
  parts.push(part);
  return parts.map((objects, i) =>
    i === parts.length - 1
      ? { snapshot: { index: snapshot.index, objects } }
      : { snapshotPart: { index: snapshot.index, objects } },
  );
}

export interface IntentStreamOptions<Req> {
  sm: IntentStateMachine;
  replicator: Replicator;
  call: ServerWritableStream<Req, sitesyncpb.WatchIntentResponse>;
  fromIndex: number;
  limits: StreamLimits;
  streams: OpenStreams;
  log: Logger;
  /** Checked on every applied entry; an error ends the stream (e.g. the site was revoked). */
  cutIf?: (ev: AppliedEvent) => ServiceError | undefined;
  /** Send snapshots in parts of this many encoded bytes (the watcher assembles them). */
  snapshotPartBytes?: number;
  /** Start with a snapshot when the watcher is at least this many entries behind. */
  snapshotAfterLag?: number;
  /** Tell the watcher where the leader is when it is another node, at the start and on every move. */
  leaderHints?: boolean;
}

export async function streamIntent<Req>(o: IntentStreamOptions<Req>): Promise<void> {
  const { call, sm } = o;
  let done = false;
  let off = () => {};
  let unregister = () => {};
  let timer: NodeJS.Timeout | undefined;
  let leaderTimer: NodeJS.Timeout | undefined;
  const finish = (err?: ServiceError) => {
    if (done) return;
    done = true;
    off();
    unregister();
    if (timer) clearInterval(timer);
    if (leaderTimer) clearInterval(leaderTimer);
    if (err) call.emit("error", err);
    else call.end();
  };
  call.on("cancelled", () => finish());
  call.on("close", () => finish());
  try {
    unregister = o.streams.add((err) => finish(err));
    await o.replicator.read();
  } catch (err) {
    finish(toServiceError(err));
    return;
  }
  if (done) return;
  if (o.fromIndex > sm.index) {
    finish(
      serviceError(
        status.OUT_OF_RANGE,
        `from_index ${o.fromIndex} is beyond this coordinator's applied index ${sm.index}; the watcher's state is from another federation or was restored wrongly`,
      ),
    );
    return;
  }
  let cursor = sm.index;
  let sentUpTo = o.fromIndex;
  const send = (msg: sitesyncpb.WatchIntentResponse) => {
    if (done) return;
    call.write(msg);
    if (call.writableLength > o.limits.maxBuffered) {
      o.log.warn({ buffered: call.writableLength }, "watcher too slow; cutting its stream");
      finish(
        serviceError(
          status.RESOURCE_EXHAUSTED,
          `watcher fell more than ${o.limits.maxBuffered} messages behind; reconnect from your last applied index`,
        ),
      );
    }
  };
  // The objects are not copied: send() hands each event to grpc-js, which encodes it at once.
  const stateEvents = () =>
    snapshotEvents(sm.intentSnapshotShared(), o.snapshotPartBytes, (x) => sm.encodedSize(x));
  // From here to the subscription runs synchronously, so no applied entry can slip between.
  const farBehind = o.snapshotAfterLag !== undefined && sm.index - o.fromIndex >= o.snapshotAfterLag;
  if (!sm.journal.covers(o.fromIndex) || farBehind) {
    for (const ev of stateEvents()) send(ev);
  } else {
    for (const change of sm.journal.since(o.fromIndex)) send({ change });
  }
  sentUpTo = cursor;
  off = sm.onApplied((ev) => {
    const cut = o.cutIf?.(ev);
    if (cut) {
      finish(cut);
      return;
    }
    cursor = ev.index;
    if (ev.restored) {
      for (const e of stateEvents()) send(e);
      sentUpTo = cursor;
    } else if (ev.change) {
      send({ change: ev.change });
      sentUpTo = cursor;
    }
  });
  if (cursor > o.fromIndex || sm.index === 0) send({ progressIndex: cursor });
  timer = setInterval(() => {
    if (cursor > sentUpTo) {
      send({ progressIndex: cursor });
      sentUpTo = cursor;
    }
  }, o.limits.progressIntervalMs);
  timer.unref();
  if (o.leaderHints) {
    let told = "";
    const hint = () => {
      const leader = o.replicator.otherLeader();
      if (leader !== told) {
        told = leader;
        send({ leaderAddress: leader });
      }
    };
    // At the start only when another node leads (the watcher assumes this one does).
    hint();
    leaderTimer = setInterval(hint, LEADER_HINT_CHECK_MS);
    leaderTimer.unref();
  }
  await new Promise<void>((resolve) => {
    if (done) return resolve();
    call.once("finish", resolve);
    call.once("close", resolve);
    call.once("error", () => resolve());
    call.once("cancelled", resolve);
  });
}
