// Developer tool: an agent's cold first snapshot, repeatable without the propagation benchmark.
//   record <file> [ports] [intentObjects]  builds a site like the benchmark's snapshot step (10k ports
//                                          + the 100k state's bulk intent) on a throwaway PostgreSQL,
//                                          loads a TopologyMirror, times its framing, writes the events
//   run <file> [tries]                     serves the recorded events on a real Watch and times a
//                                          fresh agent-like process per try (`agent` below)
//   serve <file>                           only the server (prints its address; stop with SIGTERM)
//   agent <address>                        one first snapshot in this process; prints JSON
//   decode <file>                          the agent's decoding, store and simulator's view alone (no
//                                          gRPC), this process
//   frame <file> [tries]                   the mirror's framing of the recorded objects: the first
//                                          Watch after a load, then after a one-object change
// `node site-agent/dist/controller/test-support/snapshot-replay.js run /tmp/snap.bin 5`
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { PerformanceObserver } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { mallocHugePagesEnv, silentLogger, startGrpcServer, topologypb } from "@isthmus/schema";
import { firstSnapshot } from "../../agent/first-snapshot.js";
import { KEY_SIZE } from "../../agent/flow-key.js";
import { EngineSimulator } from "../../agent/sim-adapter.js";
import { type DecodedSnapshot, joinSnapshot } from "../../agent/snapshot-rules.js";
import { TopologyStore } from "../../agent/topology-store.js";
import { WatchEventDecoder } from "../../agent/watch-event-decoder.js";
import { eth } from "../../packets/index.js";
import type { PackedRules } from "../../sim/packed-rules.js";
import type { Database } from "../db/database.js";
import { startTestPostgres } from "../db/test-postgres.js";
import { EncodedWatchEvent, topologyServiceDefinition } from "../snapshot-encoding.js";
import { DEFAULT_MIRROR_PREPARE_AFTER_MS, TopologyMirror } from "../topology-mirror.js";
import { controllerFixture } from "./controller-fixture.js";
import { buildLargeSite, loadedMirror } from "./large-site.js";

const [mode, ...args] = process.argv.slice(2);

function writeEvents(file: string, events: Buffer[]): void {
  const head = Buffer.alloc(4 * (events.length + 1));
  head.writeUInt32LE(events.length, 0);
  for (const [i, e] of events.entries()) head.writeUInt32LE(e.length, 4 * (i + 1));
  writeFileSync(file, Buffer.concat([head, ...events]));
}

function readEvents(file: string): Buffer[] {
  const all = readFileSync(file);
  const n = all.readUInt32LE(0);
  const out: Buffer[] = [];
  let at = 4 * (n + 1);
  for (let i = 0; i < n; i++) {
    const len = all.readUInt32LE(4 * (i + 1));
    out.push(all.subarray(at, at + len));
    at += len;
  }
  return out;
}

async function record(file: string, ports: number, intentObjects: number): Promise<void> {
  const pgs = await startTestPostgres();
  if ("skip" in pgs) throw new Error(pgs.skip);
  try {
    const f = await controllerFixture(await pgs.createDatabase(), { leaseTtlMs: 600_000 });
    let t = performance.now();
    await buildLargeSite(f, { ports, intentObjects });
    console.log(
      `built ${ports} ports + ${intentObjects} intent objects in ${((performance.now() - t) / 1000).toFixed(1)} s`,
    );
    const { feed, mirror } = await loadedMirror(f);
    t = performance.now();
    const framed = mirror.snapshot()!;
    console.log(
      `mirror framed ${framed.objects} objects in ${framed.events.length} events: ${(performance.now() - t).toFixed(0)} ms (load ${loadavg()[0]!.toFixed(2)})`,
    );
    writeEvents(
      file,
      framed.events.map((e) => e.bytes),
    );
    mirror.stop();
    await feed.stop();
    await f.close();
  } finally {
    await pgs.stop();
  }
}

/** A TopologyService whose Watch writes the recorded events and then stays open. */
async function serve(events: Buffer[]): Promise<{ address: string; stop(): Promise<void> }> {
  const server = new Server();
  server.addService(topologyServiceDefinition, {
    watch: (call: { write(v: unknown): boolean; on(e: string, f: () => void): void }) => {
      for (const e of events) call.write(new EncodedWatchEvent(e));
    },
  });
  const s = await startGrpcServer(server, "127.0.0.1:0", ServerCredentials.createInsecure(), silentLogger());
  return { address: s.address, stop: () => s.stop(100) };
}

