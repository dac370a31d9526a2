// The simulation over topology produced by the site controller's translation (not hand-built):
// checks that the two agree on conventions (anti-spoofing, stateful groups, NAT rules).
import assert from "node:assert/strict";
import { test } from "node:test";
import { derivedId } from "../controller/translate/ids.js";
import * as b from "../controller/translate/intent-builders.js";
import { TestWorld } from "../controller/translate/test-world.js";
import { parseIp4, parseMac } from "../packets/addr.js";
import { TCP_ACK, TCP_SYN } from "../packets/encode.js";
import { parsePacket } from "../packets/packet.js";
import { eth } from "../packets/packet-dsl.js";
import type { Action, SimResult } from "./result.js";
import { simulate } from "./simulate.js";
import { newSimContext } from "./topology-builder.js";
import { TopologyView } from "./topology-view.js";

const VM = "02:00:00:00:00:05";
const EXT = "02:00:00:00:0e:01";
const outputs = (r: SimResult) => r.actions.filter((a) => a.kind === "output" || a.kind === "encap");
const setOf = (r: SimResult) =>
  r.actions.find((a): a is Extract<Action, { kind: "set" }> => a.kind === "set");

function world() {
  const w = new TestWorld("east");
  w.putHost(b.host("gw1", { gateway: true, tunnelIp: "192.0.2.9" }));
  w.putHost(b.host("h1", { tunnelIp: "192.0.2.1" }));
  w.apply(
    b.upsert(
      1,
      b.network("net1", { sites: ["east"], subnets: [{ cidr: "10.0.0.0/24", gatewayIp: "10.0.0.1" }] }),
      b.router("r1", {
        uplinks: [{ site: "east", ipCidr: "198.51.100.2/24", gatewayIp: "198.51.100.1", snat: true }],
      }),
      b.routerInterface("ri1", { router: "r1", network: "net1" }),
      b.securityGroup("web"),
      b.securityGroupRule("https-in", {
        group: "web",
        direction: "ingress",
        protocol: "tcp",
        ports: [443, 443],
      }),
      b.securityGroupRule("all-out", { group: "web", direction: "egress" }),
    ),
  );
  w.putPort(
    b.localPort("vm1", {
      network: "net1",
      host: "h1",
      mac: VM,
      ips: ["10.0.0.5"],
      groups: ["web"],
      tunnelKey: 5,
    }),
  );
  const view = new TopologyView([...w.topology.values()]);
  const vm = view.ports.get(b.id("vm1"))!;
  const up = [...view.ports.values()].find((p) => p.type === 4)!;
  const rif = [...view.ports.values()].find((p) => p.type === 3)!;
  const routerId = up.deviceId;
  return { w, view, vm, up, rif, routerId };
}

test("translated: the VM's ARP for its gateway passes anti-spoofing and is proxied", () => {
  const { view, vm, rif } = world();
  const r = simulate(
    view,
    eth(VM, "ff:ff:ff:ff:ff:ff").arpRequest(VM, "10.0.0.5", "10.0.0.1").build(),
    { portId: vm.id },
    newSimContext(b.id("h1")),
  );
  assert.equal(r.generated.length, 1, r.dropReason ?? "");
  assert.equal(parsePacket(r.generated[0]!.frame).arpSha, rif.mac);
  const spoofed = simulate(
    view,
    eth(VM, "ff:ff:ff:ff:ff:ff").arpRequest(VM, "10.0.0.99", "10.0.0.1").build(),
    { portId: vm.id },
    newSimContext(b.id("h1")),
  );
  assert.match(spoofed.dropReason ?? "", /dropped by rule/);
});

