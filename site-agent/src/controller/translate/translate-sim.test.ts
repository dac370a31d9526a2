// The translation's output walked by the packet simulation: what a site derives from intent must
// forward, filter and NAT the way docs/translation.md says, not only have the right shape.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseIp4, parseMac } from "../../packets/addr.js";
import { eth } from "../../packets/packet-dsl.js";
import { newSimContext, type SimContext, simulate, TopologyView } from "../../sim/index.js";
import { routerInterfaceMac, uplinkMac, uplinkPortId } from "./ids.js";
import * as b from "./intent-builders.js";
import { TestWorld } from "./test-world.js";

const { id } = b;
const MAC1 = "02:00:00:00:00:11";
const MAC2 = "02:00:00:00:00:12";
const MAC3 = "02:00:00:00:00:13";
const MAC_WEST = "02:00:00:00:00:77";
const VNI = 0x100010;

function federation(): TestWorld {
  const w = new TestWorld("east");
  w.putHost(b.host("h1", { tunnelIp: "10.1.1.1" }));
  w.putHost(b.host("h2", { tunnelIp: "10.1.1.2" }));
  w.putHost(b.host("gw", { gateway: true, tunnelIp: "10.1.1.9" }));
  w.apply(
    b.upsert(
      1,
      b.network("net1", {
        sites: ["east", "west"],
        subnets: [{ cidr: "10.0.0.0/24", gatewayIp: "10.0.0.1" }],
        vni: VNI,
      }),
      b.securityGroup("client"),
      b.securityGroup("web"),
      b.securityGroupRule("client-out", { group: "client", direction: "egress" }),
      b.securityGroupRule("web-in", {
        group: "web",
        direction: "ingress",
        protocol: "tcp",
        ports: [80, 80],
        remoteGroup: "client",
      }),
      b.gateway("gw-west", { site: "west", endpoints: [{ ip: "203.0.113.5" }] }),
      b.portRecord("pw", {
        site: "west",
        network: "net1",
        mac: MAC_WEST,
        ips: ["10.0.0.77"],
        groups: ["client"],
      }),
      // This site's own port, echoed back through the federation: it makes vm1 a "client".
      b.portRecord("vm1", {
        site: "east",
        network: "net1",
        mac: MAC1,
        ips: ["10.0.0.11"],
        groups: ["client"],
      }),
    ),
  );
  w.putPort(
    b.localPort("vm1", {
      network: "net1",
      host: "h1",
      mac: MAC1,
      ips: ["10.0.0.11"],
      groups: ["client"],
      tunnelKey: 1,
    }),
  );
  w.putPort(
    b.localPort("vm2", {
      network: "net1",
      host: "h1",
      mac: MAC2,
      ips: ["10.0.0.12"],
      groups: ["web"],
      tunnelKey: 2,
    }),
  );
  w.putPort(
    b.localPort("vm3", {
      network: "net1",
      host: "h2",
      mac: MAC3,
      ips: ["10.0.0.13"],
      groups: ["web"],
      tunnelKey: 3,
    }),
  );
  return w;
}

const viewOf = (w: TestWorld): TopologyView => new TopologyView([...w.topology.values()]);

function send(view: TopologyView, ctx: SimContext, from: string, frame: Uint8Array) {
  return simulate(view, frame, { portId: id(from) }, ctx);
}

