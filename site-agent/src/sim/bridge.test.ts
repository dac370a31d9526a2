import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { formatIp6, parseIp4, parseMac } from "../packets/addr.js";
import { checksumError } from "../packets/checksum.js";
import { parsePacket } from "../packets/packet.js";
import { eth } from "../packets/packet-dsl.js";
import { F } from "./flow-match.js";
import { simulate } from "./simulate.js";
import { newSimContext, TopologyBuilder } from "./topology-builder.js";
import { TopologyView } from "./topology-view.js";

const MAC1 = "02:00:00:00:00:01";
const MAC2 = "02:00:00:00:00:02";
const MAC3 = "02:00:00:00:00:03";

function twoHosts() {
  const t = new TopologyBuilder();
  const h1 = t.host("h1", "192.168.0.1");
  const h2 = t.host("h2", "192.168.0.2");
  const br = t.bridge();
  const vm1 = t.vmPort(br, h1, MAC1, ["10.0.0.1"]);
  const vm2 = t.vmPort(br, h1, MAC2, ["10.0.0.2"]);
  const vm3 = t.vmPort(br, h2, MAC3, ["10.0.0.3"]);
  return { t, h1, h2, br, vm1, vm2, vm3 };
}

test("bridge: unicast to a VM port on the same host is a local output, mask covers dst MAC", () => {
  const { t, br, vm1, vm2 } = twoHosts();
  const view = new TopologyView(t.objects);
  const r = simulate(
    view,
    eth(MAC1, MAC2).ip4("10.0.0.1", "10.0.0.2").udp(1, 2).build(),
    { portId: vm1.id },
    newSimContext("h1"),
  );
  assert.deepEqual(r.actions, [{ kind: "output", portId: vm2.id }]);
  assert.equal(r.cacheable, true);
  assert.ok(r.mask & F.ETH_DST);
  assert.equal(r.mask & (F.NW_SRC | F.NW_DST | F.TP_SRC | F.TP_DST), 0, "L3/L4 fields are wildcarded");
  for (const x of [`device:${br.id}`, `port:${vm1.id}`, `port:${vm2.id}`, `mac:${br.id}:${MAC2}`])
    assert.ok(r.tags.includes(x), x);
});

test("bridge: destination on another host is tunnelled with the port's key to that host", () => {
  const { t, vm1, vm3 } = twoHosts();
  const view = new TopologyView(t.objects);
  const r = simulate(
    view,
    eth(MAC1, MAC3).ip4("10.0.0.1", "10.0.0.3").tcp(1000, 80).build(),
    { portId: vm1.id },
    newSimContext("h1"),
  );
  assert.deepEqual(r.actions, [
    { kind: "encap", tunnelKey: vm3.tunnelKey, remoteIp: "192.168.0.2", remotePort: 4789, hostId: "h2" },
  ]);
  assert.ok(r.tags.includes("host:h2"));
  assert.ok(vm3.tunnelKey > 0);
});

test("bridge: tunnel ingress with a site-local key delivers to the named local port without simulating", () => {
  const { t, vm3 } = twoHosts();
  const view = new TopologyView(t.objects);
  const frame = eth(MAC1, MAC3).ip4("10.0.0.1", "10.0.0.3").udp(5, 6).build();
  const r = simulate(view, frame, { tunnelKey: vm3.tunnelKey }, newSimContext("h2"));
  assert.deepEqual(r.actions, [{ kind: "output", portId: vm3.id }]);
  const wrongHost = simulate(view, frame, { tunnelKey: vm3.tunnelKey }, newSimContext("h1"));
  assert.equal(wrongHost.actions[0]?.kind, "drop");
  assert.match(wrongHost.dropReason ?? "", /not bound on host h1/);
});

