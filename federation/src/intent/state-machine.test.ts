import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { federationpb, intentpb, sitesyncpb } from "@isthmus/schema";
import { EntryType } from "../raft/types.js";
import { encodeCommand } from "./commands.js";
import { isUuid } from "./kinds.js";
import { IntentStateMachine } from "./state-machine.js";
import { IntentHarness, id, meta, port, rule } from "./test-harness.js";
import { GLOBAL_VNI_MAX, GLOBAL_VNI_MIN } from "./validate.js";

/** A small federation: two joined sites, a stretched network, a router with uplinks at both. */
function federation() {
  const h = new IntentHarness();
  h.activeSite("ams");
  h.activeSite("fra");
  const web = h.network("web", "10.1.0.0/24", ["ams", "fra"]);
  const r = h.router("edge", [
    { site: "ams", ipCidr: "198.51.100.2/24", gatewayIp: "198.51.100.1", snat: true },
    { site: "fra", ipCidr: "203.0.113.2/24", gatewayIp: "203.0.113.1", snat: true },
  ]);
  return { h, web, r };
}

describe("intent state machine: sites", () => {
  it("adds a pending site, joins it once with a token, refuses the token's replay", () => {
    const h = new IntentHarness();
    const added = h.ok({ addSite: { name: "ams", region: "eu-west", description: "", labels: {} } });
    const site = added.objects[0]?.site;
    assert.equal(site?.state, intentpb.SiteState.SITE_STATE_PENDING);
    assert.ok(isUuid(site?.meta?.id ?? ""));
    assert.equal(site?.meta?.revision, added.index);
    h.fail(
      { addSite: { name: "ams", region: "", description: "", labels: {} } },
      "already_exists",
      "site.meta.name",
    );
    const join = {
      joinSite: {
        site: "ams",
        publicKeyJwk: '{"kty":"OKP","crv":"Ed25519","x":"abc"}',
        tokenId: "t1",
        tokenExpiresUnixMs: h.now + 60_000,
      },
    };
    const joined = h.ok(join);
    assert.equal(joined.objects[0]?.site?.state, intentpb.SiteState.SITE_STATE_ACTIVE);
    assert.ok(h.sm.isTokenRemembered("t1"));
    h.fail(join, "unauthenticated", "token");
    // The same token id for another pending site fails too: it is single-use everywhere.
    h.ok({ addSite: { name: "fra", region: "", description: "", labels: {} } });
    h.fail({ joinSite: { ...join.joinSite, site: "fra" } }, "unauthenticated", "token");
  });

  it("refuses expired tokens, private keys and unknown sites", () => {
    const h = new IntentHarness();
    h.ok({ addSite: { name: "ams", region: "", description: "", labels: {} } });
    const base = {
      site: "ams",
      publicKeyJwk: '{"kty":"OKP","x":"a"}',
      tokenId: "t",
      tokenExpiresUnixMs: h.now - 1,
    };
    h.fail({ joinSite: base }, "unauthenticated", "token");
    h.fail(
      {
        joinSite: {
          ...base,
          tokenExpiresUnixMs: h.now + 1000,
          publicKeyJwk: '{"kty":"OKP","x":"a","d":"secret"}',
        },
      },
      "invalid_argument",
      "public_key_jwk",
    );
    h.fail(
      { joinSite: { ...base, tokenExpiresUnixMs: h.now + 1000, publicKeyJwk: "nope" } },
      "invalid_argument",
      "public_key_jwk",
    );
    h.fail({ joinSite: { ...base, site: "Not A Site" } }, "invalid_argument", "site");
    // A valid token for a site not added beforehand creates it (the token is the admin's consent).
    const created = h.ok({ joinSite: { ...base, site: "nyc", tokenExpiresUnixMs: h.now + 1000 } });
    assert.equal(created.objects[0]?.site?.state, intentpb.SiteState.SITE_STATE_ACTIVE);
    h.fail(
      { addSite: { name: "bad name!", region: "", description: "", labels: {} } },
      "invalid_argument",
      "site.meta.name",
    );
  });

  it("revocation cuts a site off: no reports, no acks, no new networks at it", () => {
    const { h, web } = federation();
    h.ok({ revokeSite: { site: "fra" } });
    assert.equal(h.sm.site("fra")?.state, intentpb.SiteState.SITE_STATE_REVOKED);
    const report = {
      site: "fra",
      ports: [port("11111111-1111-4111-8111-111111111111", id(web), ["10.1.0.5"])],
      removedPortIds: [],
      full: false,
      gatewayEndpoints: [],
      health: undefined,
    };
    h.fail({ reportRealized: report }, "permission_denied", "site");
    h.fail({ ack: { site: "fra", appliedIndex: 1 } }, "permission_denied", "site");
    h.fail(
      { create: { object: { network: { meta: meta("db"), subnets: [], sites: ["fra"], vni: 0, mtu: 0 } } } },
      "failed_precondition",
      "network.sites[0]",
    );
  });

  it("a site in use cannot be deleted; an unused one can", () => {
    const { h } = federation();
    h.fail(
      { delete: { kind: intentpb.ObjectKind.OBJECT_KIND_SITE, id: "", name: "ams", expectedRevision: 0 } },
      "failed_precondition",
      "name",
    );
    h.ok({ addSite: { name: "spare", region: "", description: "", labels: {} } });
    const d = h.ok({
      delete: { kind: intentpb.ObjectKind.OBJECT_KIND_SITE, id: "", name: "spare", expectedRevision: 0 },
    });
    assert.equal(d.deleted[0]?.name, "spare");
    assert.equal(h.sm.site("spare"), undefined);
  });
});

