import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type ClientReadableStream, type ServiceError, status } from "@grpc/grpc-js";
import { federationpb, intentpb, type sitesyncpb } from "@isthmus/schema";
import { LEADER_TRAILER } from "./grpc-errors.js";
import { LocalReplicator } from "./local-replicator.js";
import { NotLeaderError } from "./replicator.js";
import { call, md, startTestCoordinator, type TestCoordinator } from "./test-support.js";

const meta = (name: string, extra: Partial<intentpb.ObjectMeta> = {}): intentpb.ObjectMeta => ({
  id: "",
  name,
  revision: 0,
  description: "",
  labels: {},
  createdRevision: 0,
  ...extra,
});

async function refused(p: Promise<unknown>, code: status, pattern?: RegExp): Promise<ServiceError> {
  try {
    await p;
  } catch (err) {
    const se = err as ServiceError;
    assert.equal(se.code, code, `expected ${status[code]}, got ${status[se.code]}: ${se.details}`);
    if (pattern) assert.match(se.details, pattern);
    return se;
  }
  assert.fail(`expected ${status[code]}, but the call succeeded`);
}

/** Collects stream messages until `until` says stop (bounded by a timeout). */
function collect(
  stream: ClientReadableStream<sitesyncpb.WatchIntentResponse>,
  until: (msgs: sitesyncpb.WatchIntentResponse[]) => boolean,
  timeoutMs = 5000,
): Promise<sitesyncpb.WatchIntentResponse[]> {
  const msgs: sitesyncpb.WatchIntentResponse[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`stream timeout; got ${JSON.stringify(msgs)}`)),
      timeoutMs,
    );
    stream.on("data", (m: sitesyncpb.WatchIntentResponse) => {
      msgs.push(m);
      if (until(msgs)) {
        clearTimeout(timer);
        resolve(msgs);
      }
    });
    stream.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