test("bridge: unknown unicast floods to every other exterior port, learns the source", () => {
  const { t, br, vm1, vm2, vm3 } = twoHosts();
  const view = new TopologyView(t.objects);
  const ctx = newSimContext("h1");
  const unknown = "02:00:00:00:00:99";
  const r = simulate(
    view,
    eth("02:aa:00:00:00:01", unknown).ip4("10.0.0.9", "10.0.0.99").udp(1, 2).build(),
    { portId: vm1.id },
    ctx,
  );
  const outs = r.actions.filter((a) => a.kind === "output" || a.kind === "encap");
  assert.equal(outs.length, 2);
  assert.deepEqual(outs[0], { kind: "output", portId: vm2.id });
  assert.equal(outs[1]?.kind === "encap" && outs[1].tunnelKey, vm3.tunnelKey);
  assert.ok(r.tags.includes(`flood:${br.id}`));
  assert.ok(
    r.tags.includes(`mac:${br.id}:${unknown}`),
    "learning the MAC later must invalidate this flood flow",
  );
  assert.deepEqual(r.learned, [
    { bridgeId: br.id, vlan: 0, mac: parseMac("02:aa:00:00:00:01"), portId: vm1.id },
  ]);
  assert.ok(r.invalidate.includes(`mac:${br.id}:02:aa:00:00:00:01`));

  // The learned MAC is now forwarded to without flooding.
  const back = simulate(
    view,
    eth(MAC2, "02:aa:00:00:00:01").ip4("10.0.0.2", "10.0.0.9").udp(2, 1).build(),
    { portId: vm2.id },
    ctx,
  );
  assert.deepEqual(back.actions, [{ kind: "output", portId: vm1.id }]);
  // ... until it expires.
  const later = { ...ctx, now: ctx.now + ctx.state.limits.macTtlMs + 1 };
  assert.ok(ctx.state.expire(later.now).includes(`mac:${br.id}:02:aa:00:00:00:01`));
  const flooded = simulate(
    view,
    eth(MAC2, "02:aa:00:00:00:01").ip4("10.0.0.2", "10.0.0.9").udp(2, 1).build(),
    { portId: vm2.id },
    later,
  );
  assert.ok(flooded.tags.includes(`flood:${br.id}`));
});

test("bridge: broadcast floods; a frame for the ingress port's own MAC is dropped", () => {
  const { t, vm1, vm2 } = twoHosts();
  const view = new TopologyView(t.objects);
  const bc = simulate(
    view,
    eth(MAC1, "ff:ff:ff:ff:ff:ff").ip4("10.0.0.1", "10.0.0.255").udp(1, 2).build(),
    { portId: vm1.id },
    newSimContext("h1"),
  );
  assert.equal(bc.actions.filter((a) => a.kind === "output" || a.kind === "encap").length, 2);
  const back = simulate(
    view,
    eth(MAC2, MAC1).ip4("10.0.0.2", "10.0.0.1").udp(1, 2).build(),
    { portId: vm1.id },
    newSimContext("h1"),
  );
  assert.equal(back.actions[0]?.kind, "drop");
  assert.match(back.dropReason ?? "", /behind the ingress port/);
  void vm2;
});

test("bridge: ARP request for a known VM address is answered by proxy, not flooded or cached", () => {
  const { t, vm1 } = twoHosts();
  const view = new TopologyView(t.objects);
  const r = simulate(
    view,
    eth(MAC1, "ff:ff:ff:ff:ff:ff").arpRequest(MAC1, "10.0.0.1", "10.0.0.3").build(),
    { portId: vm1.id },
    newSimContext("h1"),
  );
  assert.equal(r.cacheable, false);
  assert.equal(r.actions[0]?.kind, "drop");
  assert.equal(r.generated.length, 1);
  const g = r.generated[0]!;
  assert.deepEqual(g.actions, [{ kind: "output", portId: vm1.id }]);
  const reply = parsePacket(g.frame);
  assert.equal(reply.error, null);
  assert.equal(reply.arpOp, 2);
  assert.equal(reply.arpSha, parseMac(MAC3));
  assert.equal(reply.ethDst, parseMac(MAC1));
});

test("bridge: ARP request for an unknown address floods", () => {
  const { t, vm1 } = twoHosts();
  const view = new TopologyView(t.objects);
  const r = simulate(
    view,
    eth(MAC1, "ff:ff:ff:ff:ff:ff").arpRequest(MAC1, "10.0.0.1", "10.0.0.77").build(),
    { portId: vm1.id },
    newSimContext("h1"),
  );
  assert.equal(r.generated.length, 0);
  assert.equal(r.actions.filter((a) => a.kind === "output" || a.kind === "encap").length, 2);
});