describe("intent state machine: networks and VNIs", () => {
  it("allocates distinct global VNIs in range and a deterministic id", () => {
    const { h, web, r } = federation();
    assert.ok(web.vni >= GLOBAL_VNI_MIN && web.vni <= GLOBAL_VNI_MAX);
    assert.ok(r.transitVni >= GLOBAL_VNI_MIN && r.transitVni <= GLOBAL_VNI_MAX);
    assert.notEqual(web.vni, r.transitVni);
    // A second replica applying the same commands derives the same id and VNI.
    const again = federation();
    assert.equal(id(again.web), id(web));
    assert.equal(again.web.vni, web.vni);
    assert.equal(h.sm.byName("network", "web")?.meta?.createdRevision, web.meta?.revision);
  });

  it("names the field of every malformed network", () => {
    const { h } = federation();
    const net = (n: Partial<intentpb.Network>) => ({
      create: { object: { network: { meta: meta("n"), subnets: [], sites: ["ams"], vni: 0, mtu: 0, ...n } } },
    });
    h.fail(
      net({ subnets: [{ cidr: "10.0.0.0/33", gatewayIp: "" }] }),
      "invalid_argument",
      "network.subnets[0].cidr",
    );
    h.fail(
      net({ subnets: [{ cidr: "10.0.0.5/24", gatewayIp: "" }] }),
      "invalid_argument",
      "network.subnets[0].cidr",
    );
    h.fail(
      net({ subnets: [{ cidr: "10.0.0.0/24", gatewayIp: "10.0.1.1" }] }),
      "invalid_argument",
      "network.subnets[0].gateway_ip",
    );
    h.fail(
      net({ subnets: [{ cidr: "10.0.0.0/24", gatewayIp: "10.0.0.255" }] }),
      "invalid_argument",
      "network.subnets[0].gateway_ip",
    );
    h.fail(
      net({
        subnets: [
          { cidr: "10.0.0.0/16", gatewayIp: "" },
          { cidr: "10.0.5.0/24", gatewayIp: "" },
        ],
      }),
      "invalid_argument",
      "network.subnets[1].cidr",
    );
    h.fail(net({ vni: 0x0fffff }), "invalid_argument", "network.vni");
    h.fail(net({ vni: 0x7fffff }), "invalid_argument", "network.vni");
    h.fail(net({ sites: ["mars"] }), "invalid_argument", "network.sites[0]");
    h.fail(net({ sites: ["ams", "ams"] }), "invalid_argument", "network.sites[1]");
    h.fail(net({ mtu: 100 }), "invalid_argument", "network.mtu");
    const msg = h.fail(
      net({ subnets: [{ cidr: "banana", gatewayIp: "" }] }),
      "invalid_argument",
      "network.subnets[0].cidr",
    );
    assert.match(msg, /banana/);
    // IPv6 works the same way.
    h.ok(net({ subnets: [{ cidr: "2001:db8:1::/64", gatewayIp: "2001:db8:1::1" }] }));
  });

  it("refuses a duplicate VNI and a duplicate name, and accepts an explicit free VNI", () => {
    const { h, web } = federation();
    const n = (name: string, vni: number) => ({
      create: { object: { network: { meta: meta(name), subnets: [], sites: [], vni, mtu: 0 } } },
    });
    h.fail(n("other", web.vni), "already_exists", "network.vni");
    h.fail(n("web", 0), "already_exists", "network.meta.name");
    const r = h.ok(n("fixed", 0x200000));
    assert.equal(r.objects[0]?.network?.vni, 0x200000);
  });

  it("keeps the VNI immutable and enforces optimistic concurrency on update", () => {
    const { h, web } = federation();
    const upd = (n: intentpb.Network) => ({ update: { object: { network: n } } });
    h.fail(upd({ ...web, vni: web.vni + 1 }), "invalid_argument", "network.vni");
    const stale = web.meta?.revision ?? 0;
    const r = h.ok(upd({ ...web, mtu: 1400 }));
    assert.equal(r.objects[0]?.network?.meta?.revision, r.index);
    assert.equal(r.objects[0]?.network?.vni, web.vni);
    const msg = h.fail(
      upd({ ...web, mtu: 1300, meta: { ...meta("web"), id: id(web), revision: stale } }),
      "revision_conflict",
      "network.meta.revision",
    );
    assert.match(msg, new RegExp(`revision ${r.index}`));
    h.fail(
      upd({ ...web, meta: { ...meta("web"), revision: 0 } }),
      "invalid_argument",
      "network.meta.revision",
    );
    // An update that changes nothing is no change: the revision stays.
    const current = h.get("network", "web");
    const same = h.ok(upd(current));
    assert.equal(same.change, undefined);
    assert.equal(h.get("network", "web").meta?.revision, current.meta?.revision);
  });
});