describe("FederationService and SiteSyncService over gRPC (single node)", () => {
  let c: TestCoordinator;
  before(async () => {
    c = await startTestCoordinator();
  });
  after(async () => {
    await c.close();
  });

  it("authenticates and authorizes every call", async () => {
    await refused(call(c.fed, c.fed.list, { kind: 0 }, md()), status.UNAUTHENTICATED);
    await refused(call(c.fed, c.fed.list, { kind: 0 }, md("garbage")), status.UNAUTHENTICATED);
    await refused(
      call(
        c.fed,
        c.fed.create,
        { object: { securityGroup: { meta: meta("g"), stateless: false } } },
        md("viewer"),
      ),
      status.PERMISSION_DENIED,
    );
    const list = await call(c.fed, c.fed.list, { kind: 0 }, md("viewer"));
    assert.ok(Array.isArray(list.objects));
  });

  it("creates, reads, updates and deletes with status codes naming the problem", async () => {
    const admin = md("admin");
    const add = await call(
      c.fed,
      c.fed.addSite,
      { name: "ams", region: "eu", description: "", labels: {}, tokenTtlSeconds: 0 },
      admin,
    );
    assert.match(add.onboardingToken, /^onboard:ams:/);
    assert.equal(add.site?.state, intentpb.SiteState.SITE_STATE_PENDING);
    const bad = await refused(
      call(
        c.fed,
        c.fed.create,
        {
          object: {
            network: {
              meta: meta("web"),
              subnets: [{ cidr: "10.0.0.0/33", gatewayIp: "" }],
              sites: [],
              vni: 0,
              mtu: 0,
            },
          },
        },
        admin,
      ),
      status.INVALID_ARGUMENT,
    );
    assert.match(bad.details, /network\.subnets\[0\]\.cidr/);
    const created = await call(
      c.fed,
      c.fed.create,
      {
        object: {
          network: {
            meta: meta("web"),
            subnets: [{ cidr: "10.0.0.0/24", gatewayIp: "10.0.0.1" }],
            sites: ["ams"],
            vni: 0,
            mtu: 0,
          },
        },
      },
      admin,
    );
    const net = created.object?.network;
    assert.ok(net?.meta?.id);
    assert.equal(net.meta.revision, created.index);
    await refused(
      call(c.fed, c.fed.create, { object: { network: { ...net, meta: meta("web") } } }, admin),
      status.ALREADY_EXISTS,
      /network\.meta\.name/,
    );
    const got = await call(
      c.fed,
      c.fed.get,
      { kind: intentpb.ObjectKind.OBJECT_KIND_NETWORK, id: "", name: "web" },
      md("viewer"),
    );
    assert.deepEqual(got.object?.network, net);
    await refused(
      call(c.fed, c.fed.get, { kind: intentpb.ObjectKind.OBJECT_KIND_NETWORK, id: "", name: "nope" }, admin),
      status.NOT_FOUND,
    );
    const upd = await call(c.fed, c.fed.update, { object: { network: { ...net, mtu: 1400 } } }, admin);
    assert.equal(upd.object?.network?.mtu, 1400);
    await refused(
      call(c.fed, c.fed.update, { object: { network: { ...net, mtu: 1300 } } }, admin),
      status.ABORTED,
      /revision/,
    );
    const router = await call(
      c.fed,
      c.fed.create,
      { object: { router: { meta: meta("r"), uplinks: [], routes: [], transitVni: 0 } } },
      admin,
    );
    await call(
      c.fed,
      c.fed.create,
      {
        object: {
          routerInterface: {
            meta: meta("r-web"),
            routerId: router.object?.router?.meta?.id ?? "",
            networkId: net.meta.id,
            ip: "",
            mac: "",
          },
        },
      },
      admin,
    );
    await refused(
      call(
        c.fed,
        c.fed.delete,
        { kind: intentpb.ObjectKind.OBJECT_KIND_NETWORK, id: "", name: "web", expectedRevision: 0 },
        admin,
      ),
      status.FAILED_PRECONDITION,
      /r-web/,
    );
    const del = await call(
      c.fed,
      c.fed.delete,
      { kind: intentpb.ObjectKind.OBJECT_KIND_ROUTER_INTERFACE, id: "", name: "r-web", expectedRevision: 0 },
      admin,
    );
    assert.equal(del.deleted[0]?.name, "r-web");
    const st = await call(c.fed, c.fed.status, {}, md("viewer"));
    assert.equal(st.role, "leader");
    assert.equal(st.commitIndex, c.sm.index);
    assert.deepEqual(
      st.sites.map((s) => s.site),
      ["ams"],
    );
    await refused(
      call(c.fed, c.fed.addMember, { id: "n2", address: "127.0.0.1:1", learner: false }, admin),
      status.UNIMPLEMENTED,
    );
  });

  it("onboards a site once, streams its intent, records acks, cuts it when revoked", async () => {
    const admin = md("admin");
    await call(
      c.fed,
      c.fed.addSite,
      { name: "fra", region: "", description: "", labels: {}, tokenTtlSeconds: 0 },
      admin,
    );
    const jwk = JSON.stringify({ kty: "OKP", crv: "Ed25519", x: "fra-key" });
    const joined = await call(c.sync, c.sync.join, { site: "fra", publicKeyJwk: jwk }, md("onboard:fra:j1"));
    assert.equal(joined.audience, "isthmus-sites");
    assert.ok(joined.siteId);
    await refused(
      call(c.sync, c.sync.join, { site: "fra", publicKeyJwk: jwk }, md("onboard:fra:j1")),
      status.UNAUTHENTICATED,
      /already used/,
    );
    await refused(
      call(c.sync, c.sync.join, { site: "ams", publicKeyJwk: jwk }, md("onboard:fra:j2")),
      status.PERMISSION_DENIED,
    );

    const stream = c.sync.watchIntent({ site: "fra", fromIndex: 0 }, md("site:fra"));
    const firstBatch = collect(stream, (m) =>
      m.some((x) => x.change?.upserts.some((o) => o.securityGroup?.meta?.name === "live")),
    );
    await call(
      c.fed,
      c.fed.create,
      { object: { securityGroup: { meta: meta("live"), stateless: false } } },
      admin,
    );
    const msgs = await firstBatch;
    const indexes = msgs.flatMap((m) => (m.change ? [m.change.index] : []));
    assert.deepEqual(
      indexes,
      [...indexes].sort((a, b) => a - b),
      "changes arrive in log order",
    );
    assert.equal(new Set(indexes).size, indexes.length, "no duplicates");
    const last = indexes[indexes.length - 1] ?? 0;

    await call(c.sync, c.sync.ack, { site: "fra", appliedIndex: last }, md("site:fra"));
    await refused(
      call(c.sync, c.sync.ack, { site: "ams", appliedIndex: 1 }, md("site:fra")),
      status.PERMISSION_DENIED,
    );
    const st = await call(c.fed, c.fed.status, {}, admin);
    const fra = st.sites.find((s) => s.site === "fra");
    assert.equal(fra?.appliedIndex, last);
    assert.equal(fra?.lag, st.commitIndex - last);
    assert.ok((fra?.lastHeardUnixMs ?? 0) > 0);

    const cut = new Promise<ServiceError>((resolve) => stream.on("error", resolve));
    await call(c.fed, c.fed.revokeSite, { name: "fra" }, admin);
    const err = await cut;
    assert.equal(err.code, status.UNAUTHENTICATED);
    assert.match(err.details, /revoked/);
    await refused(
      call(
        c.sync,
        c.sync.reportRealized,
        { site: "fra", ports: [], removedPortIds: [], full: false, gatewayEndpoints: [], health: undefined },
        md("site:fra"),
      ),
      status.PERMISSION_DENIED,
    );
  });
});