test("bridge: ARP proxy from an ArpEntry, and a MacEntry steers unicast to its port", () => {
  const { t, br, vm1, vm2 } = twoHosts();
  t.arpEntry(br, "10.0.0.50", "02:00:00:00:00:50");
  t.macEntry(br, "02:00:00:00:00:50", vm2);
  const view = new TopologyView(t.objects);
  const r = simulate(
    view,
    eth(MAC1, "ff:ff:ff:ff:ff:ff").arpRequest(MAC1, "10.0.0.1", "10.0.0.50").build(),
    { portId: vm1.id },
    newSimContext("h1"),
  );
  assert.equal(parsePacket(r.generated[0]!.frame).arpSha, parseMac("02:00:00:00:00:50"));
  const u = simulate(
    view,
    eth(MAC1, "02:00:00:00:00:50").ip4("10.0.0.1", "10.0.0.50").udp(1, 2).build(),
    { portId: vm1.id },
    newSimContext("h1"),
  );
  assert.deepEqual(u.actions, [{ kind: "output", portId: vm2.id }]);
});

test("bridge: IPv6 neighbor solicitation for a VM address gets a proxied advertisement", () => {
  const t = new TopologyBuilder();
  const h1 = t.host("h1", "192.168.0.1");
  const br = t.bridge();
  const a = t.vmPort(br, h1, MAC1, ["fd00::1"]);
  t.vmPort(br, h1, MAC2, ["fd00::2"]);
  const view = new TopologyView(t.objects);
  const ns = eth(MAC1, "33:33:ff:00:00:02")
    .ip6("fd00::1", "ff02::1:ff00:2", 255)
    .neighborSolicit("fd00::2", MAC1)
    .build();
  const r = simulate(view, ns, { portId: a.id }, newSimContext("h1"));
  assert.equal(r.generated.length, 1);
  const na = parsePacket(r.generated[0]!.frame);
  assert.equal(na.error, null);
  assert.equal(na.icmpType, 136);
  assert.equal(na.ndLinkAddr, parseMac(MAC2));
});

test("bridge: malformed frames are dropped with a reason and never cached", () => {
  const { t, vm1 } = twoHosts();
  const view = new TopologyView(t.objects);
  const r = simulate(view, new Uint8Array([1, 2, 3]), { portId: vm1.id }, newSimContext("h1"));
  assert.equal(r.cacheable, false);
  assert.match(r.dropReason ?? "", /malformed frame: ethernet/);
});

test("bridge: remote-site port tunnels with the network's global key via the gateway", () => {
  const t = new TopologyBuilder();
  const h1 = t.host("h1", "192.168.0.1");
  const gw = t.host("gw", "192.168.0.9");
  const br = t.bridge({ tunnelKey: 0x100001 });
  const vm1 = t.vmPort(br, h1, MAC1, ["10.0.0.1"]);
  const remote = t.port(br.id, 5, { hostId: gw.id, remoteSite: "paris" });
  t.macEntry(br, "02:00:00:00:0b:01", remote);
  t.remoteGateway("paris", "203.0.113.7");
  const view = new TopologyView(t.objects);
  const frame = eth(MAC1, "02:00:00:00:0b:01").ip4("10.0.0.1", "10.0.0.200").udp(1, 2).build();
  const atHost = simulate(view, frame, { portId: vm1.id }, newSimContext("h1"));
  assert.deepEqual(atHost.actions, [
    { kind: "encap", tunnelKey: 0x100001, remoteIp: "192.168.0.9", remotePort: 4789, hostId: "gw" },
  ]);
  const atGateway = simulate(view, frame, { tunnelKey: 0x100001 }, newSimContext("gw"));
  assert.deepEqual(atGateway.actions, [
    { kind: "encap", tunnelKey: 0x100001, remoteIp: "203.0.113.7", remotePort: 4789, hostId: "site:paris" },
  ]);
  // From the remote site, the gateway delivers by inner MAC to the VM's host.
  const inbound = simulate(
    view,
    eth("02:00:00:00:0b:01", MAC1).ip4("10.0.0.200", "10.0.0.1").udp(2, 1).build(),
    { tunnelKey: 0x100001, fromSite: "paris" },
    newSimContext("gw"),
  );
  assert.deepEqual(inbound.actions, [
    { kind: "encap", tunnelKey: vm1.tunnelKey, remoteIp: "192.168.0.1", remotePort: 4789, hostId: "h1" },
  ]);
});