test("translated: an uplink port without a site-local tunnel key cannot be reached from other hosts", () => {
  // Uplink keys come from the controller (IntentView.tunnelKeyOf; the test world allocates one).
  // Until the controller has allocated it, a VM's host drops traffic for the uplink naming the port.
  const { view, vm, up, rif, routerId } = world();
  assert.ok(up.raw.tunnelKey > 0, "the test world allocated the uplink a key");
  view.apply({ revision: 9, upserts: [{ port: { ...up.raw, tunnelKey: 0 } }], deletes: [] });
  const h1 = newSimContext(b.id("h1"));
  h1.state.arp.learn(routerId, parseIp4("198.51.100.1"), parseMac(EXT), h1.now);
  const out = simulate(
    view,
    eth(VM, formatMacOf(rif.mac)).ip4("10.0.0.5", "8.8.8.8").tcp(40000, 80, TCP_SYN).build(),
    { portId: vm.id },
    h1,
  );
  assert.match(out.dropReason ?? "", new RegExp(`port ${up.id} on host .* has no tunnel key`));
});

test("translated: outbound connection is SNATed to the uplink, allowed by the group, reply reverse-NATed", () => {
  const { view, vm, up: up0, rif, routerId } = world();
  // As the controller will once it allocates uplink keys.
  view.apply({ revision: 9, upserts: [{ port: { ...up0.raw, tunnelKey: 0x0ffff0 } }], deletes: [] });
  const up = view.ports.get(up0.id)!;
  const h1 = newSimContext(b.id("h1"));
  h1.state.arp.learn(routerId, parseIp4("198.51.100.1"), parseMac(EXT), h1.now);
  const out = simulate(
    view,
    eth(VM, formatMacOf(rif.mac)).ip4("10.0.0.5", "8.8.8.8").tcp(40000, 80, TCP_SYN).build(),
    { portId: vm.id },
    h1,
  );
  assert.equal(setOf(out)?.nwSrc, parseIp4("198.51.100.2"), out.dropReason ?? JSON.stringify(out.actions));
  assert.deepEqual(outputs(out), [
    { kind: "encap", tunnelKey: 0x0ffff0, remoteIp: "192.0.2.9", remotePort: 4789, hostId: b.id("gw1") },
  ]);

  const gw = newSimContext(b.id("gw1"));
  for (const c of out.conntrack)
    gw.state.conntrack.put({ key: c.key, zoneId: c.zoneId, expiresAt: c.expiresAt });
  for (const n of out.nat) gw.state.nat.put({ ...n });
  const back = simulate(
    view,
    eth(EXT, formatMacOf(up.mac))
      .ip4("8.8.8.8", "198.51.100.2")
      .tcp(80, setOf(out)!.tpSrc!, TCP_SYN | TCP_ACK)
      .build(),
    { portId: up.id },
    gw,
  );
  assert.equal(setOf(back)?.nwDst, parseIp4("10.0.0.5"), back.dropReason ?? "");
  assert.deepEqual(outputs(back), [
    { kind: "encap", tunnelKey: 5, remoteIp: "192.0.2.1", remotePort: 4789, hostId: b.id("h1") },
  ]);

  // A new connection from outside to the uplink address is not let in.
  const unsolicited = simulate(
    view,
    eth(EXT, formatMacOf(up.mac)).ip4("8.8.8.8", "198.51.100.2").tcp(80, 41000, TCP_SYN).build(),
    { portId: up.id },
    gw,
  );
  assert.equal(outputs(unsolicited).length, 0);
});

test("translated: a floating IP lets an allowed connection in", () => {
  const { w, up } = world();
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
  const view = new TopologyView([...w.topology.values()]);
  const gw = newSimContext(b.id("gw1"));
  const inbound = simulate(
    view,
    eth(EXT, formatMacOf(up.mac)).ip4("203.0.113.7", "198.51.100.20").tcp(5000, 443, TCP_SYN).build(),
    { portId: up.id },
    gw,
  );
  assert.equal(setOf(inbound)?.nwDst, parseIp4("10.0.0.5"), inbound.dropReason ?? "");
  assert.deepEqual(outputs(inbound), [
    { kind: "encap", tunnelKey: 5, remoteIp: "192.0.2.1", remotePort: 4789, hostId: b.id("h1") },
  ]);
  const blocked = simulate(
    view,
    eth(EXT, formatMacOf(up.mac)).ip4("203.0.113.7", "198.51.100.20").tcp(5000, 22, TCP_SYN).build(),
    { portId: up.id },
    gw,
  );
  assert.equal(outputs(blocked).length, 0, "port 22 is not in the group");
});

