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