test("bridge: learning is per VLAN; access-port VLANs limit flooding", () => {
  const t = new TopologyBuilder();
  const h1 = t.host("h1", "192.168.0.1");
  const br = t.bridge();
  const a10 = t.vmPort(br, h1, MAC1, [], { vlan: 10 });
  const b10 = t.vmPort(br, h1, MAC2, [], { vlan: 10 });
  const c20 = t.vmPort(br, h1, MAC3, [], { vlan: 20 });
  const trunk = t.vmPort(br, h1, "02:00:00:00:00:04", []);
  const view = new TopologyView(t.objects);
  const ctx = newSimContext("h1");
  const x = "02:00:00:00:0a:0a";
  const f = simulate(
    view,
    eth(x, "ff:ff:ff:ff:ff:ff").ip4("10.0.0.10", "10.0.0.255").udp(1, 2).build(),
    { portId: a10.id },
    ctx,
  );
  const outs = f.actions.flatMap((a) => (a.kind === "output" ? [a.portId] : []));
  assert.deepEqual(outs.sort(), [b10.id, trunk.id].sort(), "not to the VLAN 20 access port");
  assert.equal(f.learned[0]?.vlan, 10);
  // x is known on VLAN 10 only: a tagged frame for it on VLAN 20 from the trunk floods.
  const v10 = simulate(
    view,
    eth("02:00:00:00:00:04", x).vlan(10).ip4("10.0.0.4", "10.0.0.10").udp(1, 2).build(),
    { portId: trunk.id },
    ctx,
  );
  assert.deepEqual(v10.actions, [{ kind: "output", portId: a10.id }]);
  const v20 = simulate(
    view,
    eth("02:00:00:00:00:04", x).vlan(20).ip4("10.0.0.4", "10.0.0.10").udp(1, 2).build(),
    { portId: trunk.id },
    ctx,
  );
  assert.deepEqual(
    v20.actions.flatMap((a) => (a.kind === "output" ? [a.portId] : [])),
    [c20.id],
  );
});

/** Ports a and b on one bridge; b's outbound filter DNATs everything to 10.9.9.9 (1:1, no ports). */
function dnatToB() {
  const t = new TopologyBuilder();
  const h1 = t.host("h1", "192.168.0.1");
  const br = t.bridge();
  const nat = t.chain();
  t.rule(
    nat,
    topologypb.RuleAction.RULE_ACTION_DNAT,
    {},
    {
      natTargets: [{ ipStart: "10.9.9.9", ipEnd: "10.9.9.9", portStart: 0, portEnd: 0 }],
    },
  );
  const a = t.vmPort(br, h1, MAC1, []);
  const b = t.vmPort(br, h1, MAC2, [], { outboundFilterId: nat.id });
  return { t, h1, br, a, b };
}

test("bridge: a flood port's filter rewrite applies to that port only", () => {
  const { t, h1, br, a, b } = dnatToB();
  const c = t.vmPort(br, h1, MAC3, []);
  const view = new TopologyView(t.objects);
  const r = simulate(
    view,
    eth(MAC1, "ff:ff:ff:ff:ff:ff").ip4("10.0.0.1", "10.0.0.255").udp(1, 2).build(),
    { portId: a.id },
    newSimContext("h1"),
  );
  assert.deepEqual(r.actions, [
    { kind: "set", nwDst: parseIp4("10.9.9.9") },
    { kind: "output", portId: b.id },
    { kind: "set", nwDst: parseIp4("10.0.0.255") },
    { kind: "output", portId: c.id },
  ]);
});

test("bridge: MAC learning is bounded, and a lapsed entry stops steering frames before expiry runs", () => {
  const { t, br, vm1, vm2 } = twoHosts();
  const view = new TopologyView(t.objects);
  const ctx = newSimContext("h1", undefined, { macEntries: 2 });
  const from = (src: string, port: string) =>
    simulate(view, eth(src, MAC3).ip4("10.0.0.9", "10.0.0.3").udp(1, 2).build(), { portId: port }, ctx);
  assert.equal(from("02:aa:00:00:00:01", vm1.id).learned.length, 1);
  assert.equal(from("02:aa:00:00:00:02", vm1.id).learned.length, 1);
  const third = from("02:aa:00:00:00:03", vm1.id);
  assert.deepEqual(third.learned, [], "the table is full");
  assert.equal(ctx.state.macs.size, 2);
  assert.equal(ctx.state.macs.refused, 1);
  assert.equal(third.actions.at(-1)?.kind, "encap", "the frame itself is still forwarded");
  // A frame to the refused MAC floods; one to a learned MAC does not.
  const to = (dst: string) =>
    simulate(view, eth(MAC2, dst).ip4("10.0.0.2", "10.0.0.9").udp(1, 2).build(), { portId: vm2.id }, ctx);
  assert.ok(to("02:aa:00:00:00:03").tags.includes(`flood:${br.id}`));
  assert.deepEqual(to("02:aa:00:00:00:01").actions, [{ kind: "output", portId: vm1.id }]);
  // Past its idle time the entry no longer counts, though the expiry timer has not run.
  ctx.now += ctx.state.limits.macTtlMs;
  assert.ok(to("02:aa:00:00:00:01").tags.includes(`flood:${br.id}`));
});

