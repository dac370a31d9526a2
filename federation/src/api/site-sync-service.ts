// SiteSyncService: how site controllers follow the federation. Every call authenticates the site
// (its own short-lived JWT; Join uses the onboarding token) and may act only for that site.
// A revoked site's open streams end as soon as the revocation is applied on this node.
import { status } from "@grpc/grpc-js";
import { intentpb, type sitesyncpb } from "@isthmus/schema";
import type { AppliedEvent } from "../intent/index.js";
import { serviceError } from "./grpc-errors.js";
import {
  DEFAULT_SNAPSHOT_PART_BYTES,
  LEADER_HINTS_HEADER,
  SNAPSHOT_AFTER_LAG_HEADER,
  SNAPSHOT_PARTS_HEADER,
  streamIntent,
} from "./intent-stream.js";
import type { ServiceContext } from "./service-context.js";

/** Acks that change nothing are proposed at most this often per site (they feed `last heard`). */
export const ACK_REFRESH_MS = 5_000;
/** Bound on the per-site ack bookkeeping of this node. */
export const MAX_ACK_SITES = 10_000;

/** A positive integer from call metadata, else undefined (absent or malformed: ignored). */
function positiveHeader(v: unknown): number | undefined {
  const n = typeof v === "string" && /^\d{1,12}$/.test(v) ? Number(v) : 0;
  return n > 0 ? n : undefined;
}

export function siteSyncService(ctx: ServiceContext): sitesyncpb.SiteSyncServiceServer {
  const { sm, replicator, auth } = ctx.deps;
  const lastAck = new Map<string, { index: number; at: number }>();

  const needActive = (site: string) => {
    const s = sm.site(site);
    if (!s || s.state !== intentpb.SiteState.SITE_STATE_ACTIVE) {
      throw serviceError(
        status.PERMISSION_DENIED,
        `site "${site}" is not an active member of this federation`,
      );
    }
  };

  return {
    join: ctx.unary("Join", async (call) => {
      const grant = await auth.onboarding(call, call.request.site || undefined);
      const r = await ctx.write({
        joinSite: {
          site: grant.site,
          publicKeyJwk: call.request.publicKeyJwk,
          tokenId: grant.jti,
          tokenExpiresUnixMs: grant.exp * 1000,
        },
      });
      ctx.deps.log.info({ site: grant.site, index: r.index }, "site joined");
      return {
        siteId: r.objects[0]?.site?.meta?.id ?? "",
        index: r.index,
        audience: ctx.deps.siteAudience ?? "",
      };
    }),

    watchIntent: (call) => {
      const run = async () => {
        const p = await auth.site(call, call.request.site || undefined);
        needActive(p.site);
        const cutIf = (ev: AppliedEvent) => {
          const c = ev.change;
          if (!c && !ev.restored) return undefined;
          const s = sm.site(p.site);
          if (!s || s.state === intentpb.SiteState.SITE_STATE_REVOKED) {
            return serviceError(
              status.UNAUTHENTICATED,
              `site "${p.site}" has been revoked; this stream is closed`,
            );
          }
          return undefined;
        };
        ctx.deps.log.info({ site: p.site, fromIndex: call.request.fromIndex }, "site watching intent");
        await streamIntent({
          sm,
          replicator,
          call,
          fromIndex: call.request.fromIndex,
          limits: ctx.limits,
          streams: ctx.streams,
          log: ctx.deps.log,
          cutIf,
          snapshotPartBytes:
            call.metadata.get(SNAPSHOT_PARTS_HEADER)[0] === "1" ? DEFAULT_SNAPSHOT_PART_BYTES : undefined,
          snapshotAfterLag: positiveHeader(call.metadata.get(SNAPSHOT_AFTER_LAG_HEADER)[0]),
          leaderHints: call.metadata.get(LEADER_HINTS_HEADER)[0] === "1",
        });
      };
      run().catch((err) => call.emit("error", err));
    },

    ack: ctx.unary("Ack", async (call) => {
      const p = await auth.site(call, call.request.site || undefined);
      const now = ctx.now();
      const prev = lastAck.get(p.site);
      if (prev && prev.index >= call.request.appliedIndex && now - prev.at < ACK_REFRESH_MS) return {};
      await ctx.write({ ack: { site: p.site, appliedIndex: call.request.appliedIndex } });
      if (!lastAck.has(p.site) && lastAck.size >= MAX_ACK_SITES) lastAck.clear();
      lastAck.set(p.site, { index: call.request.appliedIndex, at: now });
      return {};
    }),

    reportRealized: ctx.unary("ReportRealized", async (call) => {
      const p = await auth.site(call, call.request.site || undefined);
      const r = await ctx.write({ reportRealized: { ...call.request, site: p.site } });
      return { index: r.index };
    }),
  };
}