function formatMacOf(m: number): string {
  return m
    .toString(16)
    .padStart(12, "0")
    .replace(/(..)(?!$)/g, "$1:");
}

test("translated: the reply of a connection to a floating IP leaves with the floating IP as source", () => {
  const { w, up, rif, routerId } = world();
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
  const view = new TopologyView([...w.topology.values()]);
  view.apply({ revision: 9, upserts: [{ port: { ...up.raw, tunnelKey: 0x0ffff0 } }], deletes: [] });
  const ctx = newSimContext(b.id("h1"));
  ctx.state.arp.learn(routerId, parseIp4("198.51.100.1"), parseMac(EXT), ctx.now);
  const inbound = simulate(
    view,
    eth(EXT, formatMacOf(up.mac)).ip4("203.0.113.7", "198.51.100.20").tcp(5000, 443, TCP_SYN).build(),
    { portId: up.id },
    ctx,
  );
  assert.equal(inbound.conntrack.length > 0, true);
  const reply = simulate(
    view,
    eth(VM, formatMacOf(rif.mac))
      .ip4("10.0.0.5", "203.0.113.7")
      .tcp(443, 5000, TCP_SYN | TCP_ACK)
      .build(),
    { portId: b.id("vm1") },
    ctx,
  );
  assert.equal(setOf(reply)?.nwSrc, parseIp4("198.51.100.20"));
});

test("translated: anti-spoofing drops a foreign MAC, IPv4 or IPv6 source and non-IP frames; DHCP and ND pass it", () => {
  const { view, vm, rif } = world();
  const ruleOf = (role: string) => derivedId(b.id("vm1"), `inbound/${role}`);
  const send = (f: Uint8Array) => simulate(view, f, { portId: vm.id }, newSimContext(b.id("h1")));
  const gwMac = formatMacOf(rif.mac);
  const droppedBy = (r: SimResult, role: string) =>
    assert.match(r.dropReason ?? "", new RegExp(ruleOf(role)), role);
  droppedBy(
    send(eth("02:00:00:00:00:66", gwMac).ip4("10.0.0.5", "8.8.8.8").udp(1, 53).build()),
    "spoofed-mac",
  );
  droppedBy(send(eth(VM, gwMac).ip4("10.0.0.66", "8.8.8.8").udp(1, 53).build()), "spoofed-ip");
  droppedBy(send(eth(VM, gwMac).ip6("fd00::66", "fd00::1").udp(1, 53).build()), "spoofed-ip");
  droppedBy(send(eth(VM, "ff:ff:ff:ff:ff:ff").etherType(0x88cc).payload("lldp").build()), "spoofed-ip");
  // A DHCP discover from 0.0.0.0 and ND from the link-local address are not anti-spoofing's to drop.
  const dhcp = send(eth(VM, "ff:ff:ff:ff:ff:ff").ip4("0.0.0.0", "255.255.255.255").udp(68, 67).build());
  assert.doesNotMatch(dhcp.dropReason ?? "", /spoofed/);
  const ns = send(
    eth(VM, "33:33:ff:00:00:01").ip6("fe80::5", "ff02::1:ff00:1").neighborSolicit("fd00::1", VM).build(),
  );
  assert.doesNotMatch(ns.dropReason ?? "", new RegExp(`${ruleOf("spoofed-ip")}|${ruleOf("spoofed-mac")}`));
  // The VM's own address passes.
  const own = send(eth(VM, gwMac).ip4("10.0.0.5", "10.0.0.1").icmpEcho().build());
  assert.doesNotMatch(own.dropReason ?? "", /spoofed|dropped by rule/);
});