test("bridge: a VM's own ARP probe and duplicate address detection are not answered; another's DAD gets an NA to all nodes", () => {
  const t = new TopologyBuilder();
  const h1 = t.host("h1", "192.168.0.1");
  const br = t.bridge();
  const a = t.vmPort(br, h1, MAC1, ["fd00::1", "10.0.0.1"]);
  t.vmPort(br, h1, MAC2, ["fd00::2"]);
  const view = new TopologyView(t.objects);
  const send = (f: Uint8Array) => simulate(view, f, { portId: a.id }, newSimContext("h1"));
  const ownDad = send(
    eth(MAC1, "33:33:ff:00:00:01").ip6("::", "ff02::1:ff00:1", 255).neighborSolicit("fd00::1", MAC1).build(),
  );
  assert.equal(ownDad.generated.length, 0, "no advertisement telling the VM its own address is taken");
  assert.equal(ownDad.actions.filter((x) => x.kind === "output").length, 1, "flooded like any multicast");
  const probe = send(eth(MAC1, "ff:ff:ff:ff:ff:ff").arpRequest(MAC1, "0.0.0.0", "10.0.0.1").build());
  assert.equal(probe.generated.length, 0);
  // Duplicate address detection for an address another VM holds: the NA goes to all nodes.
  const dad = send(
    eth(MAC1, "33:33:ff:00:00:02").ip6("::", "ff02::1:ff00:2", 255).neighborSolicit("fd00::2", MAC1).build(),
  );
  const na = parsePacket(dad.generated[0]!.frame);
  assert.equal(na.error, null);
  assert.equal(checksumError(na), null);
  assert.equal(formatIp6(na.nwDst6), "ff02::1");
  assert.equal(na.ethDst, parseMac("33:33:00:00:00:01"));
  assert.equal(na.buf[na.l4Off + 4]! & 0x40, 0, "not solicited");
  assert.equal(na.ndLinkAddr, parseMac(MAC2));
  // An ordinary solicitation is answered to its sender, solicited.
  const ns = send(
    eth(MAC1, "33:33:ff:00:00:02")
      .ip6("fd00::1", "ff02::1:ff00:2", 255)
      .neighborSolicit("fd00::2", MAC1)
      .build(),
  );
  const reply = parsePacket(ns.generated[0]!.frame);
  assert.equal(formatIp6(reply.nwDst6), "fd00::1");
  assert.equal(reply.buf[reply.l4Off + 4]! & 0x40, 0x40);
});

test("bridge: a rewrite to the value the packet already has puts that field in the mask", () => {
  const { t, a, b } = dnatToB();
  const view = new TopologyView(t.objects);
  const send = (dst: string) =>
    simulate(
      view,
      eth(MAC1, MAC2).ip4("10.0.0.1", dst).udp(1, 2).build(),
      { portId: a.id },
      newSimContext("h1"),
    );
  const other = send("10.0.0.2");
  assert.deepEqual(other.actions, [
    { kind: "set", nwDst: parseIp4("10.9.9.9") },
    { kind: "output", portId: b.id },
  ]);
  assert.equal(other.mask & F.NW_DST, 0, "a rewrite alone does not read the address");
  const already = send("10.9.9.9");
  assert.deepEqual(already.actions, [{ kind: "output", portId: b.id }]);
  assert.ok(already.mask & F.NW_DST, "without a set, this flow holds only for packets already to 10.9.9.9");
  assert.equal(already.dstBits, 32);
});
