// An agent's first snapshot, taken the way the agent takes it: its own watch client (channel
// settings, parts assembled) into its topology store. For measuring: the propagation benchmark
// and the controller's snapshot profile time the same path.
import { silentLogger, type topologypb } from "@isthmus/schema";
import { TopologyStore } from "./topology-store.js";
import { TopologyWatchClient } from "./topology-watch-client.js";

export interface FirstSnapshot {
  /** From the Watch call to the snapshot applied to the store. */
  ms: number;
  snapshot: topologypb.TopologySnapshot;
  /** Messages the snapshot arrived in. */
  parts: number;
}

export function firstSnapshot(
  address: string,
  hostId: string,
  token?: string,
  timeoutMs = 120_000,
): Promise<FirstSnapshot> {
  const store = new TopologyStore();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.stop();
      reject(new Error(`no snapshot within ${timeoutMs} ms (${client.lastError || "no error"})`));
    }, timeoutMs);
    const client: TopologyWatchClient = new TopologyWatchClient({
      address,
      hostId,
      token: token ? () => token : undefined,
      log: silentLogger(),
      sink: {
        get revision() {
          return store.revision;
        },
        get ready() {
          return store.ready;
        },
        applySnapshot(snapshot) {
          store.applySnapshot(snapshot);
          const ms = performance.now() - t0;
          clearTimeout(timer);
          client.stop();
          resolve({ ms, snapshot, parts: client.stats.snapshotMessages });
        },
        applyChange: (c) => store.applyChange(c),
      },
    });
    const t0 = performance.now();
    client.start();
  });
}
