import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { topologypb } from "@isthmus/schema";
import {
  natInChainId,
  natOutChainId,
  portAddrGroupId,
  portInboundChainId,
  portProfileChainId,
  remoteSitePortId,
  routerInterfaceBridgePortId,
  routerInterfaceMac,
  routerInterfaceRouterPortId,
  securityGroupAddrGroupId,
  securityGroupChainId,
  securityGroupMemberId,
  securityGroupSetKey,
  uplinkPortId,
} from "./ids.js";
import * as b from "./intent-builders.js";
import { TestWorld } from "./test-world.js";

const { id } = b;
const { PortType, RouteType, RuleAction } = topologypb;

function chainRules(w: TestWorld, chainId: string): topologypb.Rule[] {
  return w
    .all("rule")
    .filter((r) => r.chainId === chainId)
    .sort((x, y) => x.position - y.position || (x.id < y.id ? -1 : 1));
}

describe("network → bridge", () => {
  it("creates a bridge with the global VNI and one remote-site port per other site", () => {
    const w = new TestWorld("east");
    w.apply(b.upsert(1, b.network("net1", { sites: ["east", "west", "north"], vni: 0x100042, mtu: 1400 })));
    const [bridge] = w.all("bridge");
    assert.equal(bridge?.id, id("net1"));
    assert.equal(bridge?.tunnelKey, 0x100042);
    assert.equal(bridge?.mtu, 1400);
    const remotes = w.all("port").filter((p) => p.type === PortType.PORT_TYPE_REMOTE_SITE);
    assert.deepEqual(remotes.map((p) => p.remoteSite).sort(), ["north", "west"]);
    assert.ok(remotes.every((p) => p.deviceId === id("net1")));
    w.assertMatchesFull();
  });

  it("derives nothing for a network that does not span this site, and reports a bad VNI", () => {
    const w = new TestWorld("east");
    w.apply(b.upsert(1, b.network("net1", { sites: ["west"] })));
    assert.equal(w.topology.size, 0);
    const d = w.apply(b.upsert(2, b.network("net2", { sites: ["east"], vni: 5 })));
    assert.equal(w.topology.size, 0);
    assert.match(d.problems[0] ?? "", /vni 5 is outside/);
  });

  it("removes a site's remote port when the network stops spanning it", () => {
    const w = new TestWorld("east");
    w.apply(b.upsert(1, b.network("net1", { sites: ["east", "west", "north"] })));
    const d = w.apply(b.upsert(2, b.network("net1", { sites: ["east", "west"] })));
    assert.deepEqual(d.deletes, [
      { kind: topologypb.TopologyKind.TOPOLOGY_KIND_PORT, id: remoteSitePortId(id("net1"), "north") },
    ]);
    assert.equal(d.upserts.length, 0, "the bridge itself did not change");
  });

  it("places other sites' ports behind their remote-site port, and not this site's own records", () => {
    const w = new TestWorld("east");
    w.apply(b.upsert(1, b.network("net1", { sites: ["east", "west"] })));
    w.apply(
      b.upsert(
        2,
        b.portRecord("vmW", { site: "west", network: "net1", mac: "02:00:00:00:00:0b", ips: ["10.0.0.11"] }),
        b.portRecord("vmE", { site: "east", network: "net1", mac: "02:00:00:00:00:0a", ips: ["10.0.0.10"] }),
      ),
    );
    const macs = w.all("macEntry");
    assert.equal(macs.length, 1);
    assert.equal(macs[0]?.mac, "02:00:00:00:00:0b");
    assert.equal(macs[0]?.portId, remoteSitePortId(id("net1"), "west"));
    assert.deepEqual(
      w.all("arpEntry").map((a) => [a.ip, a.mac]),
      [["10.0.0.11", "02:00:00:00:00:0b"]],
    );
    w.assertMatchesFull();
  });
});