describe("watch streams: snapshot when compacted, resume without gaps", () => {
  it("sends a snapshot when from_index is older than the journal, then live changes", async () => {
    const c = await startTestCoordinator({ sm: { journalLimit: 2 } });
    try {
      const admin = md("admin");
      for (const n of ["a", "b", "c", "d"]) {
        await call(
          c.fed,
          c.fed.create,
          { object: { securityGroup: { meta: meta(n), stateless: false } } },
          admin,
        );
      }
      const stream = c.fed.watch({ fromIndex: 1 }, admin);
      const got = collect(stream, (m) =>
        m.some((x) => x.change?.upserts[0]?.securityGroup?.meta?.name === "e"),
      );
      await call(
        c.fed,
        c.fed.create,
        { object: { securityGroup: { meta: meta("e"), stateless: false } } },
        admin,
      );
      const msgs = await got;
      assert.equal(msgs[0]?.snapshot?.index, 4);
      assert.deepEqual(
        msgs[0]?.snapshot?.objects.map((o) => o.securityGroup?.meta?.name),
        ["a", "b", "c", "d"],
      );
      const resumed = c.fed.watch({ fromIndex: 3 }, admin);
      const replay = await collect(resumed, (m) => m.some((x) => x.progressIndex !== undefined));
      assert.deepEqual(
        replay.flatMap((m) => (m.change ? [m.change.index] : [])),
        [4, 5],
      );
      stream.cancel();
      resumed.cancel();
      await refused(
        collect(c.fed.watch({ fromIndex: 99 }, admin), () => false),
        status.OUT_OF_RANGE,
      );
    } finally {
      await c.close();
    }
  });

  it("answers writes on a follower with UNAVAILABLE naming the leader", async () => {
    class Follower extends LocalReplicator {
      override async propose(): Promise<never> {
        throw new NotLeaderError("n1", "10.0.0.1:7400");
      }
    }
    const c = await startTestCoordinator({ replicator: (sm) => new Follower(sm) });
    try {
      const err = await refused(
        call(
          c.fed,
          c.fed.create,
          { object: { securityGroup: { meta: meta("x"), stateless: false } } },
          md("admin"),
        ),
        status.UNAVAILABLE,
        /10\.0\.0\.1:7400/,
      );
      assert.deepEqual(err.metadata.get(LEADER_TRAILER), ["10.0.0.1:7400"]);
    } finally {
      await c.close();
    }
  });
});

export { federationpb };
