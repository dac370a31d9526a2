import assert from "node:assert/strict";
import { test } from "node:test";
import { silentLogger } from "@isthmus/schema";
import type { Upcall, UpcallDecision, UpcallHandler } from "./datapath.js";
import type { FlowActions } from "./flow-actions.js";
import { maskFromFields } from "./flow-key.js";
import { DEFAULT_FLOW_LIMITS, type Flow, FlowTable } from "./flow-table.js";
import { udpFrame } from "./testing/frames.js";
import { UpcallPump, type UpcallPumpSettings } from "./upcall-pump.js";

const toPort2: FlowActions = { outputs: [{ kind: "port", portNo: 2 }] };

function frame(sport: number): Buffer {
  return udpFrame({
    srcMac: "02:00:00:00:00:01",
    dstMac: "02:00:00:00:00:02",
    srcIp: "10.0.0.1",
    dstIp: "10.0.0.2",
    sport,
    dport: 9,
  });
}

/** A pump over a real flow table whose hooks record what the datapath would have been asked. */
function rig(settings: Partial<UpcallPumpSettings> = {}) {
  const now = 1000;
  const table = new FlowTable(DEFAULT_FLOW_LIMITS);
  const seen = {
    outputs: [] as { sport: number; actions: FlowActions }[],
    flushes: 0,
    drops: [] as string[],
    hits: [] as Flow[],
    installed: [] as { flow: Flow; arrivedAt: number }[],
  };
  const pump = new UpcallPump(
    table,
    () => now,
    { log: silentLogger(), ...settings },
    {
      output: (f, actions) => seen.outputs.push({ sport: f.readUInt16BE(34), actions }),
      flush: () => seen.flushes++,
      countDrop: (r) => seen.drops.push(r),
      flowHit: (flow) => seen.hits.push(flow),
      flowInstalled: (flow, _u, t) => seen.installed.push({ flow, arrivedAt: t.arrivedAt }),
    },
  );
  return { pump, table, seen };
}

/** Installs a flow matching the ingress port and UDP source port. */
function installing(actions: FlowActions): UpcallDecision {
  return { actions, install: { mask: maskFromFields(["inPort", "tpSrc"]), tags: ["t"] } };
}

const turn = () => new Promise((r) => setImmediate(r));

test("a miss is simulated once, installed and output; the next packet of the flow hits without an upcall", async () => {
  const { pump, table, seen } = rig();
  const calls: Upcall[] = [];
  pump.setHandler((u) => {
    calls.push(u);
    return installing(toPort2);
  });
  const before = performance.now();
  pump.offer(frame(1000), 1, 0, false);
  assert.equal(pump.depth, 1, "queued until the next turn");
  await turn();
  assert.equal(calls.length, 1);
  assert.equal(calls[0]!.portNo, 1);
  assert.equal(pump.upcalls, 1);
  assert.equal(table.size, 1);
  assert.equal(seen.installed.length, 1);
  assert.ok(seen.installed[0]!.arrivedAt >= before && seen.installed[0]!.arrivedAt <= performance.now());
  assert.equal(seen.installed[0]!.flow.packets, 1, "the upcalled packet counts on its flow");
  assert.deepEqual(seen.outputs, [{ sport: 1000, actions: toPort2 }]);
  assert.ok(seen.flushes >= 1);

  pump.offer(frame(1000), 1, 0, false);
  assert.equal(pump.depth, 0, "a hit is not queued");
  assert.equal(pump.arrivalHits, 1);
  assert.equal(seen.hits.length, 1);
  assert.equal(seen.outputs.length, 2);
  await turn();
  assert.equal(calls.length, 1, "no second upcall");
});

test("packets of one flow queued behind its first are output by the installed flow, not re-simulated", async () => {
  const { pump, seen } = rig();
  let calls = 0;
  pump.setHandler(() => {
    calls++;
    return installing(toPort2);
  });
  for (let i = 0; i < 5; i++) pump.offer(frame(2000), 1, 0, false);
  await turn();
  assert.equal(calls, 1);
  assert.equal(seen.outputs.length, 5);
  assert.equal(seen.hits.length, 4, "the four waiting packets matched on re-check");
  assert.equal(pump.arrivalHits, 0, "re-checks after queueing are not arrival hits");
});

test("no more than `upcallConcurrency` asynchronous upcalls are in flight, and all complete", async () => {
  const { pump, seen } = rig({ upcallConcurrency: 2 });
  let inFlight = 0;
  let maxInFlight = 0;
  pump.setHandler(async () => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await turn();
    inFlight--;
    return installing(toPort2);
  });
  for (let i = 0; i < 7; i++) pump.offer(frame(3000 + i), 1, 0, false);
  for (let i = 0; i < 100 && seen.outputs.length < 7; i++) await turn();
  assert.equal(seen.outputs.length, 7);
  assert.equal(maxInFlight, 2);
  assert.equal(pump.upcalls, 7);
  assert.equal(pump.depth, 0);
});

test("a failing handler drops only its packet (counted) and the pump keeps going", async () => {
  const { pump, seen } = rig({ upcallConcurrency: 1 });
  const handler: UpcallHandler = (u) => {
    const sport = u.frame.readUInt16BE(34);
    if (sport === 1) throw new Error("sync failure");
    if (sport === 2) return Promise.reject(new Error("async failure"));
    return Promise.resolve(installing(toPort2));
  };
  pump.setHandler(handler);
  for (const s of [1, 2, 3]) pump.offer(frame(s), 1, 0, false);
  for (let i = 0; i < 100 && seen.outputs.length < 1; i++) await turn();
  assert.deepEqual(seen.drops, ["upcall_error", "upcall_error"]);
  assert.deepEqual(
    seen.outputs.map((o) => o.sport),
    [3],
  );
});

test("bounds and bad input: malformed frames, full queues, a removed port, no handler, traced packets", async () => {
  const { pump, table, seen } = rig({ upcallLimits: { perSource: 2, total: 3 } });
  pump.offer(Buffer.alloc(5), 1, 0, false);
  assert.deepEqual(seen.drops, ["malformed_frame"]);

  for (const s of [1, 2, 3]) pump.offer(frame(s), 1, 0, false); // port 1 holds 2
  pump.offer(frame(4), 2, 0, false);
  pump.offer(frame(5), 3, 0, false); // total 3 reached
  assert.deepEqual(seen.drops.slice(1), ["upcall_queue_full", "upcall_queue_full"]);
  assert.equal(pump.depth, 3);
  pump.dropPort(1);
  assert.equal(pump.depth, 1);
  await turn();
  assert.deepEqual(seen.drops.slice(3), ["no_upcall_handler"]);

  // Traced packets are simulated every time and never installed.
  let calls = 0;
  pump.setHandler(() => {
    calls++;
    return installing(toPort2);
  });
  pump.offer(frame(9), 1, 0, true);
  pump.offer(frame(9), 1, 0, true);
  await turn();
  assert.equal(calls, 2);
  assert.equal(table.size, 0);
  assert.equal(seen.outputs.length, 2);

  pump.stop();
  pump.offer(frame(10), 1, 0, false);
  await turn();
  assert.equal(calls, 2, "a stopped pump hands nothing to the handler");
});

test("upcallConcurrency must be a whole number ≥ 1", () => {
  assert.throws(
    () =>
      new UpcallPump(
        new FlowTable(DEFAULT_FLOW_LIMITS),
        () => 0,
        { log: silentLogger(), upcallConcurrency: 0 },
        {
          output() {},
          flush() {},
          countDrop() {},
        },
      ),
    /upcallConcurrency 0/,
  );
});