describe("intent state machine: routers and interfaces", () => {
  it("validates uplinks and static routes by field", () => {
    const { h } = federation();
    const rt = (r: Partial<intentpb.Router>) => ({
      create: { object: { router: { meta: meta("r2"), uplinks: [], routes: [], transitVni: 0, ...r } } },
    });
    h.fail(
      rt({ uplinks: [{ site: "mars", ipCidr: "198.51.100.3/24", gatewayIp: "", snat: false }] }),
      "invalid_argument",
      "router.uplinks[0].site",
    );
    h.fail(
      rt({ uplinks: [{ site: "ams", ipCidr: "198.51.100.0/24", gatewayIp: "", snat: false }] }),
      "invalid_argument",
      "router.uplinks[0].ip_cidr",
    );
    h.fail(
      rt({ uplinks: [{ site: "ams", ipCidr: "198.51.100.3/24", gatewayIp: "192.0.2.1", snat: false }] }),
      "invalid_argument",
      "router.uplinks[0].gateway_ip",
    );
    h.fail(
      rt({
        uplinks: [
          { site: "ams", ipCidr: "198.51.100.3/24", gatewayIp: "", snat: false },
          { site: "ams", ipCidr: "198.51.100.4/24", gatewayIp: "", snat: false },
        ],
      }),
      "invalid_argument",
      "router.uplinks[1].site",
    );
    h.fail(
      rt({ routes: [{ destination: "0.0.0.0/0", nextHop: "", site: "", blackhole: false }] }),
      "invalid_argument",
      "router.routes[0].next_hop",
    );
    h.fail(
      rt({ routes: [{ destination: "0.0.0.0/0", nextHop: "10.0.0.1", site: "", blackhole: true }] }),
      "invalid_argument",
      "router.routes[0].next_hop",
    );
    h.fail(
      rt({ routes: [{ destination: "10.9.0.0/16", nextHop: "2001:db8::1", site: "", blackhole: false }] }),
      "invalid_argument",
      "router.routes[0].next_hop",
    );
    h.ok(
      rt({ routes: [{ destination: "10.9.0.0/16", nextHop: "10.1.0.254", site: "ams", blackhole: false }] }),
    );
  });

  it("attaches networks with disjoint subnets, refuses overlap, derives address and MAC", () => {
    const { h, web, r } = federation();
    const ri = h.attach("edge-web", r, web);
    assert.equal(ri.ip, "");
    assert.match(ri.mac, /^02(:[0-9a-f]{2}){5}$/);
    const overlap = h.network("web2", "10.1.0.0/16", ["ams"]);
    h.fail(
      {
        create: {
          object: {
            routerInterface: {
              meta: meta("edge-web2"),
              routerId: id(r),
              networkId: id(overlap),
              ip: "10.1.9.1",
              mac: "",
            },
          },
        },
      },
      "invalid_argument",
      "router_interface.network_id",
    );
    h.fail(
      {
        create: {
          object: {
            routerInterface: {
              meta: meta("dup"),
              routerId: id(r),
              networkId: id(web),
              ip: "10.1.0.2",
              mac: "",
            },
          },
        },
      },
      "already_exists",
      "router_interface.network_id",
    );
    const db = h.network("db", "10.2.0.0/24", ["fra"]);
    h.fail(
      {
        create: {
          object: {
            routerInterface: {
              meta: meta("edge-db"),
              routerId: id(r),
              networkId: id(db),
              ip: "10.3.0.1",
              mac: "",
            },
          },
        },
      },
      "invalid_argument",
      "router_interface.ip",
    );
    h.fail(
      {
        create: {
          object: {
            routerInterface: {
              meta: meta("edge-db"),
              routerId: "00000000-0000-4000-8000-000000000000",
              networkId: id(db),
              ip: "",
              mac: "",
            },
          },
        },
      },
      "not_found",
      "router_interface.router_id",
    );
    h.attach("edge-db", r, db, "10.2.0.254");
    // An update widening db so it overlaps web on the shared router is refused.
    const dbNow = h.get("network", "db");
    h.fail(
      { update: { object: { network: { ...dbNow, subnets: [{ cidr: "10.0.0.0/8", gatewayIp: "" }] } } } },
      "invalid_argument",
      "network.subnets",
    );
  });

  it("keeps referential integrity on delete", () => {
    const { h, web, r } = federation();
    const ri = h.attach("edge-web", r, web);
    const del = (kind: intentpb.ObjectKind, name: string) => ({
      delete: { kind, id: "", name, expectedRevision: 0 },
    });
    const msg = h.fail(del(intentpb.ObjectKind.OBJECT_KIND_NETWORK, "web"), "failed_precondition");
    assert.match(msg, /edge-web/);
    h.fail(del(intentpb.ObjectKind.OBJECT_KIND_ROUTER, "edge"), "failed_precondition");
    h.fail(
      {
        delete: {
          kind: intentpb.ObjectKind.OBJECT_KIND_ROUTER_INTERFACE,
          id: id(ri),
          name: "",
          expectedRevision: 1,
        },
      },
      "revision_conflict",
      "expected_revision",
    );
    h.ok({
      delete: {
        kind: intentpb.ObjectKind.OBJECT_KIND_ROUTER_INTERFACE,
        id: id(ri),
        name: "",
        expectedRevision: ri.meta?.revision ?? 0,
      },
    });
    h.ok(del(intentpb.ObjectKind.OBJECT_KIND_NETWORK, "web"));
    h.ok(del(intentpb.ObjectKind.OBJECT_KIND_ROUTER, "edge"));
    h.fail(del(intentpb.ObjectKind.OBJECT_KIND_ROUTER, "edge"), "not_found", "name");
    // Freed VNIs and names can be reused.
    h.network("web", "10.1.0.0/24", ["ams"]);
  });
});