test("translated: a VM behind a security group gets its gateway's echo reply and the router's ICMP errors", () => {
  const w = new TestWorld("east");
  w.putHost(b.host("h1", { tunnelIp: "192.0.2.1" }));
  w.apply(
    b.upsert(
      1,
      b.network("net1", { sites: ["east"], subnets: [{ cidr: "10.0.0.0/24", gatewayIp: "10.0.0.1" }] }),
      b.network("net2", { sites: ["east"], subnets: [{ cidr: "10.0.1.0/24", gatewayIp: "10.0.1.1" }] }),
      b.router("r1", {}),
      b.routerInterface("ri1", { router: "r1", network: "net1" }),
      b.routerInterface("ri2", { router: "r1", network: "net2" }),
      b.securityGroup("web"),
      b.securityGroupRule("ssh-in", { group: "web", direction: "ingress", protocol: "tcp", ports: [22, 22] }),
      b.securityGroupRule("all-out", { group: "web", direction: "egress" }),
    ),
  );
  const vm = (name: string, net: string, mac: string, ip: string, key: number) =>
    w.putPort(
      b.localPort(name, { network: net, host: "h1", mac, ips: [ip], groups: ["web"], tunnelKey: key }),
    );
  vm("vm1", "net1", VM, "10.0.0.5", 5);
  vm("vm2", "net2", "02:00:00:00:00:06", "10.0.1.6", 6);
  const view = new TopologyView([...w.topology.values()]);
  const vm1 = view.ports.get(b.id("vm1"))!;
  const gw = [...view.ports.values()].find(
    (p) => p.type === 3 && p.ips4.some((a) => a.ip === parseIp4("10.0.0.1")),
  )!;
  const ctx = newSimContext(b.id("h1"));
  const send = (f: Uint8Array) => simulate(view, f, { portId: vm1.id }, ctx);
  const gwMac = formatMacOf(gw.mac);
  const delivered = (r: SimResult, why: string) => {
    const g = r.generated.find((x) => x.why === why);
    assert.ok(g, `${why} generated (${r.dropReason})`);
    assert.deepEqual(g.actions, [{ kind: "output", portId: vm1.id }], `${why} reaches the VM`);
    return parsePacket(g.frame);
  };
  assert.equal(
    delivered(send(eth(VM, gwMac).ip4("10.0.0.5", "10.0.0.1").icmpEcho(3, 1).build()), "echo-reply").icmpType,
    0,
  );
  const te = delivered(
    send(eth(VM, gwMac).ip4("10.0.0.5", "10.0.1.6", { ttl: 1 }).udp(40000, 33434).build()),
    "time-exceeded",
  );
  assert.equal(te.icmpType, 11);
  const unreach = delivered(
    send(eth(VM, gwMac).ip4("10.0.0.5", "192.0.2.77").udp(40000, 53).build()),
    "unreachable",
  );
  assert.equal(unreach.icmpType, 3);
  // Replies commit nothing, and the group still refuses what nobody asked for.
  assert.equal(ctx.state.conntrack.size, 0);
  const vm2 = view.ports.get(b.id("vm2"))!;
  const rb = [...view.ports.values()].find(
    (p) => p.type === 3 && p.ips4.some((a) => a.ip === parseIp4("10.0.1.1")),
  )!;
  const unasked = simulate(
    view,
    eth("02:00:00:00:00:06", formatMacOf(rb.mac)).ip4("10.0.1.6", "10.0.0.5").icmpEcho(9, 1).build(),
    { portId: vm2.id },
    ctx,
  );
  assert.match(unasked.dropReason ?? "", /dropped by rule/);
});
