// Test support for the API: a fake CallAuth reading readable bearer strings ("admin", "viewer",
// "site:NAME", "onboard:SITE:JTI"), and a server on 127.0.0.1:0 with both services. The real
// verifier (federation/src/auth) has its own tests; this keeps API tests about the API.
import {
  type CallOptions,
  credentials,
  Metadata,
  Server,
  ServerCredentials,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import { federationpb, type StartedServer, silentLogger, sitesyncpb, startGrpcServer } from "@isthmus/schema";
import { IntentStateMachine, type IntentStateMachineOptions } from "../intent/index.js";
import type { CallAuth, OnboardingIssuer } from "./authenticator.js";
import { federationService } from "./federation-service.js";
import { serviceError } from "./grpc-errors.js";
import { LocalReplicator } from "./local-replicator.js";
import type { Replicator } from "./replicator.js";
import { ServiceContext } from "./service-context.js";
import { siteSyncService } from "./site-sync-service.js";

function bearer(md: Metadata): string {
  const v = md.get("authorization")[0];
  if (typeof v !== "string" || !v.startsWith("Bearer "))
    throw serviceError(status.UNAUTHENTICATED, "no credentials");
  return v.slice(7);
}

export const fakeAuth: CallAuth = {
  async admin(source, access = "read") {
    const t = bearer(source.metadata);
    if (t !== "admin" && t !== "viewer") throw serviceError(status.UNAUTHENTICATED, `bad admin token "${t}"`);
    if (access === "write" && t !== "admin")
      throw serviceError(status.PERMISSION_DENIED, "viewer may not write");
    return { subject: t, role: t, jti: t };
  },
  async site(source, actingFor) {
    const t = bearer(source.metadata);
    if (!t.startsWith("site:")) throw serviceError(status.UNAUTHENTICATED, "not a site token");
    const site = t.slice(5);
    if (actingFor !== undefined && actingFor !== site)
      throw serviceError(status.PERMISSION_DENIED, "other site");
    return { site };
  },
  async onboarding(source, requestedSite) {
    const [kind, site = "", jti = ""] = bearer(source.metadata).split(":");
    if (kind !== "onboard") throw serviceError(status.UNAUTHENTICATED, "not an onboarding token");
    if (requestedSite !== undefined && requestedSite !== site)
      throw serviceError(status.PERMISSION_DENIED, "other site");
    return { site, jti, exp: Math.floor(Date.now() / 1000) + 600 };
  },
};

export const fakeIssuer: OnboardingIssuer = {
  async issue(site) {
    const jti = `jti-${site}-${Date.now()}`;
    return { token: `onboard:${site}:${jti}`, jti, exp: Math.floor(Date.now() / 1000) + 600 };
  },
};

export function md(token?: string): Metadata {
  const m = new Metadata();
  if (token) m.set("authorization", `Bearer ${token}`);
  return m;
}

export interface TestCoordinator {
  sm: IntentStateMachine;
  started: StartedServer;
  fed: federationpb.FederationServiceClient;
  sync: sitesyncpb.SiteSyncServiceClient;
  ctx: ServiceContext;
  close(): Promise<void>;
}

export async function startTestCoordinator(
  o: {
    sm?: IntentStateMachineOptions;
    replicator?: (sm: IntentStateMachine) => Replicator;
    progressIntervalMs?: number;
  } = {},
): Promise<TestCoordinator> {
  const sm = new IntentStateMachine(o.sm);
  const replicator = o.replicator ? o.replicator(sm) : new LocalReplicator(sm);
  const ctx = new ServiceContext({
    sm,
    replicator,
    auth: fakeAuth,
    issuer: fakeIssuer,
    log: silentLogger(),
    siteAudience: "isthmus-sites",
    limits: { progressIntervalMs: o.progressIntervalMs ?? 50 },
  });
  const server = new Server();
  server.addService(federationpb.FederationServiceService, federationService(ctx));
  server.addService(sitesyncpb.SiteSyncServiceService, siteSyncService(ctx));
  const started = await startGrpcServer(
    server,
    "127.0.0.1:0",
    ServerCredentials.createInsecure(),
    silentLogger(),
  );
  const fed = new federationpb.FederationServiceClient(started.address, credentials.createInsecure());
  const sync = new sitesyncpb.SiteSyncServiceClient(started.address, credentials.createInsecure());
  return {
    sm,
    started,
    fed,
    sync,
    ctx,
    async close() {
      fed.close();
      sync.close();
      ctx.streams.closeAll("test over");
      await started.stop(500);
    },
  };
}

type Unary<Req, Res> = (
  req: Req,
  md: Metadata,
  opts: Partial<CallOptions>,
  cb: (err: ServiceError | null, res: Res) => void,
) => unknown;

/** Promisified unary call: `await call(client, client.create, req, md("admin"))`. */
export function call<Req, Res>(
  client: object,
  method: Unary<Req, Res>,
  req: Req,
  meta: Metadata,
): Promise<Res> {
  return new Promise((resolve, reject) =>
    method.call(client, req, meta, { deadline: Date.now() + 10_000 }, (err, res) =>
      err ? reject(err) : resolve(res),
    ),
  );
}
