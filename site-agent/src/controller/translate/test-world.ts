// Test support: an IntentIndex for one site plus the topology it has been told about, kept
// current by applying every delta — the way the controller's database follows the translation.
import assert from "node:assert/strict";
import type { intentpb, topologypb } from "@isthmus/schema";
import { refKey, topologyRefOf } from "./derived-set.js";
import { IntentIndex } from "./intent-index.js";
import { translateAll, translateChange, translateHost, translateLocalPort } from "./translate.js";
import type { LocalPortBinding, TopologyDelta } from "./view.js";

export class TestWorld {
  readonly index: IntentIndex;
  readonly topology = new Map<string, topologypb.TopologyObject>();
  lastDelta: TopologyDelta = { upserts: [], deletes: [], problems: [] };

  constructor(readonly site: string) {
    this.index = new IntentIndex(site);
  }

  private nextKey = 0x100;

  /** Applies a change the way the controller does: uplink tunnel keys first, then translation. */
  apply(change: intentpb.IntentChange): TopologyDelta {
    const prior = this.index.applyIntentChange(change);
    this.index.syncUplinkTunnelKeys(change, () => this.nextKey++);
    return this.take(translateChange(this.index, change, prior));
  }
  putPort(b: LocalPortBinding): TopologyDelta {
    return this.take(translateLocalPort(this.index, b.id, this.index.putLocalPort(b)));
  }
  removePort(portId: string): TopologyDelta {
    return this.take(translateLocalPort(this.index, portId, this.index.removeLocalPort(portId)));
  }
  putHost(h: topologypb.Host): TopologyDelta {
    return this.take(translateHost(this.index, h.id, this.index.putHost(h)));
  }
  removeHost(hostId: string): TopologyDelta {
    return this.take(translateHost(this.index, hostId, this.index.removeHost(hostId)));
  }

  private take(delta: TopologyDelta): TopologyDelta {
    for (const ref of delta.deletes) {
      assert.ok(this.topology.delete(refKey(ref)), `delta deletes ${refKey(ref)}, which was never derived`);
    }
    for (const o of delta.upserts) this.topology.set(refKey(topologyRefOf(o)), o);
    this.lastDelta = delta;
    return delta;
  }

  /** Asserts that the incrementally maintained topology equals a full translation. */
  assertMatchesFull(context = ""): void {
    const full = translateAll(this.index).objects;
    const fullMap = new Map(full.map((o) => [refKey(topologyRefOf(o)), o]));
    const missing = [...fullMap.keys()].filter((k) => !this.topology.has(k));
    const extra = [...this.topology.keys()].filter((k) => !fullMap.has(k));
    assert.deepEqual({ missing, extra }, { missing: [], extra: [] }, `incremental ≠ full ${context}`);
    for (const [k, o] of fullMap) assert.deepEqual(this.topology.get(k), o, `object ${k} differs ${context}`);
  }

  /** Every derived object of one oneof case, e.g. all("port"). */
  all<C extends keyof topologypb.TopologyObject>(c: C): NonNullable<topologypb.TopologyObject[C]>[] {
    return [...this.topology.values()].flatMap((o) => (o[c] === undefined ? [] : [o[c]!]));
  }
}