describe("router → replica", () => {
  function routedWorld(site: string): TestWorld {
    const w = new TestWorld(site);
    w.putHost(b.host("gw1", { gateway: true }));
    w.apply(
      b.upsert(
        1,
        b.network("net1", {
          sites: ["east", "west"],
          subnets: [{ cidr: "10.0.0.0/24", gatewayIp: "10.0.0.1" }],
        }),
        b.router("r1", {
          uplinks: [
            { site: "east", ipCidr: "198.51.100.2/24", gatewayIp: "198.51.100.1", snat: true },
            { site: "west", ipCidr: "203.0.113.2/24", gatewayIp: "203.0.113.1", snat: false },
          ],
          routes: [
            { destination: "172.16.0.0/16", nextHop: "10.0.0.254" },
            { destination: "192.168.9.0/24", nextHop: "", blackhole: true, site: "west" },
          ],
        }),
        b.routerInterface("ri1", { router: "r1", network: "net1" }),
      ),
    );
    return w;
  }

  it("has the same router id and interface MAC at every site", () => {
    const east = routedWorld("east");
    const west = routedWorld("west");
    for (const w of [east, west]) {
      assert.deepEqual(
        w.all("router").map((r) => r.id),
        [id("r1")],
      );
      const rp = w.all("port").find((p) => p.id === routerInterfaceRouterPortId(id("ri1")));
      assert.equal(rp?.mac, routerInterfaceMac(id("ri1")));
      assert.deepEqual(rp?.ips, ["10.0.0.1/24"]);
      assert.equal(rp?.peerId, routerInterfaceBridgePortId(id("ri1")));
      w.assertMatchesFull();
    }
    assert.match(routerInterfaceMac(id("ri1")), /^[0-9a-f][26ae](:[0-9a-f]{2}){5}$/, "locally administered");
  });

  it("routes: connected and local for the interface, uplink routes, default, static for this site", () => {
    const w = routedWorld("east");
    const routes = w.all("route").map((r) => [r.dstPrefix, r.type, r.nextHopGateway].join(" "));
    assert.deepEqual(routes.sort(), [
      `0.0.0.0/0 ${RouteType.ROUTE_TYPE_NORMAL} 198.51.100.1`,
      `10.0.0.0/24 ${RouteType.ROUTE_TYPE_NORMAL} `,
      `10.0.0.1/32 ${RouteType.ROUTE_TYPE_LOCAL} `,
      `172.16.0.0/16 ${RouteType.ROUTE_TYPE_NORMAL} 10.0.0.254`,
      `198.51.100.0/24 ${RouteType.ROUTE_TYPE_NORMAL} `,
      `198.51.100.2/32 ${RouteType.ROUTE_TYPE_LOCAL} `,
    ]);
    const staticRoute = w.all("route").find((r) => r.dstPrefix === "172.16.0.0/16");
    assert.equal(staticRoute?.nextHopPortId, routerInterfaceRouterPortId(id("ri1")));
    const west = routedWorld("west");
    assert.ok(
      west
        .all("route")
        .some((r) => r.dstPrefix === "192.168.9.0/24" && r.type === RouteType.ROUTE_TYPE_BLACKHOLE),
    );
  });

  it("binds the uplink to the gateway host and SNATs through it", () => {
    const w = routedWorld("east");
    const uplink = w.all("port").find((p) => p.type === PortType.PORT_TYPE_ROUTER_UPLINK);
    assert.equal(uplink?.id, uplinkPortId(id("r1"), "east"));
    assert.equal(uplink?.hostId, id("gw1"));
    assert.deepEqual(uplink?.ips, ["198.51.100.2/24"]);
    const router = w.all("router")[0]!;
    assert.equal(router.inboundFilterId, natInChainId(id("r1"), "east"));
    const out = chainRules(w, natOutChainId(id("r1"), "east"));
    assert.deepEqual(
      out.map((r) => r.action),
      [RuleAction.RULE_ACTION_REVERSE_DNAT, RuleAction.RULE_ACTION_SNAT],
    );
    assert.deepEqual(out[1]?.condition?.outPortIds, [uplink?.id]);
    assert.equal(out[1]?.natTargets[0]?.ipStart, "198.51.100.2");
    const inRules = chainRules(w, natInChainId(id("r1"), "east"));
    assert.deepEqual(
      inRules.map((r) => r.action),
      [RuleAction.RULE_ACTION_REVERSE_SNAT],
    );
    // West's uplink has snat=false: no SNAT rule there.
    const west = routedWorld("west");
    assert.ok(!west.all("rule").some((r) => r.action === RuleAction.RULE_ACTION_SNAT));
  });

  it("moves the uplink to another gateway when the chosen one dies", () => {
    const w = routedWorld("east");
    w.putHost(b.host("gw2", { gateway: true }));
    const first = id("gw1") < id("gw2") ? "gw1" : "gw2";
    const second = first === "gw1" ? "gw2" : "gw1";
    const uplinkHost = (): string | undefined =>
      w.all("port").find((p) => p.type === PortType.PORT_TYPE_ROUTER_UPLINK)?.hostId;
    assert.equal(uplinkHost(), id(first));
    const d = w.putHost(b.host(first, { gateway: true, alive: false }));
    assert.equal(uplinkHost(), id(second));
    assert.deepEqual(
      d.upserts.flatMap((o) => (o.port ? [o.port.type] : [])).sort(),
      [PortType.PORT_TYPE_ROUTER_UPLINK, PortType.PORT_TYPE_REMOTE_SITE],
      "only the uplink and the remote-site port move",
    );
    assert.ok(
      w
        .all("port")
        .filter((p) => p.type === PortType.PORT_TYPE_REMOTE_SITE)
        .every((p) => p.hostId === id(second)),
    );
    w.assertMatchesFull();
  });

  it("does not replicate a router to a site it does not span", () => {
    const w = new TestWorld("north");
    w.apply(b.upsert(1, b.router("r1", { uplinks: [{ site: "east", ipCidr: "198.51.100.2/24" }] })));
    assert.equal(w.all("router").length, 0);
    // An interface on a network spanning north brings the router here.
    w.apply(
      b.upsert(
        2,
        b.network("n", {
          sites: ["north", "east"],
          subnets: [{ cidr: "10.1.0.0/24", gatewayIp: "10.1.0.1" }],
        }),
        b.routerInterface("ri", { router: "r1", network: "n" }),
      ),
    );
    assert.equal(w.all("router").length, 1);
    assert.ok(!w.all("port").some((p) => p.type === PortType.PORT_TYPE_ROUTER_UPLINK));
    w.apply(b.remove(3, "routerInterface", "ri"));
    assert.equal(w.all("router").length, 0);
    w.assertMatchesFull();
  });

  it("seeds the router interface's MAC and address on the bridge", () => {
    const w = routedWorld("east");
    const mac = w.all("macEntry").find((m) => m.portId === routerInterfaceBridgePortId(id("ri1")));
    assert.equal(mac?.mac, routerInterfaceMac(id("ri1")));
    assert.ok(w.all("arpEntry").some((a) => a.ip === "10.0.0.1" && a.mac === mac?.mac));
  });

  it("realizes a floating IP only at its site, as 1:1 DNAT and SNAT on the uplink", () => {
    for (const site of ["east", "west"]) {
      const w = routedWorld(site);
      w.apply(
        b.upsert(
          5,
          b.floatingIp("fip1", {
            router: "r1",
            site: "east",
            externalIp: "198.51.100.20",
            port: "vm1",
            fixedIp: "10.0.0.5",
          }),
        ),
      );
      const dnat = w.all("rule").find((r) => r.action === RuleAction.RULE_ACTION_DNAT);
      const fipSnat = w
        .all("rule")
        .find((r) => r.intentId === id("fip1") && r.action === RuleAction.RULE_ACTION_SNAT);
      if (site === "west") {
        assert.equal(dnat, undefined);
        continue;
      }
      assert.equal(dnat?.condition?.nwDst, "198.51.100.20/32");
      assert.equal(dnat?.natTargets[0]?.ipStart, "10.0.0.5");
      assert.equal(fipSnat?.condition?.nwSrc, "10.0.0.5/32");
      assert.equal(fipSnat?.natTargets[0]?.ipStart, "198.51.100.20");
      // Unassigning the address removes exactly its two rules.
      const d = w.apply(
        b.upsert(6, b.floatingIp("fip1", { router: "r1", site: "east", externalIp: "198.51.100.20" })),
      );
      assert.deepEqual(d.deletes.map((r) => r.id).sort(), [dnat!.id, fipSnat!.id].sort());
      assert.equal(d.upserts.length, 0);
      w.assertMatchesFull();
    }
  });

  it("reports a static route whose next hop no interface reaches, and skips it", () => {
    const w = new TestWorld("east");
    const d = w.apply(
      b.upsert(
        1,
        b.router("r", {
          uplinks: [{ site: "east", ipCidr: "198.51.100.2/24" }],
          routes: [{ destination: "10.9.0.0/16", nextHop: "10.8.0.1" }],
        }),
      ),
    );
    assert.ok(!w.all("route").some((r) => r.dstPrefix === "10.9.0.0/16"));
    assert.match(d.problems.join("\n"), /routes\[0\]: next_hop 10\.8\.0\.1 is on no subnet/);
  });
});

