import assert from "node:assert/strict";
import { test } from "node:test";
import { silentLogger } from "@isthmus/schema";
import type { Upcall } from "./datapath.js";
import { MemoryPort } from "./memory-port.js";
import { udpFrame } from "./testing/frames.js";
import { UserspaceDatapath } from "./userspace-datapath.js";

test("one noisy port cannot starve another: its excess is dropped and the quiet port is served in turn", async () => {
  const dp = new UserspaceDatapath({
    tunnelIp: "127.0.0.1",
    tunnelPort: 0,
    upcallLimits: { perSource: 64, total: 1024 },
    upcallConcurrency: 1,
    log: silentLogger(),
  });
  await dp.start();
  try {
    const noisy = new MemoryPort("noisy");
    const quiet = new MemoryPort("quiet");
    dp.addPort(1, "port-noisy", noisy);
    dp.addPort(2, "port-quiet", quiet);
    const order: number[] = [];
    // A slow simulator: every miss takes a turn of the event loop and a millisecond.
    dp.onUpcall(async (u: Upcall) => {
      order.push(u.portNo);
      await new Promise((r) => setTimeout(r, 1));
      return { actions: { outputs: [], dropReason: "test" } };
    });
    const frame = (port: number) =>
      udpFrame({
        srcMac: "02:00:00:00:00:01",
        dstMac: "02:00:00:00:00:02",
        srcIp: "10.0.0.1",
        dstIp: "10.0.0.2",
        sport: port,
        dport: 9,
      });
    noisy.inject(...Array.from({ length: 300 }, (_, i) => frame(1000 + i)));
    quiet.inject(frame(1));
    for (let i = 0; i < 500 && order.length < 65; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(order.length, 65, "64 queued noisy misses + 1 quiet");
    assert.ok(order.indexOf(2) <= 2, `quiet port served at position ${order.indexOf(2)} of ${order.length}`);
    assert.equal(dp.stats().drops.get("upcall_queue_full"), 300 - 64);
    assert.equal(dp.stats().upcallQueueDepth, 0);
  } finally {
    await dp.stop();
  }
});