async function run(file: string, tries: number): Promise<void> {
  const events = readEvents(file);
  const bytes = events.reduce((a, e) => a + e.length, 0);
  const srv = await serve(events);
  const self = fileURLToPath(import.meta.url);
  console.log(`${events.length} events, ${(bytes / 1e6).toFixed(1)} MB; ${cpus().length} cpus`);
  for (let k = 0; k < tries; k++) {
    const out = await new Promise<string>((resolve, reject) => {
      // In the environment an agent runs in (malloc's huge pages; REPLAY_PLAIN_MALLOC=1 leaves them out).
      const child = spawn(process.execPath, [...process.execArgv, self, "agent", srv.address], {
        stdio: ["ignore", "pipe", "inherit"],
        env: process.env.REPLAY_PLAIN_MALLOC === "1" ? process.env : mallocHugePagesEnv(process.env),
      });
      let text = "";
      child.stdout.on("data", (d: Buffer) => {
        text += d.toString();
      });
      child.on("exit", (code) => (code === 0 ? resolve(text) : reject(new Error(`agent exited ${code}`))));
    });
    console.log(`try ${k + 1}: ${out.trim()} load ${loadavg()[0]!.toFixed(2)}`);
  }
  await srv.stop();
}

/** One cold first snapshot, with where its time went (decode, store, simulator's view, GC). */
async function agent(address: string): Promise<void> {
  const gc = gcObserver();
  const times = { decodeMs: 0, storeMs: 0, viewMs: 0, firstAt: 0 };
  let t0 = 0;
  const decode = WatchEventDecoder.prototype.decode;
  WatchEventDecoder.prototype.decode = function (this: WatchEventDecoder, b: Uint8Array) {
    const t = performance.now();
    if (times.firstAt === 0) times.firstAt = t - t0;
    const r = decode.call(this, b);
    times.decodeMs += performance.now() - t;
    return r;
  };
  const apply = TopologyStore.prototype.applySnapshot;
  TopologyStore.prototype.applySnapshot = function (this: TopologyStore, s: topologypb.TopologySnapshot) {
    const t = performance.now();
    apply.call(this, s);
    times.storeMs += performance.now() - t;
  };
  const view = EngineSimulator.prototype.applySnapshot;
  EngineSimulator.prototype.applySnapshot = function (this: EngineSimulator, s: topologypb.TopologySnapshot) {
    const t = performance.now();
    view.call(this, s);
    times.viewMs += performance.now() - t;
  };
  const cpu0 = process.cpuUsage();
  const faults0 = process.resourceUsage().minorPageFault;
  t0 = performance.now();
  const r = await firstSnapshot(address, "replay-host");
  const cpu = process.cpuUsage(cpu0);
  // Pages the try touched for the first time (on a VM, each costs microseconds).
  const minorFaults = process.resourceUsage().minorPageFault - faults0;
  await new Promise((res) => setTimeout(res, 10)); // let the GC entries arrive
  const gcDone = gc.done();
  const mem = process.memoryUsage();
  const heapMB = mem.heapUsed / 1e6;
  // Buffers (the received messages, which the packed rules keep referenced).
  const buffersMB = mem.arrayBuffers / 1e6;
  const rules = r.snapshot.packedRules;
  const packets = firstPackets(r.simulator, rules);
  const f = (n: number) => Number(n.toFixed(1));
  console.log(
    JSON.stringify({
      ms: f(r.ms),
      objects: r.snapshot.objects.length + (rules?.count ?? 0),
      rules: rules?.count ?? 0,
      parts: r.parts,
      firstEventMs: f(times.firstAt),
      decodeMs: f(times.decodeMs),
      storeMs: f(times.storeMs),
      viewMs: f(times.viewMs),
      cpuMs: f((cpu.user + cpu.system) / 1000),
      minorFaults,
      gc: gcDone,
      heapMB: f(heapMB),
      buffersMB: f(buffersMB),
      ...packets,
    }),
  );
  process.exit(0);
}

/**
 * After the snapshot: a TCP SYN between two VM ports of one bridge, simulated three times — the
 * first packet of the process, the first from another pair of ports (its own chains not yet
 * used), and the second pair again (everything it needs already prepared). Times in ms.
 */
