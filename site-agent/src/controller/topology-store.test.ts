import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import { FRAMING_OBJECTS } from "./test-support/framing-objects.js";
import { frameChange } from "./topology-store.js";

test("a change framed from its upserts' encodings is byte for byte the generated encoding", () => {
  const upserts = [...FRAMING_OBJECTS];
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
