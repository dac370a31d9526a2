// A focused run of one kernel-path agent's whole flow-setup path, without namespaces or devices:
// upcall records laid out as the ring reader hands them over ([virtio_net_hdr][upcall_hdr][frame],
// each in its own ArrayBuffer as napi_create_buffer makes it) go through KernelDatapath's upcall
// entry (parse, offloads, userspace lookup, queue), the real UpcallHandler and EngineSimulator (the
// datapath bench's topology: a VM on host A sending UDP to a VM on host B behind a stateful
// security group, so every flow makes a conntrack entry and a flow-state message), the flow-table
// install, the kernel entry's encoding and — as root with the BPF object built — a real
// BPF_MAP_UPDATE_ELEM on a loaded `flows` map (pinned in a temporary bpffs, nothing attached).
// Run after `npm run build`:
//   node --expose-gc --max-semi-space-size=512 scripts/flow-setup-micro.mjs alloc [flows=5000]
//     bytes allocated and retained per setup (batches of flows/10, GC forced between batches and
//     none during one; "gcsDuring" must be 0), and with `--heap` the top allocation sites
//   node [V8 flags] scripts/flow-setup-micro.mjs gc [flows=3000]
//     scavenges and their pauses per 1000 setups at the flags given (e.g. --max-semi-space-size=N),
//     setups one after another as fast as they go (`--paced`: one every ~2 ms), after a warm-up;
//     `--thrash=KB` touches that much other memory between setups (cold caches, as in the agent);
//     prints the datapath's stage profile (p50/p99 µs per stage); SLOWEST=n lists the n slowest
//     setups by their index (table size) and the stages of the worst five (use ≤ 4096 flows, the
//     profile's capacity, so the indexes line up)
import { mkdtempSync, rmSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PerformanceObserver } from "node:perf_hooks";
import v8 from "node:v8";

const D = process.env.DIST ?? new URL("../site-agent/dist", import.meta.url).pathname;
const { TopologyBuilder } = await import(`${D}/sim/index.js`);
const { EngineSimulator } = await import(`${D}/agent/sim-adapter.js`);
const { UpcallHandler } = await import(`${D}/agent/upcall-handler.js`);
const { TopologyStore } = await import(`${D}/agent/topology-store.js`);
const { KernelDatapath } = await import(`${D}/agent/kernel/kernel-datapath.js`);
const { TcPrograms, kernelDatapathUnavailable } = await import(`${D}/agent/kernel/tc-programs.js`);
const { udpFrame } = await import(`${D}/agent/testing/frames.js`);
const { topologypb, silentLogger } = await import("@isthmus/schema");

const mode = process.argv[2] ?? "alloc";
const N = Number(process.argv[3] ?? (mode === "gc" ? 3000 : 5000));
const heapSites = process.argv.includes("--heap");
if (mode === "alloc" && typeof globalThis.gc !== "function") {
  throw new Error("alloc mode: run with --expose-gc --max-semi-space-size=512 (see the header)");
}

// The datapath bench's topology (integration-tests/src/bench/datapath-kernel.ts).
const t = new TopologyBuilder();
const hostA = t.host("kbench-a", "172.30.98.1");
const hostB = t.host("kbench-b", "172.30.98.2");
for (const h of [hostA, hostB]) h.tunnelPort = 4789;
const net = t.bridge({ name: "kbench" });
const A = { mac: "02:00:00:00:0c:01", ip: "10.68.0.1" };
const B = { mac: "02:00:00:00:0c:02", ip: "10.68.0.2" };
const pa = t.vmPort(net, hostA, A.mac, [A.ip], { interfaceName: "vmA" });
const pb = t.vmPort(net, hostB, B.mac, [B.ip], { interfaceName: "vmB" });
const RA = topologypb.RuleAction;
const sgIn = t.chain("sg-in");
t.rule(sgIn, RA.RULE_ACTION_ACCEPT, { matchReturnFlow: true });
t.rule(sgIn, RA.RULE_ACTION_ACCEPT);
pb.outboundFilterId = sgIn.id;
const snap = { revision: 1, objects: t.objects };
const store = new TopologyStore();
store.applySnapshot(snap);
const sim = new EngineSimulator({ hostId: hostA.id });
sim.applySnapshot(snap);