describe("intent state machine: security groups", () => {
  it("validates rules by field", () => {
    const { h } = federation();
    const g = id(h.group("web"));
    h.fail(
      { create: { object: rule(g, { portRangeMin: 443, portRangeMax: 80 }) } },
      "invalid_argument",
      "security_group_rule.port_range_max",
    );
    h.fail(
      { create: { object: rule(g, { portRangeMin: 0, portRangeMax: 80 }) } },
      "invalid_argument",
      "security_group_rule.port_range_min",
    );
    h.fail(
      { create: { object: rule(g, { remoteCidr: "10.0.0.0/8", remoteGroupId: g }) } },
      "invalid_argument",
      "security_group_rule.remote_group_id",
    );
    h.fail(
      { create: { object: rule(g, { remoteCidr: "2001:db8::/32" }) } },
      "invalid_argument",
      "security_group_rule.remote_cidr",
    );
    h.fail(
      { create: { object: rule(g, { protocol: "gre" }) } },
      "invalid_argument",
      "security_group_rule.protocol",
    );
    h.fail(
      { create: { object: rule(g, { direction: 0 }) } },
      "invalid_argument",
      "security_group_rule.direction",
    );
    h.fail(
      { create: { object: rule(g, { protocol: "47", portRangeMin: 1, portRangeMax: 2 }) } },
      "invalid_argument",
      "security_group_rule.port_range_min",
    );
    h.fail(
      { create: { object: rule(g, { remoteGroupId: "00000000-0000-4000-8000-000000000000" }) } },
      "not_found",
      "security_group_rule.remote_group_id",
    );
    h.fail(
      { create: { object: rule("00000000-0000-4000-8000-000000000000") } },
      "not_found",
      "security_group_rule.security_group_id",
    );
    h.ok({ create: { object: rule(g, { protocol: "icmp", portRangeMin: 8, portRangeMax: 0 }) } });
  });

  it("refuses deleting a group another group's rule references; cascades the group's own rules", () => {
    const { h } = federation();
    const web = id(h.group("web"));
    const db = id(h.group("db"));
    h.create(rule(db, { portRangeMin: 5432, portRangeMax: 5432, remoteGroupId: web }, "db-from-web"));
    h.create(rule(web, { remoteGroupId: web }, "web-self"));
    h.fail(
      {
        delete: {
          kind: intentpb.ObjectKind.OBJECT_KIND_SECURITY_GROUP,
          id: web,
          name: "",
          expectedRevision: 0,
        },
      },
      "failed_precondition",
    );
    const d = h.ok({
      delete: { kind: intentpb.ObjectKind.OBJECT_KIND_SECURITY_GROUP, id: db, name: "", expectedRevision: 0 },
    });
    assert.deepEqual(d.deleted.map((x) => x.name).sort(), ["db", "db-from-web"]);
    h.ok({
      delete: {
        kind: intentpb.ObjectKind.OBJECT_KIND_SECURITY_GROUP,
        id: web,
        name: "",
        expectedRevision: 0,
      },
    });
    assert.equal(h.sm.list("securityGroupRule").length, 0);
  });
});

