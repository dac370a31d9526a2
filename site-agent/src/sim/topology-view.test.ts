// The view's index of ports by tunnel key, kept by each change from what it touched.
import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { TopologyBuilder } from "./topology-builder.js";
import { TopologyView } from "./topology-view.js";

const K = topologypb.TopologyKind;

test("ports by tunnel key follow keys that move, ports that go and ports written again", () => {
  const t = new TopologyBuilder();
  const h = t.host("h1", "192.168.0.1");
  const br = t.bridge();
  const a = t.vmPort(br, h, "02:00:00:00:00:01", ["10.0.0.1"]);
  const b = t.vmPort(br, h, "02:00:00:00:00:02", ["10.0.0.2"]);
  const c = t.vmPort(br, h, "02:00:00:00:00:03", ["10.0.0.3"]);
  const view = new TopologyView(t.objects, 1);
  const byKey = () =>
    new Map([...view.portsByKey].map(([key, p]) => [key, p.id] as const).sort((x, y) => x[0] - y[0]));
  assert.deepEqual(
    byKey(),
    new Map([
      [a.tunnelKey, a.id],
      [b.tunnelKey, b.id],
      [c.tunnelKey, c.id],
    ]),
  );
  const keyA = a.tunnelKey;
  // One change moves a's key to b (b listed first) and takes b's old one away.
  view.apply({
    revision: 2,
    upserts: [{ port: { ...b, tunnelKey: keyA } }, { port: { ...a, tunnelKey: 0 } }],
    deletes: [],
  });
  assert.deepEqual(
    byKey(),
    new Map([
      [keyA, b.id],
      [c.tunnelKey, c.id],
    ]),
  );
  assert.equal(view.portsByKey.get(keyA), view.ports.get(b.id), "the index holds the port's current view");
  // c written again (same key): the index moves to its new view; b deleted: its key goes.
  view.apply({
    revision: 3,
    upserts: [{ port: { ...c, interfaceName: "tap-moved" } }],
    deletes: [{ kind: K.TOPOLOGY_KIND_PORT, id: b.id }],
  });
  assert.deepEqual(byKey(), new Map([[c.tunnelKey, c.id]]));
  assert.equal(view.portsByKey.get(c.tunnelKey), view.ports.get(c.id));
  assert.equal(view.portsByKey.get(c.tunnelKey)?.raw.interfaceName, "tap-moved");
});

/** What a bridge's view holds, by ids (comparable across views). */
function bridgeSummary(view: TopologyView, id: string) {
  const b = view.bridges.get(id);
  if (!b) return undefined;
  return {
    tunnelKey: b.raw.tunnelKey,
    ports: b.ports.map((p) => p.id),
    exterior: b.exteriorPorts.map((p) => p.id),
    macs: [...b.staticMacs].map(([vlan, m]) => [vlan, [...m].map(([mac, p]) => [mac, p.id]).sort()]),
    arp: [...b.arp].sort(),
    nd: [...b.nd].sort(),
    remote: [...b.remoteSitePorts].map(([site, p]) => [site, p.id]),
  };
}