function firstPackets(sim: EngineSimulator, rules: PackedRules | undefined): Record<string, number | string> {
  const vms = [...sim.view.ports.values()].filter((p) => p.raw.type === topologypb.PortType.PORT_TYPE_VM);
  const byBridge = new Map<string, typeof vms>();
  for (const p of vms) {
    if (p.ips4.length === 0) continue;
    const list = byBridge.get(p.deviceId) ?? [];
    list.push(p);
    byBridge.set(p.deviceId, list);
  }
  const pair = [...byBridge.values()].sort((a, b) => b.length - a.length)[0];
  if (!pair || pair.length < 5) return { packets: "no bridge with five VM ports" };
  const key = Buffer.alloc(KEY_SIZE);
  const syn = (a: (typeof vms)[number], b: (typeof vms)[number]) => {
    const frame = Buffer.from(eth(a.mac, b.mac).ip4(a.ips4[0]!.ip, b.ips4[0]!.ip).tcp(40000, 80).build());
    const t = performance.now();
    const out = sim.simulate({ frame, key, ingressPortId: a.id, traced: false, now: 1 });
    return {
      ms: performance.now() - t,
      verdict: out.dropReason ?? `${out.groups[0]?.outputs.length ?? 0} outputs`,
    };
  };
  const first = syn(pair[0]!, pair[1]!);
  const other = syn(pair[2]!, pair[3]!);
  const again = syn(pair[2]!, pair[3]!);
  // Compiling on first use, alone: a fifth port's own inbound chain, and the largest chain not
  // compiled yet (the view compiles a chain the first time a simulation looks it up).
  const compile = (id: string) => {
    const t = performance.now();
    const c = sim.view.chains.get(id);
    return { ms: performance.now() - t, rules: c?.rules.length ?? 0 };
  };
  const portChain = compile(pair[4]?.raw.inboundFilterId ?? "");
  const sizes = new Map<string, number>();
  for (let i = 0; i < (rules?.count ?? 0); i++) {
    const chain = rules!.chainOf(i);
    sizes.set(chain, (sizes.get(chain) ?? 0) + 1);
  }
  const largest = [...sizes].filter(([id]) => !sim.view.chains.isCompiled(id)).sort((a, b) => b[1] - a[1])[0];
  const bigChain = largest ? compile(largest[0]) : { ms: 0, rules: 0 };
  const f = (n: number) => Number(n.toFixed(2));
  return {
    firstPacketMs: f(first.ms),
    otherPortsPacketMs: f(other.ms),
    repeatPacketMs: f(again.ms),
    packetVerdict: first.verdict,
    portChainCompileMs: f(portChain.ms),
    portChainRules: portChain.rules,
    largestChainCompileMs: f(bigChain.ms),
    largestChainRules: bigChain.rules,
  };
}

/** The recorded events' objects, each as its stored encoding. */
function bodiesOf(events: Buffer[]): { revision: number; bodies: Buffer[] } {
  const bodies: Buffer[] = [];
  let revision = 0;
  for (const ev of events) {
    const e = topologypb.WatchTopologyResponse.decode(ev);
    const part = (e.snapshot ?? e.snapshotPart)!;
    revision = part.revision;
    for (const o of part.objects) bodies.push(Buffer.from(topologypb.TopologyObject.encode(o).finish()));
  }
  return { revision, bodies };
}