describe("translated topology in the simulation", () => {
  it("a client reaches a web port on port 80 only, and the reply returns statefully", () => {
    const w = federation();
    const view = viewOf(w);
    const ctx = newSimContext(id("h1"));
    const http = send(view, ctx, "vm1", eth(MAC1, MAC2).ip4("10.0.0.11", "10.0.0.12").tcp(40000, 80).build());
    assert.deepEqual(http.actions, [{ kind: "output", portId: id("vm2") }], http.dropReason ?? "");
    const ssh = send(view, ctx, "vm1", eth(MAC1, MAC2).ip4("10.0.0.11", "10.0.0.12").tcp(40001, 22).build());
    assert.equal(ssh.actions[0]?.kind, "drop");
    // The web group has no egress rule: only the return-flow rule lets the reply out.
    const reply = send(
      view,
      ctx,
      "vm2",
      eth(MAC2, MAC1).ip4("10.0.0.12", "10.0.0.11").tcp(80, 40000, 0x12).build(),
    );
    assert.deepEqual(reply.actions, [{ kind: "output", portId: id("vm1") }], reply.dropReason ?? "");
    const unsolicited = send(
      view,
      ctx,
      "vm2",
      eth(MAC2, MAC1).ip4("10.0.0.12", "10.0.0.11").tcp(80, 41234).build(),
    );
    assert.equal(unsolicited.actions[0]?.kind, "drop");
  });

  it("a port on another host is reached by its site-local tunnel key", () => {
    const view = viewOf(federation());
    const r = send(
      view,
      newSimContext(id("h1")),
      "vm1",
      eth(MAC1, MAC3).ip4("10.0.0.11", "10.0.0.13").tcp(40000, 80).build(),
    );
    assert.deepEqual(r.actions, [
      { kind: "encap", tunnelKey: 3, remoteIp: "10.1.1.2", remotePort: 4789, hostId: id("h2") },
    ]);
  });

  it("a port at another site is reached through the local gateway with the network's VNI", () => {
    const view = viewOf(federation());
    const r = send(
      view,
      newSimContext(id("h1")),
      "vm1",
      eth(MAC1, MAC_WEST).ip4("10.0.0.11", "10.0.0.77").udp(5000, 53).build(),
    );
    assert.deepEqual(r.actions, [
      { kind: "encap", tunnelKey: VNI, remoteIp: "10.1.1.9", remotePort: 4789, hostId: id("gw") },
    ]);
    // At the gateway the same frame goes to the remote site's gateway.
    const atGw = simulate(
      view,
      eth(MAC1, MAC_WEST).ip4("10.0.0.11", "10.0.0.77").udp(5000, 53).build(),
      { tunnelKey: VNI },
      newSimContext(id("gw")),
    );
    assert.equal(atGw.actions[0]?.kind, "encap", atGw.dropReason ?? "");
    assert.equal(atGw.actions[0]?.kind === "encap" && atGw.actions[0].remoteIp, "203.0.113.5");
  });

  it("anti-spoofing drops a forged source address or MAC but lets ARP through", () => {
    const view = viewOf(federation());
    const ctx = newSimContext(id("h1"));
    const ip = send(view, ctx, "vm1", eth(MAC1, MAC2).ip4("10.0.0.99", "10.0.0.12").tcp(40000, 80).build());
    assert.equal(ip.actions[0]?.kind, "drop");
    const mac = send(
      view,
      ctx,
      "vm1",
      eth("02:00:00:00:00:99", MAC2).ip4("10.0.0.11", "10.0.0.12").tcp(40000, 80).build(),
    );
    assert.equal(mac.actions[0]?.kind, "drop");
    const arp = send(
      view,
      ctx,
      "vm1",
      eth(MAC1, "ff:ff:ff:ff:ff:ff").arpRequest(MAC1, "10.0.0.11", "10.0.0.12").build(),
    );
    assert.doesNotMatch(arp.dropReason ?? "", /rule|chain/, "no chain drops the ARP request");
    assert.equal(arp.generated.length, 1, "the bridge answers ARP for vm2 from topology");
    assert.deepEqual(
      arp.generated[0]?.actions,
      [{ kind: "output", portId: id("vm1") }],
      "the reply passes vm1's chain",
    );
  });

  it("ports share their groups' profile; a port in two groups gets what either allows", () => {
    const w = federation();
    const MAC4 = "02:00:00:00:00:14";
    const MAC5 = "02:00:00:00:00:15";
    // vm4 is a web server and a client; vm5 is in no group (unfiltered but for anti-spoofing).
    w.putPort(
      b.localPort("vm4", {
        network: "net1",
        host: "h1",
        mac: MAC4,
        ips: ["10.0.0.14"],
        groups: ["client", "web"],
        tunnelKey: 4,
      }),
    );
    // Its record, echoed back through the federation, puts its address in both groups.
    w.apply(
      b.upsert(
        2,
        b.portRecord("vm4", {
          site: "east",
          network: "net1",
          mac: MAC4,
          ips: ["10.0.0.14"],
          groups: ["client", "web"],
        }),
      ),
    );
    w.putPort(
      b.localPort("vm5", { network: "net1", host: "h1", mac: MAC5, ips: ["10.0.0.15"], tunnelKey: 5 }),
    );
    w.assertMatchesFull();
    const view = viewOf(w);
    const ctx = newSimContext(id("h1"));
    // As a client (egress allowed by "client"), vm4 reaches vm2's web port; as a web server,
    // vm1 reaches it on port 80 and not on 22; vm2 (web only) may not start a connection to it.
    const out = send(view, ctx, "vm4", eth(MAC4, MAC2).ip4("10.0.0.14", "10.0.0.12").tcp(40000, 80).build());
    assert.deepEqual(out.actions, [{ kind: "output", portId: id("vm2") }], out.dropReason ?? "");
    const http = send(view, ctx, "vm1", eth(MAC1, MAC4).ip4("10.0.0.11", "10.0.0.14").tcp(40002, 80).build());
    assert.deepEqual(http.actions, [{ kind: "output", portId: id("vm4") }], http.dropReason ?? "");
    const ssh = send(view, ctx, "vm1", eth(MAC1, MAC4).ip4("10.0.0.11", "10.0.0.14").tcp(40003, 22).build());
    assert.equal(ssh.actions[0]?.kind, "drop");
    const fromWeb = send(
      view,
      ctx,
      "vm2",
      eth(MAC2, MAC4).ip4("10.0.0.12", "10.0.0.14").tcp(40004, 80).build(),
    );
    assert.equal(fromWeb.actions[0]?.kind, "drop");
    // vm5 takes anything in (vm1's group lets it send anything) and sends anything out (the
    // reply reaches vm1 as a return flow), but not from a forged source.
    const open = send(
      view,
      ctx,
      "vm1",
      eth(MAC1, MAC5).ip4("10.0.0.11", "10.0.0.15").udp(5000, 5001).build(),
    );
    assert.deepEqual(open.actions, [{ kind: "output", portId: id("vm5") }], open.dropReason ?? "");
    const back = send(
      view,
      ctx,
      "vm5",
      eth(MAC5, MAC1).ip4("10.0.0.15", "10.0.0.11").udp(5001, 5000).build(),
    );
    assert.deepEqual(back.actions, [{ kind: "output", portId: id("vm1") }], back.dropReason ?? "");
    const forged = send(
      view,
      ctx,
      "vm5",
      eth(MAC5, MAC1).ip4("10.0.0.99", "10.0.0.11").udp(5001, 5000).build(),
    );
    assert.equal(forged.actions[0]?.kind, "drop");
  });

  it("group membership reported by any site changes what is allowed", () => {
    const w = federation();
    // vm1's record leaves the client group (as reported through the federation).
    w.apply(
      b.upsert(
        2,
        b.portRecord("vm1", { site: "east", network: "net1", mac: MAC1, ips: ["10.0.0.11"], groups: [] }),
      ),
    );
    const r = send(
      viewOf(w),
      newSimContext(id("h1")),
      "vm1",
      eth(MAC1, MAC2).ip4("10.0.0.11", "10.0.0.12").tcp(40000, 80).build(),
    );
    assert.equal(r.actions[0]?.kind, "drop");
  });
});

