// The flow-setup probe's variant syntax (which agents busy-poll, node flags) and the busy-poll
// cost it reports (what the agents' counters moved by during the measured flows).
import assert from "node:assert/strict";
import { test } from "node:test";
import { busyPollCost, parseFlowSetupVariants, variantKernelConfig, variantName } from "./datapath-kernel.js";

test("flow-setup variants: ring or veth, busy polling on both agents or the sender only, node flags", () => {
  const v = parseFlowSetupVariants(
    "ring; ring poll=5000 ;veth --max-semi-space-size=16;ring poll-sender=3000",
  );
  assert.deepEqual(
    v.map((x) => variantName(x)),
    ["ring", "ring poll=5000", "veth --max-semi-space-size=16", "ring poll-sender=3000"],
  );
  assert.deepEqual(variantKernelConfig(v[0]!), { both: {}, sender: {} });
  assert.deepEqual(variantKernelConfig(v[1]!), { both: { upcallBusyPollUs: 5000 }, sender: {} });
  assert.deepEqual(variantKernelConfig(v[2]!), { both: { upcallRing: false }, sender: {} });
  assert.deepEqual(v[2]!.nodeArgs, ["--max-semi-space-size=16"]);
  assert.deepEqual(variantKernelConfig(v[3]!), { both: {}, sender: { upcallBusyPollUs: 3000 } });
});

test("flow-setup variants: a bad poll= or busy polling without the ring is refused, naming it", () => {
  assert.throws(() => parseFlowSetupVariants("ring poll=-1"), /"poll=-1": poll= takes whole µs/);
  assert.throws(() => parseFlowSetupVariants("ring poll=2.5"), /"poll=2.5"/);
  assert.throws(() => parseFlowSetupVariants("veth poll=1000"), /busy polling needs the ring/);
  assert.throws(() => parseFlowSetupVariants("tap"), /variant "tap" must be ring or veth/);
  assert.throws(() => parseFlowSetupVariants("ring rt=1"), /rt= needs poll=/);
  assert.throws(() => parseFlowSetupVariants("ring poll=10 rt=100"), /"rt=100": rt= takes a priority 1-99/);
});

test("busy-poll cost: what each agent's counters and CPU time moved by during the flows", () => {
  const ring = (pollMs: number, windows: number, polled: number, woken: number) => ({
    busyPollUs: 5000,
    pollWindows: windows,
    pollPreempted: windows >> 1,
    pollMs,
    recordsPolled: polled,
    recordsWoken: woken,
  });
  const report = (r: ReturnType<typeof ring>, cpuMs: number) => ({
    total: 0,
    fromMiss: [],
    fromRead: [],
    stages: {},
    gcMs: [],
    gcPauses: [],
    upcallRing: r,
    cpuMs,
  });
  const c = busyPollCost(
    [report(ring(100, 3, 10, 5), 1000), report(ring(50, 2, 1, 4), 500)],
    [report(ring(2600, 13, 900, 105), 3700), report(ring(1050, 40, 31, 44), 1400)],
    2500,
  );
  assert.deepEqual(c, {
    windowUs: 5000,
    wallMs: 2500,
    agents: [
      { pollMs: 2500, windows: 10, preempted: 5, polled: 890, woken: 100, cpuMs: 2700 },
      { pollMs: 1000, windows: 38, preempted: 19, polled: 30, woken: 40, cpuMs: 900 },
    ],
  });
  // Agents without ring counters (the veth): nothing to report.
  const { upcallRing: _, ...veth } = report(ring(0, 0, 0, 0), 0);
  assert.equal(busyPollCost([veth, veth], [veth, veth], 1000), undefined);
});