const dp = new KernelDatapath({
  tunnelIp: hostA.tunnelIp,
  tunnelPort: 4789,
  name: "micro",
  log: silentLogger(),
  flowLimits: { maxFlows: 1_000_000, idleTimeoutMs: 3_600_000 },
});
// No start(): no devices. The parts of a started datapath the setup path reads are put in place.
const priv = dp;
priv.ports.set(1, {
  portNo: 1,
  portId: pa.id,
  name: "vmA",
  ifindex: 7,
  peer: true,
  rxPackets: 0,
  rxBytes: 0,
  txPackets: 0,
  txBytes: 0,
  txDropped: 0,
});
priv.vxlanIfindex = 9;
// Writes back (the packet, the flow-state message) go nowhere, as if the upcall veth took them.
priv.device = { send: (frames) => frames.length, close() {} };
let progs;
let bpffs;
let mapKind = "none (no update syscall)";
const why = kernelDatapathUnavailable();
if (!why) {
  bpffs = mkdtempSync(join(tmpdir(), "isthmus-micro-bpffs-"));
  progs = TcPrograms.load({ bpffs, name: "isthmus-micro" });
  priv.maps = { flows: progs.openFlowMap() };
  mapKind = "real BPF hash map";
} else {
  // Same bookkeeping, no syscall.
  priv.maps = { flows: { update() {}, delete() {}, close() {} } };
}
const handler = new UpcallHandler({
  hostId: hostA.id,
  role: "host",
  store,
  simulator: sim,
  datapath: dp,
  portIdByNo: new Map([[1, pa.id]]),
  portNoById: new Map([[pa.id, 1]]),
  clock: () => performance.now(),
});
dp.onUpcall((u) => handler.handle(u));

// Ring records: [virtio_net_hdr 10][upcall_hdr 40][frame], frames as the bench sends them.
const VNET = 10;
const HDR = 40;
function record(sport) {
  const frame = udpFrame({
    srcMac: A.mac,
    dstMac: B.mac,
    srcIp: A.ip,
    dstIp: B.ip,
    sport,
    dport: 9,
    payload: Buffer.alloc(32),
  });
  const r = Buffer.alloc(VNET + HDR + frame.length);
  r.writeUInt16BE(0x88b5, VNET + 12);
  r.writeUInt32LE(1, VNET + 16); // port 1
  r.writeUInt16LE(1, VNET + 30); // reason: miss
  frame.copy(r, VNET + HDR);
  return r;
}
if (N + 4000 > 64000) throw new Error("flow-setup-micro: at most 60000 flows (one source port each)");
let sport = 1024;
const nextSport = () => sport++;
const templates = Array.from({ length: N + 4000 }, () => record(nextSport()));
let ti = 0;
const onBuffers = (bufs) => priv.onUpcallBuffers(bufs);
/** One setup: a fresh record (own ArrayBuffer, as the addon makes), stamped now, handed up. */
function one() {
  const tpl = templates[ti++];
  const r = Buffer.from(new ArrayBuffer(tpl.length));
  tpl.copy(r);
  r.writeBigUInt64LE(process.hrtime.bigint(), VNET + 32);
  onBuffers([r]);
}
const kernelBefore = () => dp.kernelInstallCounts().installs;

// Warm-up (JIT, caches) on other flows.
for (let i = 0; i < 4000 && ti < templates.length - N; i++) one();
const warmInstalls = kernelBefore();

let gcs = [];
const obs = new PerformanceObserver((l) => {
  for (const e of l.getEntries()) gcs.push({ kind: e.detail?.kind ?? e.kind, ms: e.duration });
});
obs.observe({ entryTypes: ["gc"] });
const mem = () => {
  const m = process.memoryUsage();
  return m.heapUsed + m.external + m.arrayBuffers * 0; // arrayBuffers is part of external
};
const spaces = () =>
  Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, s.space_used_size]));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};
const r2 = (x) => Math.round(x * 100) / 100;