describe("translated router in the simulation", () => {
  function routed(): TestWorld {
    const w = federation();
    w.apply(
      b.upsert(
        3,
        b.network("net2", {
          sites: ["east"],
          subnets: [{ cidr: "10.0.1.0/24", gatewayIp: "10.0.1.1" }],
          vni: VNI + 1,
        }),
        b.router("r1", {
          uplinks: [{ site: "east", ipCidr: "198.51.100.2/24", gatewayIp: "198.51.100.1", snat: true }],
        }),
        b.routerInterface("ri1", { router: "r1", network: "net1" }),
        b.routerInterface("ri2", { router: "r1", network: "net2" }),
      ),
    );
    w.putPort(
      b.localPort("vm4", {
        network: "net2",
        host: "h1",
        mac: "02:00:00:00:01:05",
        ips: ["10.0.1.5"],
        tunnelKey: 4,
      }),
    );
    return w;
  }

  it("routes between two networks through the replica's interfaces", () => {
    const view = viewOf(routed());
    const r = send(
      view,
      newSimContext(id("h1")),
      "vm1",
      eth(MAC1, routerInterfaceMac(id("ri1")))
        .ip4("10.0.0.11", "10.0.1.5")
        .udp(5000, 53)
        .build(),
    );
    assert.deepEqual(r.actions, [
      { kind: "set", ethSrc: parseMac(routerInterfaceMac(id("ri2"))), ethDst: parseMac("02:00:00:00:01:05") },
      { kind: "decTtl", by: 1 },
      { kind: "output", portId: id("vm4") },
    ]);
  });

  it("a floating IP at this site DNATs inbound traffic to the port's fixed address", () => {
    const w = routed();
    w.apply(
      b.upsert(
        4,
        b.floatingIp("fip", {
          router: "r1",
          site: "east",
          externalIp: "198.51.100.20",
          port: "vm4",
          fixedIp: "10.0.1.5",
        }),
      ),
    );
    const view = viewOf(w);
    const upMac = uplinkMac(id("r1"), "east");
    const r = simulate(
      view,
      eth("02:00:00:00:99:01", upMac).ip4("192.0.2.50", "198.51.100.20").tcp(33000, 22).build(),
      { portId: uplinkPortId(id("r1"), "east") },
      newSimContext(id("gw")),
    );
    const set = r.actions[0];
    assert.equal(set?.kind === "set" && set.nwDst, parseIp4("10.0.1.5"), r.dropReason ?? "");
    assert.deepEqual(r.actions.at(-1), {
      kind: "encap",
      tunnelKey: 4,
      remoteIp: "10.1.1.1",
      remotePort: 4789,
      hostId: id("h1"),
    });
  });

  it("source-NATs traffic leaving through the uplink to the uplink address", () => {
    const view = viewOf(routed());
    const ctx = newSimContext(id("h1"));
    const out = eth(MAC1, routerInterfaceMac(id("ri1")))
      .ip4("10.0.0.11", "8.8.8.8")
      .udp(5000, 53)
      .build();
    const first = send(view, ctx, "vm1", out);
    const upMac = uplinkMac(id("r1"), "east");
    const reply = simulate(
      view,
      eth("02:00:00:00:99:01", upMac)
        .arpReply("02:00:00:00:99:01", "198.51.100.1", upMac, "198.51.100.2")
        .build(),
      { portId: uplinkPortId(id("r1"), "east") },
      ctx,
    );
    const r = send(view, ctx, "vm1", out);
    const toGateway = {
      kind: "encap",
      tunnelKey: 0x100,
      remoteIp: "10.1.1.9",
      remotePort: 4789,
      hostId: id("gw"),
    };
    // The next hop is resolved by ARP out of the uplink, which lives on the gateway host.
    assert.deepEqual(first.generated[0]?.actions, [toGateway]);
    assert.equal(reply.resubmit.length, 1);
    const set = r.actions[0];
    assert.equal(set?.kind, "set");
    assert.equal(
      set?.kind === "set" && set.nwSrc,
      parseIp4("198.51.100.2"),
      "source-NATed to the uplink address",
    );
    assert.ok(set?.kind === "set" && (set.tpSrc ?? 0) >= 1024);
    assert.deepEqual(r.actions.at(-1), toGateway);
  });
});