test("bridges are built when first looked up, and after changes hold what a fresh view of the same objects holds", () => {
  const t = new TopologyBuilder();
  const h = t.host("h1", "192.168.0.1");
  const a = t.bridge({ tunnelKey: 0x100001 });
  const b = t.bridge({ tunnelKey: 0x100002 });
  const r = t.router();
  t.routerInterface(r, a, "02:00:00:00:01:01", "10.0.0.1/24");
  const a1 = t.vmPort(a, h, "02:00:00:00:00:01", ["10.0.0.2", "fd00::2"]);
  const a2 = t.vmPort(a, h, "02:00:00:00:00:02", ["10.0.0.3"]);
  const b1 = t.vmPort(b, h, "02:00:00:00:00:03", ["10.0.1.2"]);
  t.macEntry(a, "02:00:00:00:09:09", a2, 7);
  t.arpEntry(b, "10.0.1.9", "02:00:00:00:09:0a");
  const view = new TopologyView(t.objects, 1);
  assert.equal(view.bridges.compiledCount, 0, "a new view builds no bridge");
  assert.equal(view.bridgeByKey(0x100001)?.id, a.id);
  assert.equal(view.bridges.compiledCount, 1, "a lookup by key builds that bridge only");
  const before = bridgeSummary(view, a.id)!;
  assert.deepEqual(
    before.ports,
    [a1.id, a2.id, t.objects.find((o) => o.port?.peerId && o.port.deviceId === a.id)!.port!.id].sort(),
  );
  assert.deepEqual(before.arp, [
    [0x0a000001, 0x020000000101],
    [0x0a000002, 0x020000000001],
    [0x0a000003, 0x020000000002],
  ]);

  // Changes to a built bridge's ports (a) and to one nobody looked up (b), and b's key moves.
  const a3 = { ...a1, id: "port-a3", mac: "02:00:00:00:00:0b", ips: ["10.0.0.11"], tunnelKey: 77 };
  const changes: topologypb.TopologyChange[] = [
    { revision: 2, upserts: [{ port: a3 }, { port: { ...a2, mac: "02:00:00:00:00:0c" } }], deletes: [] },
    {
      revision: 3,
      upserts: [{ port: { ...b1, ips: ["10.0.1.5"] } }, { bridge: { ...b, tunnelKey: 0x100003 } }],
      deletes: [{ kind: K.TOPOLOGY_KIND_PORT, id: a1.id }],
    },
  ];
  for (const c of changes) view.apply(c);
  // The same objects, as a snapshot would bring them.
  const final = new Map<string, topologypb.TopologyObject>();
  const key = (o: topologypb.TopologyObject) => {
    const [kind, v] = Object.entries(o).find(([, x]) => x !== undefined)!;
    return `${kind}/${(v as { id: string }).id}`;
  };
  for (const o of t.objects) final.set(key(o), o);
  for (const c of changes) {
    for (const o of c.upserts) final.set(key(o), o);
    for (const d of c.deletes) final.delete(`port/${d.id}`);
  }
  const fresh = new TopologyView([...final.values()], 3);
  for (const id of [a.id, b.id]) assert.deepEqual(bridgeSummary(view, id), bridgeSummary(fresh, id), id);
  assert.notDeepEqual(bridgeSummary(view, a.id), before, "a was built again");
  assert.equal(view.bridgeByKey(0x100002), undefined, "b's old key names nothing");
  assert.equal(view.bridgeByKey(0x100003)?.id, b.id);
  view.apply({ revision: 4, upserts: [], deletes: [{ kind: K.TOPOLOGY_KIND_BRIDGE, id: b.id }] });
  assert.equal(view.bridges.get(b.id), undefined);
  assert.equal(view.bridgeByKey(0x100003), undefined);
});

test("a port view parses its MAC and addresses when first read", () => {
  const t = new TopologyBuilder();
  const h = t.host("h1", "192.168.0.1");
  const br = t.bridge();
  const p = t.vmPort(br, h, "02:00:00:00:00:2a", ["10.0.0.5", "10.1.0.1/16", "fd00::5", "bad"]);
  const q = t.vmPort(br, h, "not-a-mac", []);
  const view = new TopologyView(t.objects, 1);
  const v = view.ports.get(p.id)!;
  assert.equal(v.mac, 0x02000000002a);
  assert.deepEqual(
    v.ips4.map((a) => [a.ip, a.cidr.addr, a.cidr.len]),
    [
      [0x0a000005, 0x0a000005, 32],
      [0x0a010001, 0x0a010000, 16],
    ],
  );
  assert.equal(v.ips6.length, 1);
  assert.equal(v.ips6[0]!.cidr.len, 128);
  assert.equal(v.ips4, v.ips4, "parsed once");
  assert.equal(view.ports.get(q.id)!.mac, 0, "a MAC that does not parse reads as 0");
  assert.deepEqual(view.ports.get(q.id)!.ips4, []);
});