describe("intent state machine: floating IPs and realized state", () => {
  const P1 = "11111111-1111-4111-8111-111111111111";
  const P2 = "22222222-2222-4222-8222-222222222222";
  const report = (
    site: string,
    ports: intentpb.PortRecord[],
    extra: Partial<intentpb.PortRecord> & { full?: boolean; removed?: string[] } = {},
  ) => ({
    reportRealized: {
      site,
      ports,
      removedPortIds: extra.removed ?? [],
      full: extra.full ?? false,
      gatewayEndpoints: [],
      health: undefined,
    },
  });

  it("pins a floating IP to a site where the router has an uplink", () => {
    const { h, web } = federation();
    h.activeSite("nyc");
    const r = h.router("lonely", [{ site: "ams", ipCidr: "192.0.2.2/24", gatewayIp: "", snat: false }]);
    const fip = (f: Partial<intentpb.FloatingIP>) => ({
      create: {
        object: {
          floatingIp: {
            meta: meta("fip"),
            routerId: id(r),
            site: "ams",
            externalIp: "192.0.2.10",
            portId: "",
            fixedIp: "",
            ...f,
          },
        },
      },
    });
    h.fail(fip({ site: "nyc" }), "failed_precondition", "floating_ip.site");
    h.fail(fip({ externalIp: "2001:db8::10" }), "invalid_argument", "floating_ip.external_ip");
    h.fail(fip({ portId: P1 }), "not_found", "floating_ip.port_id");
    h.ok(report("ams", [port(P1, id(web), ["10.1.0.5"])]));
    const created = h.ok(fip({ portId: P1 }));
    assert.equal(created.objects[0]?.floatingIp?.fixedIp, "10.1.0.5");
    h.fail(fip({ meta: meta("fip2") }), "already_exists", "floating_ip.external_ip");
    // Removing the uplink the floating IP rides on is refused.
    const cur = h.get("router", "lonely");
    h.fail(
      { update: { object: { router: { ...cur, uplinks: [] } } } },
      "failed_precondition",
      "router.uplinks",
    );
  });

  it("records ports only for the reporting site, dedups unchanged reports, removes on full reports", () => {
    const { h, web } = federation();
    const first = h.ok(report("ams", [port(P1, id(web), ["10.1.0.5"]), port(P2, id(web), ["10.1.0.6"])]));
    assert.equal(first.change?.upserts.length, 2);
    assert.equal(h.sm.get("portRecord", P1)?.site, "ams");
    h.fail(report("fra", [port(P1, id(web), ["10.1.0.5"])]), "permission_denied", "ports[0].meta.id");
    h.fail(
      report("fra", [port(P2, id(web), ["10.1.0.6"], { site: "ams" })]),
      "permission_denied",
      "ports[0].site",
    );
    h.fail(report("ams", [port(P1, id(web), ["10.9.0.5"])]), "invalid_argument", "ports[0].ips[0]");
    h.fail(report("ams", [port("not-a-uuid", id(web), [])]), "invalid_argument", "ports[0].meta.id");
    const same = h.ok(report("ams", [port(P1, id(web), ["10.1.0.5"])]));
    assert.equal(same.change, undefined, "an unchanged report is no change");
    const full = h.ok(report("ams", [port(P1, id(web), ["10.1.0.5"])], { full: true }));
    assert.deepEqual(
      full.change?.deletes.map((d) => d.id),
      [P2],
    );
    const gone = h.ok(report("ams", [], { removed: [P1] }));
    assert.deepEqual(
      gone.deleted.map((d) => d.id),
      [P1],
    );
    // Admins cannot write realized objects.
    h.fail({ create: { object: { portRecord: port(P2, id(web), []) } } }, "failed_precondition", "port");
  });

  it("publishes gateways and tracks acks and lag without producing changes", () => {
    const { h } = federation();
    const r = h.ok({
      reportRealized: {
        site: "ams",
        ports: [],
        removedPortIds: [],
        full: false,
        gatewayEndpoints: [{ host: "gw1", ip: "198.51.100.7", port: 0 }],
        health: sitesyncpb.SiteHealth.fromPartial({
          databaseOk: true,
          hostsTotal: 3,
          hostsAlive: 3,
          controller: "c1",
        }),
      },
    });
    assert.equal(r.objects[0]?.gateway?.endpoints[0]?.port, 4789);
    assert.equal(r.objects[0]?.gateway?.meta?.name, "ams");
    h.fail(
      {
        reportRealized: {
          site: "ams",
          ports: [],
          removedPortIds: [],
          full: false,
          gatewayEndpoints: [{ host: "gw1", ip: "nope", port: 0 }],
          health: undefined,
        },
      },
      "invalid_argument",
      "gateway_endpoints[0].ip",
    );
    const ack = h.ok({ ack: { site: "ams", appliedIndex: r.index } });
    assert.equal(ack.change, undefined);
    assert.equal(h.sm.site("ams")?.appliedIndex, r.index);
    assert.equal(h.sm.site("ams")?.lastHeardUnixMs, h.now);
    h.fail({ ack: { site: "ams", appliedIndex: h.index + 100 } }, "invalid_argument", "applied_index");
    // Acks never go backwards.
    h.ok({ ack: { site: "ams", appliedIndex: 1 } });
    assert.equal(h.sm.site("ams")?.appliedIndex, r.index);
  });
});

