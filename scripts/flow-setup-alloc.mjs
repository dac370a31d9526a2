// Bytes allocated per new flow on one agent's miss -> install path (UpcallHandler with the real
// EngineSimulator, validateActions, flow-table install, kernel map entry), measured as heap +
// external growth over batches of new UDP flows with GC forced between batches and none during one.
// Run after `npm run build`:
//   node --expose-gc --max-semi-space-size=512 scripts/flow-setup-alloc.mjs [flows=4000]
// Prints one line per batch of flows/10; "gcsDuring" must be 0 for the number to be whole.
import { PerformanceObserver } from "node:perf_hooks";

const D = new URL("../site-agent/dist", import.meta.url).pathname;
const { TopologyBuilder } = await import(`${D}/sim/index.js`);
const { EngineSimulator } = await import(`${D}/agent/sim-adapter.js`);
const { UpcallHandler } = await import(`${D}/agent/upcall-handler.js`);
const { TopologyStore } = await import(`${D}/agent/topology-store.js`);
const { FlowTable } = await import(`${D}/agent/flow-table.js`);
const { validateActions } = await import(`${D}/agent/flow-actions.js`);
const { extractKey, KEY_SIZE } = await import(`${D}/agent/flow-key.js`);
const { kernelFlowFor } = await import(`${D}/agent/kernel/kernel-flow.js`);
const { udpFrame } = await import(`${D}/agent/testing/frames.js`);
if (typeof globalThis.gc !== "function") throw new Error("run with --expose-gc (see the header)");
const N = Number(process.argv[2] ?? 4000);
const t = new TopologyBuilder();
const hA = t.host("host-a", "127.0.0.4");
const hB = t.host("host-b", "127.0.0.5");
const net1 = t.bridge({ name: "net1" });
const net2 = t.bridge({ name: "net2" });
const router = t.router({ name: "r" });
const vmA = t.vmPort(net1, hA, "02:00:00:00:0a:01", ["10.1.0.1"], { interfaceName: "vmA" });
const vmB = t.vmPort(net1, hB, "02:00:00:00:0b:01", ["10.1.0.2"], { interfaceName: "vmB" });
const vmC = t.vmPort(net2, hB, "02:00:00:00:0c:01", ["10.2.0.3"], { interfaceName: "vmC" });
const if1 = t.routerInterface(router, net1, "02:00:00:00:ff:01", "10.1.0.254/24");
const if2 = t.routerInterface(router, net2, "02:00:00:00:ff:02", "10.2.0.254/24");
t.route(router, "10.1.0.0/24", if1.routerPort);
t.route(router, "10.2.0.0/24", if2.routerPort);
t.arpEntry(net2, "10.2.0.3", vmC.mac);
t.arpEntry(net1, "10.1.0.1", vmA.mac);
for (const h of [hA, hB]) h.tunnelPort = 4789;
const snap = { revision: 1, objects: t.objects };
const store = new TopologyStore();
store.applySnapshot(snap);
const sim = new EngineSimulator({ hostId: hA.id });
sim.applySnapshot(snap);
const dp = { invalidate() {}, sendFlowState() {}, execute() {}, countDrop() {} };
const h = new UpcallHandler({
  hostId: hA.id,
  role: "host",
  store,
  simulator: sim,
  datapath: dp,
  portIdByNo: new Map([[1, vmA.id]]),
  portNoById: new Map([[vmA.id, 1]]),
  clock: () => 1000,
});
const table = new FlowTable({
  ...(await import(`${D}/agent/flow-table.js`)).DEFAULT_FLOW_LIMITS,
  maxFlows: 1e6,
});
const ctx = { ifindexOfPort: (n) => (n === 1 ? 7 : undefined), vxlanIfindex: 9, tunnelPort: 4789 };
const mk = (i) => {
  const routed = i % 2 === 1;
  const frame = udpFrame({
    srcMac: vmA.mac,
    srcIp: "10.1.0.1",
    dstMac: routed ? "02:00:00:00:ff:01" : vmB.mac,
    dstIp: routed ? "10.2.0.3" : "10.1.0.2",
    sport: 1024 + (i >> 1),
    dport: 5001,
  });
  const key = Buffer.alloc(KEY_SIZE);
  extractKey(frame, 1, 0, key);
  return { portNo: 1, tunnelKey: 0, traced: false, frame, key };
};
let installed = 0,
  kernel = 0;
const one = (u) => {
  const d = h.handle(u);
  if (d.install) {
    validateActions(d.actions);
    const flow = table.install({ ...d.install, match: u.key, actions: d.actions }, 1000);
    if (flow) {
      installed++;
      if (!("userspace" in kernelFlowFor(u.key, flow.mask, flow.actions, ctx))) kernel++;
    }
  }
  d.beforeOutput?.(); // flow state for peers (encoded after the install)
};
// warm-up (JIT, caches), on other flows
for (let i = 0; i < 4000; i++) one(mk(100000 + i));
const ups = Array.from({ length: N }, (_, i) => mk(i));
let gcs = 0;
const obs = new PerformanceObserver((l) => {
  gcs += l.getEntries().length;
});
obs.observe({ entryTypes: ["gc"] });
const mem = () => {
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
};
const results = [];
for (let rep = 0; rep < 10; rep++) {
  globalThis.gc();
  globalThis.gc();
  await new Promise((r) => setTimeout(r, 20));
  const g0 = gcs;
  const before = mem();
  const us = ups.slice(rep * Math.floor(N / 10), (rep + 1) * Math.floor(N / 10));
  installed = 0;
  kernel = 0;
  for (const u of us) one(u);
  const after = mem();
  await new Promise((r) => setTimeout(r, 20));
  results.push({ perFlow: Math.round((after - before) / us.length), gcsDuring: gcs - g0, installed, kernel });
}
obs.disconnect();
console.log(JSON.stringify(results));
