import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { frameChange } from "./topology-store.js";

test("a change framed from its upserts' encodings is byte for byte the generated encoding", () => {
  const upserts: topologypb.TopologyObject[] = [
    { bridge: topologypb.Bridge.fromPartial({ id: "b1", name: "net", tunnelKey: 0x100001 }) },
    // Bodies with 1-, 2- and 3-byte length prefixes.
    { ipAddrGroup: { id: "g", name: "sg", addresses: Array.from({ length: 40 }, (_, i) => `10.0.0.${i}`) } },
    {
      ipAddrGroup: {
        id: "h",
        name: "big",
        addresses: Array.from({ length: 2000 }, (_, i) => `10.1.${i >> 8}.${i & 255}`),
      },
    },
  ];
  const deletes: topologypb.TopologyRef[] = [
    { kind: topologypb.TopologyKind.TOPOLOGY_KIND_RULE, id: "r1" },
    { kind: topologypb.TopologyKind.TOPOLOGY_KIND_PORT, id: "p".repeat(300) },
  ];
  const bodies = upserts.map((o) => Buffer.from(topologypb.TopologyObject.encode(o).finish()));
  const cases: [topologypb.TopologyObject[], topologypb.TopologyRef[]][] = [
    [upserts, deletes],
    [upserts, []],
    [[], deletes],
  ];
  for (const [u, d] of cases) {
    const expected = Buffer.from(
      topologypb.TopologyChange.encode({ revision: 0, upserts: u, deletes: d }).finish(),
    );
    const got = frameChange(bodies.slice(0, u.length), d);
    assert.ok(got.equals(expected), `framed ${u.length} upserts and ${d.length} deletes`);
    assert.deepEqual(topologypb.TopologyChange.decode(got), topologypb.TopologyChange.decode(expected));
    assert.equal(topologypb.TopologyChange.decode(got).upserts.length, u.length);
  }
});