describe("security groups", () => {
  it("builds stateful chains, rules and a federation-wide address group", () => {
    const w = new TestWorld("east");
    w.apply(
      b.upsert(
        1,
        b.securityGroup("web"),
        b.securityGroup("db"),
        b.securityGroupRule("web-http", {
          group: "web",
          direction: "ingress",
          protocol: "tcp",
          ports: [80, 80],
        }),
        b.securityGroupRule("db-from-web", {
          group: "db",
          direction: "ingress",
          protocol: "tcp",
          ports: [5432, 5432],
          remoteGroup: "web",
        }),
        b.securityGroupRule("db-out", { group: "db", direction: "egress", remoteCidr: "10.0.0.0/8" }),
      ),
    );
    const ingress = chainRules(w, securityGroupChainId(id("web"), "ingress"));
    assert.equal(ingress[0]?.condition?.matchReturnFlow, true);
    assert.equal(ingress[0]?.action, RuleAction.RULE_ACTION_ACCEPT);
    assert.deepEqual(ingress[1]?.condition?.tpDst, { start: 80, end: 80 });
    assert.equal(ingress[1]?.condition?.nwProto, 6);
    const fromWeb = chainRules(w, securityGroupChainId(id("db"), "ingress"))[1];
    assert.equal(fromWeb?.condition?.ipAddrGroupSrc, securityGroupAddrGroupId(id("web")));
    const out = chainRules(w, securityGroupChainId(id("db"), "egress"))[1];
    assert.equal(out?.condition?.nwDst, "10.0.0.0/8");
    assert.equal(out?.condition?.etherType, 0x0800);
    w.assertMatchesFull();
  });

  it("a stateless group has no return-flow rule", () => {
    const w = new TestWorld("east");
    w.apply(b.upsert(1, b.securityGroup("raw", { stateless: true })));
    assert.equal(w.all("rule").length, 0);
    assert.equal(w.all("chain").length, 2);
  });

  it("a port record at another site adds one member to this site's address group", () => {
    const east = new TestWorld("east");
    east.apply(b.upsert(1, b.securityGroup("web"), b.network("net1", { sites: ["west"] })));
    const groupId = securityGroupAddrGroupId(id("web"));
    // What a rule naming the group matches: the group's own addresses (none) and its members'.
    const matched = (): string[] => [
      ...east.all("ipAddrGroup").find((g) => g.id === groupId)!.addresses,
      ...east
        .all("ipAddrGroupMember")
        .filter((m) => m.groupId === groupId)
        .flatMap((m) => m.addresses),
    ];
    assert.deepEqual(matched(), []);
    const record = (n: number, ips: string[], groups: string[]) =>
      b.portRecord(`w${n}`, {
        site: "west",
        network: "net1",
        mac: `02:00:00:00:01:0${n}`,
        ips,
        groups,
      });
    const d = east.apply(b.upsert(2, record(1, ["10.0.0.7", "bogus"], ["web", "web"])));
    assert.deepEqual(matched(), ["10.0.0.7"]);
    assert.deepEqual(
      d.upserts,
      [
        {
          ipAddrGroupMember: {
            id: securityGroupMemberId(id("web"), id("w1")),
            groupId,
            addresses: ["10.0.0.7"],
            intentId: id("w1"),
          },
        },
      ],
      "only the member (the network does not span east; the group's own object is untouched)",
    );
    east.apply(b.upsert(3, record(2, ["10.0.0.8", "fd00::8"], ["web"])));
    assert.deepEqual(matched().sort(), ["10.0.0.7", "10.0.0.8", "fd00::8"]);
    // A member's change, however large the group, is that member only.
    const moved = east.apply(b.upsert(4, record(1, ["10.0.0.17"], ["web"])));
    assert.deepEqual(
      moved.upserts.map((o) => o.ipAddrGroupMember?.addresses),
      [["10.0.0.17"]],
    );
    assert.deepEqual(moved.deletes, []);
    const left = east.apply(b.upsert(5, record(1, ["10.0.0.17"], [])));
    assert.deepEqual(left.upserts, []);
    assert.deepEqual(left.deletes, [
      {
        kind: topologypb.TopologyKind.TOPOLOGY_KIND_IP_ADDR_GROUP_MEMBER,
        id: securityGroupMemberId(id("web"), id("w1")),
      },
    ]);
    assert.deepEqual(matched().sort(), ["10.0.0.8", "fd00::8"]);
    east.apply(b.remove(6, "portRecord", "w2"));
    assert.deepEqual(matched(), []);
    east.assertMatchesFull();
  });

  it("a group's members exist while the group does: deleting it removes them, creating it derives them", () => {
    const east = new TestWorld("east");
    east.apply(
      b.upsert(
        1,
        b.network("net1", { sites: ["west"] }),
        ...[1, 2, 3].map((n) =>
          b.portRecord(`w${n}`, {
            site: "west",
            network: "net1",
            mac: `02:00:00:00:01:0${n}`,
            ips: [`10.0.0.${n}`],
            groups: n === 3 ? ["web", "db"] : ["web"],
          }),
        ),
      ),
    );
    assert.deepEqual(east.all("ipAddrGroupMember"), [], "no member of a group that does not exist");
    const created = east.apply(b.upsert(2, b.securityGroup("web")));
    assert.equal(created.upserts.filter((o) => o.ipAddrGroupMember).length, 3);
    east.assertMatchesFull("after the group's creation");
    // A change to the group that keeps it leaves its members alone.
    const renamed = east.apply(b.upsert(3, b.securityGroup("web", { stateless: true })));
    assert.equal(renamed.upserts.filter((o) => o.ipAddrGroupMember).length, 0);
    east.apply(b.upsert(4, b.securityGroup("db")));
    const deleted = east.apply(b.remove(5, "securityGroup", "web"));
    assert.deepEqual(
      deleted.deletes
        .filter((r) => r.kind === topologypb.TopologyKind.TOPOLOGY_KIND_IP_ADDR_GROUP_MEMBER)
        .map((r) => r.id)
        .sort(),
      [1, 2, 3].map((n) => securityGroupMemberId(id("web"), id(`w${n}`))).sort(),
    );
    assert.deepEqual(
      east.all("ipAddrGroupMember").map((m) => m.id),
      [securityGroupMemberId(id("db"), id("w3"))],
    );
    east.assertMatchesFull("after the group's deletion");
  });

  it("reports and skips an invalid rule", () => {
    const w = new TestWorld("east");
    const d = w.apply(
      b.upsert(
        1,
        b.securityGroup("g"),
        b.securityGroupRule("bad", { group: "g", direction: "ingress", protocol: "gre-ish" }),
      ),
    );
    assert.match(d.problems.join("\n"), /protocol "gre-ish"/);
    assert.ok(!w.all("rule").some((r) => r.intentId === id("bad")));
  });
});