describe("intent state machine: log entries, journal and snapshots", () => {
  it("applies raft entries: no-ops and conf changes advance the index, garbage is refused", () => {
    const sm = new IntentStateMachine();
    assert.equal(sm.apply({ term: 1, index: 1, type: EntryType.Normal, data: new Uint8Array() }).ok, true);
    assert.equal(
      sm.apply({ term: 1, index: 2, type: EntryType.ConfChange, data: new Uint8Array([1, 2]) }).ok,
      true,
    );
    const bad = sm.apply({
      term: 1,
      index: 3,
      type: EntryType.Normal,
      data: new Uint8Array([0xff, 0xff, 0xff]),
    });
    assert.equal(bad.ok, false);
    const data = encodeCommand({ addSite: { name: "ams", region: "", description: "", labels: {} } }, 1);
    const good = sm.apply({ term: 1, index: 4, type: EntryType.Normal, data });
    assert.equal(good.ok && good.objects[0]?.site?.meta?.revision, 4);
    assert.equal(sm.index, 4);
    assert.throws(() => sm.apply({ term: 1, index: 4, type: EntryType.Normal, data }), /invariant/);
  });

  it("snapshot → restore → identical state, and the restored replica keeps agreeing", () => {
    const { h, web, r } = federation();
    h.attach("edge-web", r, web);
    const g = id(h.group("web"));
    h.create(rule(g, { remoteGroupId: g }, "self"));
    h.ok({
      reportRealized: {
        site: "ams",
        ports: [
          port("11111111-1111-4111-8111-111111111111", id(web), ["10.1.0.5"], { securityGroupIds: [g] }),
        ],
        removedPortIds: [],
        full: false,
        gatewayEndpoints: [],
        health: undefined,
      },
    });
    h.ok({ ack: { site: "fra", appliedIndex: 3 } });
    h.ok({ revokeToken: { tokenId: "admin-1", expiresUnixMs: h.now + 1000 } });
    h.create({
      network: {
        meta: meta("labelled", { labels: { z: "1", a: "2" } }),
        subnets: [],
        sites: [],
        vni: 0,
        mtu: 0,
      },
    });
    const snap = h.sm.snapshot();
    const copy = new IntentStateMachine();
    copy.restore(snap);
    assert.deepEqual(Buffer.from(copy.snapshot()), Buffer.from(snap));
    assert.equal(copy.index, h.index);
    assert.ok(copy.isTokenRevoked("admin-1"));
    assert.deepEqual(copy.objectsOf(), h.sm.objectsOf());
    // Both replicas apply the same next command (which allocates a VNI) to the same result.
    const twin = new IntentHarness(copy);
    const next = (x: IntentHarness) => x.network("after", "10.7.0.0/24", ["fra"]);
    assert.deepEqual(next(twin), next(h));
    assert.deepEqual(Buffer.from(copy.snapshot()), Buffer.from(h.sm.snapshot()));
    // A journal does not survive restore; positions before the snapshot need a snapshot.
    assert.equal(copy.journal.covers(snap.length > 0 ? h.index - 2 : 0), false);
    assert.equal(federationpb.IntentState.decode(snap).objects.length > 5, true);
  });

  it("bounds the objects of each kind", () => {
    const h = new IntentHarness(new IntentStateMachine({ maxObjectsPerKind: 2 }));
    h.group("a");
    h.group("b");
    h.fail(
      { create: { object: { securityGroup: { meta: meta("c"), stateless: false } } } },
      "resource_exhausted",
      "security_group",
    );
    h.ok({
      delete: {
        kind: intentpb.ObjectKind.OBJECT_KIND_SECURITY_GROUP,
        id: "",
        name: "a",
        expectedRevision: 0,
      },
    });
    h.group("c");
  });

  it("a failed command changes nothing", () => {
    const { h } = federation();
    const before = Buffer.from(h.sm.snapshot());
    // Valid group, then a rule whose second half is invalid: nothing of it may stick.
    h.fail(
      {
        create: {
          object: {
            network: {
              meta: meta("x"),
              subnets: [
                { cidr: "10.5.0.0/24", gatewayIp: "" },
                { cidr: "bad", gatewayIp: "" },
              ],
              sites: [],
              vni: 0,
              mtu: 0,
            },
          },
        },
      },
      "invalid_argument",
    );
    const after = federationpb.IntentState.decode(h.sm.snapshot());
    const was = federationpb.IntentState.decode(before);
    assert.equal(after.index, was.index + 1);
    assert.deepEqual({ ...after, index: 0 }, { ...was, index: 0 });
  });
});

describe("the state as sites receive it", () => {
  it("is ordered by name per kind, built once per applied index, and rebuilt after an entry", () => {
    const h = new IntentHarness();
    h.create({ securityGroup: { meta: meta("b-group"), stateless: false } });
    h.create({ securityGroup: { meta: meta("a-group"), stateless: false } });
    const first = h.sm.intentSnapshotShared();
    assert.equal(first.index, h.index);
    assert.deepEqual(
      first.objects.map((o) => o.securityGroup?.meta?.name),
      ["a-group", "b-group"],
    );
    assert.equal(h.sm.intentSnapshotShared(), first, "same applied index: the same snapshot");
    h.create({ securityGroup: { meta: meta("0-group"), stateless: false } });
    const second = h.sm.intentSnapshotShared();
    assert.notEqual(second, first);
    assert.equal(second.index, h.index);
    assert.deepEqual(
      second.objects.map((o) => o.securityGroup?.meta?.name),
      ["0-group", "a-group", "b-group"],
    );
    assert.deepEqual(second, h.sm.intentSnapshot(), "the shared snapshot holds what the copying one does");
  });
});
