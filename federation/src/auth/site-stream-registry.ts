// Open streams per site, so revoking a site (applied from the log on every node) can end the
// streams it already holds, not just refuse its next call. Bounded per site and in total.
import { Metadata, type ServerWritableStream, type ServiceError, status } from "@grpc/grpc-js";
import { unauthenticated } from "./auth-error.js";

export interface SiteStreamRegistryOptions {
  /** Open streams one site may hold on this node (default 16; an HA pair watching needs ~2). */
  maxPerSite?: number;
  /** Open site streams on this node in all (default 10000). */
  maxTotal?: number;
}

type Cut = (err: ServiceError) => void;

export class SiteStreamRegistry {
  private readonly bySite = new Map<string, Set<Cut>>();
  private total = 0;
  private readonly maxPerSite: number;
  private readonly maxTotal: number;

  constructor(o: SiteStreamRegistryOptions = {}) {
    this.maxPerSite = o.maxPerSite ?? 16;
    this.maxTotal = o.maxTotal ?? 10_000;
    if (!(this.maxPerSite >= 1 && this.maxTotal >= 1)) throw new Error("stream limits must be at least 1");
  }

  /**
   * Records a stream of `site`; `cut` ends it with the given error. Returns the function that
   * forgets it (call it when the stream ends). Throws RESOURCE_EXHAUSTED over the limits.
   */
  register(site: string, cut: Cut): () => void {
    let set = this.bySite.get(site);
    if ((set?.size ?? 0) >= this.maxPerSite) {
      throw exhausted(`site "${site}" already has ${this.maxPerSite} open streams on this node (the limit)`);
    }
    if (this.total >= this.maxTotal)
      throw exhausted(`this node already serves ${this.maxTotal} site streams (the limit)`);
    if (!set) {
      set = new Set();
      this.bySite.set(site, set);
    }
    set.add(cut);
    this.total++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const s = this.bySite.get(site);
      if (s?.delete(cut)) {
        this.total--;
        if (s.size === 0) this.bySite.delete(site);
      }
    };
  }

  /** Registers a grpc-js server stream; it is forgotten by itself when it closes or is cancelled. */
  registerCall<Req, Res>(site: string, call: ServerWritableStream<Req, Res>): () => void {
    const forget = this.register(site, (err) => {
      // grpc-js ends a server stream with this status when 'error' is emitted on it.
      call.emit("error", err);
    });
    call.once("close", forget);
    call.once("finish", forget);
    call.once("cancelled", forget);
    return forget;
  }

  /** Ends every open stream of `site` with UNAUTHENTICATED; returns how many were cut. */
  cutSite(site: string, reason = `site "${site}" has been revoked`): number {
    const set = this.bySite.get(site);
    if (!set) return 0;
    const cuts = [...set];
    this.bySite.delete(site);
    this.total -= cuts.length;
    for (const cut of cuts) cut(unauthenticated(`${reason}; this stream is closed`));
    return cuts.length;
  }

  openStreams(site?: string): number {
    return site === undefined ? this.total : (this.bySite.get(site)?.size ?? 0);
  }
}

function exhausted(details: string): ServiceError {
  return Object.assign(new Error(details), {
    code: status.RESOURCE_EXHAUSTED,
    details,
    metadata: new Metadata(),
  });
}