describe("local ports", () => {
  it("creates a VM port with anti-spoofing and jumps to its groups", () => {
    const w = new TestWorld("east");
    w.apply(b.upsert(1, b.network("net1", { sites: ["east"] }), b.securityGroup("web")));
    w.putPort(
      b.localPort("vm1", {
        network: "net1",
        host: "h1",
        mac: "02:AA:00:00:00:01",
        ips: ["10.0.0.5"],
        groups: ["web"],
        tunnelKey: 7,
      }),
    );
    const port = w.all("port").find((p) => p.id === id("vm1"));
    assert.equal(port?.type, PortType.PORT_TYPE_VM);
    assert.equal(port?.mac, "02:aa:00:00:00:01");
    assert.equal(port?.tunnelKey, 7);
    const inbound = chainRules(w, portInboundChainId(id("vm1")));
    assert.equal(inbound[0]?.action, RuleAction.RULE_ACTION_DROP);
    assert.equal(inbound[0]?.condition?.ethSrc, "02:aa:00:00:00:01");
    assert.equal(inbound[0]?.condition?.invEthSrc, true);
    const spoof = inbound.find((r) => r.condition?.invIpAddrGroupSrc);
    assert.equal(spoof?.action, RuleAction.RULE_ACTION_DROP);
    assert.equal(spoof?.condition?.ipAddrGroupSrc, portAddrGroupId(id("vm1")));
    // After anti-spoofing, the port's own chain hands over to its profile's (shared) chain.
    const profileIn = portProfileChainId(securityGroupSetKey([id("web")]), "inbound");
    const last = inbound.at(-1);
    assert.equal(last?.action, RuleAction.RULE_ACTION_JUMP);
    assert.equal(last?.jumpChainId, profileIn);
    assert.ok((last?.position ?? 0) > (spoof?.position ?? Infinity), "the profile comes after the checks");
    const profile = chainRules(w, profileIn);
    assert.equal(
      profile.find((r) => r.action === RuleAction.RULE_ACTION_JUMP)?.jumpChainId,
      securityGroupChainId(id("web"), "egress"),
    );
    assert.equal(profile.at(-1)?.action, RuleAction.RULE_ACTION_DROP);
    const outbound = chainRules(w, port?.outboundFilterId ?? "");
    assert.equal(port?.outboundFilterId, portProfileChainId(securityGroupSetKey([id("web")]), "outbound"));
    assert.equal(
      outbound.find((r) => r.action === RuleAction.RULE_ACTION_JUMP)?.jumpChainId,
      securityGroupChainId(id("web"), "ingress"),
    );
    assert.equal(outbound.at(-1)?.action, RuleAction.RULE_ACTION_DROP);
    assert.deepEqual(w.all("ipAddrGroup").find((g) => g.id === portAddrGroupId(id("vm1")))?.addresses, [
      "10.0.0.5",
    ]);
    // Its MAC and addresses are the port's own: no MAC or ARP entry repeats them (version 4).
    assert.deepEqual(port?.ips, ["10.0.0.5"]);
    assert.equal(w.all("macEntry").filter((m) => m.portId === id("vm1")).length, 0);
    assert.equal(w.all("arpEntry").filter((a) => a.ip === "10.0.0.5").length, 0);
    w.assertMatchesFull();
  });

  it("removing a port removes exactly what it derived", () => {
    const w = new TestWorld("east");
    w.apply(b.upsert(1, b.network("net1", { sites: ["east"] })));
    const before = new Set(w.topology.keys());
    const added = w.putPort(
      b.localPort("vm1", { network: "net1", mac: "02:00:00:00:00:01", ips: ["10.0.0.5", "10.0.0.6"] }),
    );
    const d = w.removePort(id("vm1"));
    assert.equal(d.deletes.length, added.upserts.length);
    assert.deepEqual(new Set(w.topology.keys()), before);
  });

  it("a port without groups is unfiltered apart from anti-spoofing", () => {
    const w = new TestWorld("east");
    w.putPort(b.localPort("vm1", { network: "net1", mac: "02:00:00:00:00:01", ips: ["10.0.0.5"] }));
    const none = securityGroupSetKey([]);
    assert.equal(
      chainRules(w, portInboundChainId(id("vm1"))).at(-1)?.jumpChainId,
      portProfileChainId(none, "inbound"),
    );
    for (const side of ["inbound", "outbound"] as const) {
      const rules = chainRules(w, portProfileChainId(none, side));
      assert.ok(!rules.some((r) => r.action === RuleAction.RULE_ACTION_JUMP));
      assert.equal(rules.at(-1)?.action, RuleAction.RULE_ACTION_ACCEPT);
    }
    w.assertMatchesFull();
  });

  it("ports with the same groups share one profile, which lives as long as one of them", () => {
    const w = new TestWorld("east");
    w.apply(
      b.upsert(1, b.network("net1", { sites: ["east"] }), b.securityGroup("web"), b.securityGroup("db")),
    );
    const port = (name: string, n: number, groups: string[]) =>
      b.localPort(name, { network: "net1", mac: `02:00:00:00:00:0${n}`, ips: [`10.0.0.${n}`], groups });
    w.putPort(port("vm1", 1, ["web", "db"]));
    const chains = w.all("chain").length;
    const rules = w.all("rule").length;
    // Same groups in another order and repeated: the same profile; the port adds its own chain
    // and its five rules (MAC, DHCP, ND, address check, jump), nothing shared.
    const d = w.putPort(port("vm2", 2, ["db", "web", "db"]));
    assert.equal(w.all("chain").length, chains + 1);
    assert.equal(w.all("rule").length, rules + 5);
    assert.ok(
      d.upserts.every((o) => o.rule === undefined || o.rule.chainId === portInboundChainId(id("vm2"))),
    );
    const key = securityGroupSetKey([id("web"), id("db")]);
    const vm2 = w.all("port").find((p) => p.id === id("vm2"));
    assert.equal(vm2?.outboundFilterId, portProfileChainId(key, "outbound"));
    // Jumps to both groups' chains, in each direction.
    for (const [side, dir] of [
      ["inbound", "egress"],
      ["outbound", "ingress"],
    ] as const) {
      const jumps = chainRules(w, portProfileChainId(key, side)).filter(
        (r) => r.action === RuleAction.RULE_ACTION_JUMP,
      );
      assert.deepEqual(
        jumps.map((r) => r.jumpChainId).sort(),
        [securityGroupChainId(id("web"), dir), securityGroupChainId(id("db"), dir)].sort(),
      );
    }
    // vm1 leaves for another profile: the shared one stays (vm2 uses it).
    w.putPort(port("vm1", 1, ["web"]));
    assert.ok(w.all("chain").some((c) => c.id === portProfileChainId(key, "outbound")));
    assert.ok(
      w.all("chain").some((c) => c.id === portProfileChainId(securityGroupSetKey([id("web")]), "outbound")),
    );
    w.assertMatchesFull("after vm1 moved");
    // Its last port gone, the profile goes too.
    w.removePort(id("vm2"));
    assert.ok(
      !w
        .all("chain")
        .some(
          (c) => c.id === portProfileChainId(key, "outbound") || c.id === portProfileChainId(key, "inbound"),
        ),
    );
    const gone = new Set([portProfileChainId(key, "inbound"), portProfileChainId(key, "outbound")]);
    assert.ok(!w.all("rule").some((r) => gone.has(r.chainId)));
    w.assertMatchesFull("after vm2 left");
  });
});

describe("gateways", () => {
  it("other sites' gateway endpoints become remote gateways; this site's do not", () => {
    const w = new TestWorld("east");
    w.apply(
      b.upsert(
        1,
        b.gateway("gw-west", { site: "west", endpoints: [{ ip: "203.0.113.9" }, { ip: "203.0.113.9" }] }),
        b.gateway("gw-east", { site: "east", endpoints: [{ ip: "198.51.100.9" }] }),
      ),
    );
    assert.deepEqual(
      w.all("remoteGateway").map((g) => [g.site, g.ip, g.port]),
      [["west", "203.0.113.9", 4789]],
    );
  });
});
