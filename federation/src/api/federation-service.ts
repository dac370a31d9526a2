// FederationService: what network admins call. Reads pass a linearizable barrier first; writes
// become log entries (on a follower they fail with UNAVAILABLE naming the leader, see
// grpc-errors.ts). `viewer` tokens may read, `admin` tokens may also write.
import { status } from "@grpc/grpc-js";
import { type federationpb, intentpb } from "@isthmus/schema";
import { IntentError, invalid, KIND_NAMES, type KindKey, kindFromEnum, wrap } from "../intent/index.js";
import { serviceError } from "./grpc-errors.js";
import { streamIntent } from "./intent-stream.js";
import type { ServiceContext } from "./service-context.js";

export const DEFAULT_ONBOARDING_TTL_SEC = 15 * 60;

export function federationService(ctx: ServiceContext): federationpb.FederationServiceServer {
  const { sm, replicator, auth } = ctx.deps;

  const kindOrAll = (k: intentpb.ObjectKind): KindKey | undefined => {
    if (k === intentpb.ObjectKind.OBJECT_KIND_UNSPECIFIED) return undefined;
    const kind = kindFromEnum(k);
    if (!kind) throw invalid("kind", `unknown object kind ${k}`);
    return kind;
  };

  const find = (kind: KindKey, id: string, name: string): intentpb.IntentObject => {
    if (!id && !name) throw invalid("name", "id or name is required");
    const obj =
      kind === "site"
        ? id
          ? sm.get("site", id)
          : sm.site(name)
        : id
          ? sm.get(kind, id)
          : sm.byName(kind, name);
    if (!obj)
      throw new IntentError(
        "not_found",
        `no ${KIND_NAMES[kind]} ${id ? `with id ${id}` : `named "${name}"`}`,
        id ? "id" : "name",
      );
    const full = kind === "site" ? sm.site(obj.meta?.name ?? "") : obj;
    return structuredClone(wrap(kind, full as never));
  };

  const members = () =>
    replicator.status().members.map((m) => ({
      id: m.id,
      address: m.address,
      voter: m.voter,
      leader: m.id === replicator.status().leaderId,
      matchIndex: m.matchIndex,
    }));

  return {
    create: ctx.unary("Create", async (call) => {
      await auth.admin(call, "write", "Create");
      const r = await ctx.write({ create: { object: call.request.object } });
      return { object: r.objects[0], index: r.index };
    }),

    update: ctx.unary("Update", async (call) => {
      await auth.admin(call, "write", "Update");
      const r = await ctx.write({ update: { object: call.request.object } });
      if (r.objects[0]) return { object: r.objects[0], index: r.index };
      // Nothing changed: answer with the object as it stands.
      const obj = call.request.object;
      const kind = obj ? (Object.keys(obj).find((k) => obj[k as KindKey]) as KindKey) : undefined;
      const m = kind ? obj?.[kind]?.meta : undefined;
      return { object: kind ? find(kind, m?.id ?? "", m?.name ?? "") : undefined, index: r.index };
    }),

    delete: ctx.unary("Delete", async (call) => {
      await auth.admin(call, "write", "Delete");
      const q = call.request;
      const r = await ctx.write({
        delete: { kind: q.kind, id: q.id, name: q.name, expectedRevision: q.expectedRevision },
      });
      return { index: r.index, deleted: r.deleted };
    }),

    get: ctx.unary("Get", async (call) => {
      await auth.admin(call, "read", "Get");
      const kind = kindOrAll(call.request.kind);
      if (!kind) throw invalid("kind", "is required");
      await replicator.read();
      return { object: find(kind, call.request.id, call.request.name), index: sm.index };
    }),

    list: ctx.unary("List", async (call) => {
      await auth.admin(call, "read", "List");
      const kind = kindOrAll(call.request.kind);
      await replicator.read();
      return { objects: sm.objectsOf(kind), index: sm.index };
    }),

    // Served from this node's own view without a barrier, so it answers during outages too.
    status: ctx.unary("Status", async (call) => {
      await auth.admin(call, "read", "Status");
      const st = replicator.status();
      const statuses = new Map(sm.siteStatuses().map((s) => [s.site, s]));
      const sites = sm
        .list("site")
        .map((s) => {
          const name = s.meta?.name ?? "";
          const rec = statuses.get(name);
          const applied = rec?.appliedIndex ?? 0;
          return {
            site: name,
            state: s.state,
            appliedIndex: applied,
            lag: Math.max(0, st.commitIndex - applied),
            lastHeardUnixMs: rec?.lastHeardUnixMs ?? 0,
            health: rec?.health,
          };
        })
        .sort((a, b) => (a.site < b.site ? -1 : 1));
      return {
        nodeId: st.nodeId,
        leaderId: st.leaderId,
        leaderAddress: st.leaderAddress,
        term: st.term,
        commitIndex: st.commitIndex,
        appliedIndex: st.appliedIndex,
        role: st.role,
        members: members(),
        sites,
      };
    }),

    watch: (call) => {
      auth.admin(call, "read", "Watch").then(
        () =>
          streamIntent({
            sm,
            replicator,
            call,
            fromIndex: call.request.fromIndex,
            limits: ctx.limits,
            streams: ctx.streams,
            log: ctx.deps.log,
          }),
        (err) => call.emit("error", err),
      );
    },

    addSite: ctx.unary("AddSite", async (call) => {
      await auth.admin(call, "write", "AddSite");
      const issuer = ctx.deps.issuer;
      if (!issuer) {
        throw serviceError(
          status.FAILED_PRECONDITION,
          "this coordinator holds no signing key, so it cannot mint onboarding tokens; run `isthmus site add` where the key directory is",
        );
      }
      const q = call.request;
      const r = await ctx.write({
        addSite: { name: q.name, region: q.region, description: q.description, labels: q.labels },
      });
      const ttl = q.tokenTtlSeconds || ctx.deps.onboardingTtlSec || DEFAULT_ONBOARDING_TTL_SEC;
      const t = await issuer.issue(q.name, ttl);
      return {
        site: r.objects[0]?.site,
        onboardingToken: t.token,
        tokenExpiresUnixMs: t.exp * 1000,
        index: r.index,
      };
    }),

    listSites: ctx.unary("ListSites", async (call) => {
      await auth.admin(call, "read", "ListSites");
      await replicator.read();
      return { sites: sm.objectsOf("site").flatMap((o) => (o.site ? [o.site] : [])), index: sm.index };
    }),

    revokeSite: ctx.unary("RevokeSite", async (call) => {
      await auth.admin(call, "write", "RevokeSite");
      const r = await ctx.write({ revokeSite: { site: call.request.name } });
      return { site: r.objects[0]?.site ?? sm.site(call.request.name), index: r.index };
    }),

    addMember: ctx.unary("AddMember", async (call) => {
      await auth.admin(call, "write", "AddMember");
      const q = call.request;
      if (!q.id) throw invalid("id", "is required");
      if (!/^.+:\d{1,5}$/.test(q.address)) throw invalid("address", `"${q.address}" is not host:port`);
      await replicator.addMember(q.id, q.address, q.learner);
      return { members: members() };
    }),

    removeMember: ctx.unary("RemoveMember", async (call) => {
      await auth.admin(call, "write", "RemoveMember");
      if (!call.request.id) throw invalid("id", "is required");
      await replicator.removeMember(call.request.id);
      return { members: members() };
    }),
  };
}