/** The mirror's framing, loaded from a stand-in database holding the recorded objects. */
async function frame(file: string, tries: number): Promise<void> {
  const { revision, bodies } = bodiesOf(readEvents(file));
  const rows = bodies.map((body, i) => ({ kind: 7, id: `o${i}`, body }));
  const tx = {
    query: async (sql: string) => (sql.includes("topology_revision") ? { rows: [{ revision }] } : { rows }),
  };
  const db = {
    tx: async (_l: string, fn: (t: typeof tx) => Promise<unknown>) => fn(tx),
  } as unknown as Database;
  const listeners: ((c: topologypb.TopologyChange) => void)[] = [];
  const feed = {
    subscribe: (l: (c: topologypb.TopologyChange) => void) => {
      listeners.push(l);
      return () => {};
    },
  };
  const mirror = new TopologyMirror(db, feed, { maxBytes: 1 << 30, partBytes: 1 << 20 }, silentLogger());
  await mirror.start();
  let t = performance.now();
  let framed = mirror.snapshot()!;
  console.log(
    `first framing: ${framed.objects} objects in ${framed.events.length} events, ${(performance.now() - t).toFixed(1)} ms (load ${loadavg()[0]!.toFixed(2)})`,
  );
  const one = topologypb.TopologyObject.decode(bodies[0]!);
  const change = () => {
    for (const l of listeners) l({ revision: framed.revision + 1, upserts: [one], deletes: [] });
  };
  for (let k = 0; k < tries; k++) {
    change();
    t = performance.now();
    framed = mirror.snapshot()!;
    const onDemand = performance.now() - t;
    change();
    await new Promise((r) => setTimeout(r, DEFAULT_MIRROR_PREPARE_AFTER_MS + 500));
    t = performance.now();
    framed = mirror.snapshot()!;
    console.log(
      `after a one-object change: Watch right after it ${onDemand.toFixed(1)} ms, after the quiet time ${(performance.now() - t).toFixed(1)} ms (load ${loadavg()[0]!.toFixed(2)})`,
    );
  }
  mirror.stop();
}

/** Decoding, the store and the view alone, as the agent does them, in this (fresh) process. */
function decodeOnly(file: string): void {
  const events = readEvents(file).map((e) => Buffer.from(e)); // each in a buffer of its own, as received
  const gc = gcObserver();
  const cpu0 = process.cpuUsage();
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  const decoder = new WatchEventDecoder();
  const parts: DecodedSnapshot[] = [];
  for (const ev of events) {
    const e = decoder.decode(ev);
    parts.push((e.snapshot ?? e.snapshotPart)!);
  }
  const snapshot = joinSnapshot(parts);
  const t1 = performance.now();
  const store = new TopologyStore();
  store.applySnapshot(snapshot);
  const t2 = performance.now();
  new EngineSimulator({ hostId: "replay-host" }).applySnapshot(snapshot);
  const t3 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  setTimeout(() => {
    const f = (n: number) => Number(n.toFixed(1));
    console.log(
      JSON.stringify({
        ms: f(t3 - t0),
        decodeMs: f(t1 - t0),
        storeMs: f(t2 - t1),
        viewMs: f(t3 - t2),
        cpuMs: f((cpu.user + cpu.system) / 1000),
        gc: gc.done(),
        heapMB: f((process.memoryUsage().heapUsed - heap0) / 1e6),
      }),
    );
  }, 10);
}

function gcObserver(): { done(): { count: number; ms: number; major: number; majorMs: number } } {
  const gc = { count: 0, ms: 0, major: 0, majorMs: 0 };
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gc.count++;
      gc.ms += e.duration;
      // NODE_PERFORMANCE_GC_MAJOR = 4 (mark-compact)
      if ((e as unknown as { detail?: { kind?: number } }).detail?.kind === 4) {
        gc.major++;
        gc.majorMs += e.duration;
      }
    }
  });
  obs.observe({ entryTypes: ["gc"] });
  return {
    done() {
      obs.disconnect();
      return {
        count: gc.count,
        ms: Number(gc.ms.toFixed(1)),
        major: gc.major,
        majorMs: Number(gc.majorMs.toFixed(1)),
      };
    },
  };
}

if (mode === "serve") {
  const srv = await serve(readEvents(args[0]!));
  console.log(srv.address);
  // Watch streams it serves never end on their own: stop waits a moment for them, then exits.
  process.once("SIGTERM", () => {
    setTimeout(() => process.exit(0), 1_000).unref();
    void srv.stop().finally(() => process.exit(0));
  });
} else if (mode === "decode") decodeOnly(args[0]!);
else if (mode === "frame") await frame(args[0]!, Number(args[1] ?? 5));
else if (mode === "record") await record(args[0]!, Number(args[1] ?? 10_000), Number(args[2] ?? 100_000));
else if (mode === "run") await run(args[0]!, Number(args[1] ?? 5));
else if (mode === "agent") await agent(args[0]!);
else {
  console.error(
    "usage: snapshot-replay.js record <file> [ports] [intentObjects] | run <file> [tries] | agent <address> | frame <file> [tries]",
  );
  process.exit(2);
}