if (mode === "alloc") {
  let session;
  if (heapSites) {
    session = new Session();
    session.connect();
    await session.post("HeapProfiler.enable");
  }
  const batches = [];
  const per = Math.floor(N / 10);
  for (let rep = 0; rep < 10; rep++) {
    globalThis.gc();
    globalThis.gc();
    await sleep(20);
    globalThis.gc();
    const g0 = gcs.length;
    const k0 = kernelBefore();
    if (session && rep === 9) await session.post("HeapProfiler.startSampling", { samplingInterval: 32 });
    const sp0 = spaces();
    const before = mem();
    for (let i = 0; i < per; i++) one();
    const after = mem();
    const sp1 = spaces();
    const gcsDuring = gcs.length - g0;
    let profile;
    if (session && rep === 9) profile = (await session.post("HeapProfiler.stopSampling")).profile;
    globalThis.gc();
    globalThis.gc();
    await sleep(20);
    globalThis.gc();
    const kept = mem();
    batches.push({
      perSetupBytes: Math.round((after - before) / per),
      retainedBytes: Math.round((kept - before) / per),
      gcsDuring,
      kernelEntries: kernelBefore() - k0,
      bySpace: Object.fromEntries(
        Object.keys(sp1)
          .map((k) => [k, Math.round((sp1[k] - (sp0[k] ?? 0)) / per)])
          .filter(([, v]) => v !== 0),
      ),
    });
    if (profile) printSites(profile, per);
  }
  const med = (k) =>
    pct(
      batches.map((b) => b[k]),
      50,
    );
  console.log(JSON.stringify({ mode, map: mapKind, flowsPerBatch: per, batches }));
  console.log(
    `per setup: allocated ${med("perSetupBytes")} B, retained ${med("retainedBytes")} B (medians of 10 batches of ${per}); kernel entries per batch ${med("kernelEntries")}`,
  );
} else {
  globalThis.gc?.();
  await sleep(50);
  let session;
  if (heapSites) {
    session = new Session();
    session.connect();
    await session.post("HeapProfiler.enable");
    await session.post("HeapProfiler.startSampling", {
      samplingInterval: 64,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  }
  gcs = [];
  const k0 = kernelBefore();
  const mark = priv.setup.total;
  const times = [];
  const t0 = performance.now();
  // paced: one setup every ~2 ms with the event loop idle in between, as the datapath bench opens
  // its flows (V8 sizes the young generation by what it sees: a slow allocator keeps a small one).
  const paced = process.argv.includes("--paced");
  // --thrash=KB: between setups, read and write that much other memory (what the other processes
  // that run in the 2 ms between a bench's flows do to the CPU caches and TLB).
  const thrashKb = Number(process.argv.find((a) => a.startsWith("--thrash="))?.slice(9) ?? 0);
  const junk = new Uint32Array((thrashKb * 1024) / 4);
  for (let i = 0; i < N; i++) {
    const s = performance.now();
    one();
    times.push(performance.now() - s);
    for (let j = 0; j < junk.length; j += 16) junk[j]++;
    if (paced) await sleep(2);
  }
  const wall = performance.now() - t0;
  if (session) printSites((await session.post("HeapProfiler.stopSampling")).profile, N);
  await sleep(50);
  const scav = gcs
    .filter((g) => g.kind === 1 || g.kind === 16 /* minor / minor mark-compact */)
    .map((g) => g.ms);
  const major = gcs.filter((g) => !(g.kind === 1 || g.kind === 16)).map((g) => g.ms);
  const k = 1000 / N;
  console.log(
    JSON.stringify({
      mode,
      map: mapKind,
      flags: process.execArgv.join(" "),
      setups: N,
      kernelEntries: kernelBefore() - k0,
      setupMs: {
        p50: r2(pct(times, 50) * 1000) / 1000,
        p99: r2(pct(times, 99) * 1000) / 1000,
        mean: r2((wall / N) * 1000) / 1000,
      },
      per1000: {
        scavenges: r2(scav.length * k),
        scavengeMsTotal: r2(scav.reduce((a, b) => a + b, 0) * k),
        majorGcs: r2(major.length * k),
        majorMsTotal: r2(major.reduce((a, b) => a + b, 0) * k),
      },
      scavengeMs: { p50: r2(pct(scav, 50)), max: r2(Math.max(0, ...scav)) },
      slowSetupsOverlappingGc: times.filter((x) => x > 0.5).length,
    }),
  );
  if (process.env.SLOWEST) {
    const idx = times
      .map((t, i) => [t, i])
      .sort((a, b) => b[0] - a[0])
      .slice(0, Number(process.env.SLOWEST));
    console.log(
      `slowest: ${idx.map(([t, i]) => `#${i + warmInstalls}:${Math.round(t * 1000)}µs`).join(" ")}`,
    );
    const pr = priv.setup.since(mark);
    for (const [, i] of idx.slice(0, 5)) {
      const st = Object.entries(pr.stages).map(([k, xs]) => `${k} ${Math.round(xs[i] * 1000)}`);
      console.log(`  #${i + warmInstalls}: ${st.join(", ")}; gc ${Math.round(pr.gcMs[i] * 1000)}`);
    }
  }
  // The datapath's own stage profile (wake is ~0 here: the record is stamped just before it is
  // handed up), p50 / p99 in µs: paced against back-to-back shows what a cold path costs.
  const prof = priv.setup.since(mark);
  const us = (xs, p) => Math.round(pct(xs, p) * 10000) / 10;
  const stages = Object.entries(prof.stages).map(([k, xs]) => `${k} ${us(xs, 50)}/${us(xs, 99)}`);
  console.log(
    `stages p50/p99 µs (${paced ? "paced" : "back to back"}): ${stages.join(", ")}; from read ${us(prof.fromRead, 50)}/${us(prof.fromRead, 99)}`,
  );
}
console.error(
  `(warm-up kernel entries: ${warmInstalls}; load ${(await import("node:os"))
    .loadavg()
    .map((x) => x.toFixed(1))
    .join(" / ")})`,
);
obs.disconnect();
priv.maps.flows.close();
progs?.unload();
if (bpffs) rmSync(bpffs, { recursive: true, force: true });

function printSites(profile, per) {
  const bySite = new Map();
  const walk = (n, stack) => {
    const fn = n.callFrame.functionName || "(anon)";
    const url = n.callFrame.url.replace(/^.*\/dist\//, "").replace(/^file:\/\/.*\/node_modules\//, "");
    const where = `${fn} ${url}:${n.callFrame.lineNumber + 1}`;
    const self = n.selfSize;
    if (self > 0) bySite.set(where, (bySite.get(where) ?? 0) + self);
    for (const c of n.children) walk(c, stack);
  };
  walk(profile.head, []);
  const rows = [...bySite].sort((a, b) => b[1] - a[1]).slice(0, Number(process.env.SITES ?? 30));
  console.log("top allocation sites, bytes per setup (sampled, last batch):");
  for (const [w, b] of rows) console.log(`  ${Math.round(b / per)}\t${w}`);
}
