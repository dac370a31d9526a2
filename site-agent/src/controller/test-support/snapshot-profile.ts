// Developer tool: builds a large site on a throwaway PostgreSQL and times an agent's first
// snapshot over a real gRPC Watch stream, split into the controller's read, framing and the
// client's receive and decode. `node site-agent/dist/controller/test-support/snapshot-profile.js [ports]`
import { loadavg } from "node:os";
import { credentials, Metadata, Server, ServerCredentials } from "@grpc/grpc-js";
import { silentLogger, startGrpcServer, topologypb } from "@isthmus/schema";
import { firstSnapshot } from "../../agent/first-snapshot.js";
import { WatchEventDecoder } from "../../agent/watch-event-decoder.js";
import { startTestPostgres } from "../db/test-postgres.js";
import { topologyServiceDefinition } from "../snapshot-encoding.js";
import type { TopologyMirror } from "../topology-mirror.js";
import { readSnapshotBodies } from "../topology-store.js";
import { TopologyWatchService } from "../topology-watch.js";
import { controllerFixture } from "./controller-fixture.js";
import { buildLargeSite, loadedMirror } from "./large-site.js";

const ports = Number(process.argv[2] ?? 10_000);
const tries = Number(process.argv[3] ?? 3);

const pgs = await startTestPostgres();
if ("skip" in pgs) throw new Error(pgs.skip);
try {
  const url = await pgs.createDatabase();
  const f = await controllerFixture(url, { leaseTtlMs: 600_000 });
  let t = performance.now();
  const hostId = await buildLargeSite(f, { ports, intentObjects: 11_000 });
  console.log(`built ${ports} ports in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  const { feed, mirror } = await loadedMirror(f);
  const serve = async (m: TopologyMirror | undefined) => {
    const svc = new TopologyWatchService(
      f.db,
      feed,
      { maxQueuedChanges: 1000, heartbeatMs: 5000, catchUpBatch: 100, maxStreams: 10 },
      silentLogger(),
      async () => {},
      m,
    );
    const server = new Server();
    server.addService(topologyServiceDefinition, svc.handlers());
    return startGrpcServer(server, "127.0.0.1:0", ServerCredentials.createInsecure(), silentLogger());
  };
  const fromDb = await serve(undefined);
  const fromMemory = await serve(mirror);
  const watchOnce = (address: string, opts: Record<string, number>, raw: boolean) =>
    new Promise<{ first: number; last: number }>((resolve, reject) => {
      const client = new topologypb.TopologyServiceClient(address, credentials.createInsecure(), opts);
      const call = raw
        ? client.makeServerStreamRequest(
            "/isthmus.topology.v1.TopologyService/Watch",
            (v: topologypb.WatchTopologyRequest) =>
              Buffer.from(topologypb.WatchTopologyRequest.encode(v).finish()),
            (b: Buffer) => b,
            { hostId, fromRevision: 0 },
            new Metadata(),
          )
        : client.watch({ hostId, fromRevision: 0 }, new Metadata());
      const t0 = performance.now();
      let first = 0;
      call.on("data", (e: topologypb.WatchTopologyResponse | Buffer) => {
        if (first === 0) first = performance.now() - t0;
        const done = Buffer.isBuffer(e) ? e[0] === 0x0a : e.snapshot !== undefined;
        if (done) {
          const last = performance.now() - t0;
          call.cancel();
          client.close();
          resolve({ first, last });
        }
      });
      call.on("error", (err: Error & { code?: number }) => {
        if (err.code !== 1) reject(err);
      });
    });
  // As the agent takes it: its watch client (channel settings, parts) into its store and view.
  const agentSnapshot = async (address: string) => (await firstSnapshot(address, hostId)).ms;
  const experiments: [string, () => Promise<number>][] = [
    ["database → agent store", () => agentSnapshot(fromDb.address)],
    ["mirror → agent store", () => agentSnapshot(fromMemory.address)],
    ["mirror → raw bytes, default window", async () => (await watchOnce(fromMemory.address, {}, true)).last],
    [
      "mirror → raw bytes, 8 MiB window",
      async () =>
        (await watchOnce(fromMemory.address, { "grpc-node.flow_control_window": 8 << 20 }, true)).last,
    ],
  ];
  for (let k = 0; k < tries; k++) {
    t = performance.now();
    const { parts } = await readSnapshotBodies(f.db, 1024 * 1024);
    const readMs = performance.now() - t;
    let objects = 0;
    let bytes = 0;
    for (const p of parts) {
      objects += p.length;
      for (const b of p) bytes += b.length;
    }
    console.log(
      `try ${k}: ${objects} objects ${(bytes / 1e6).toFixed(1)} MB in ${parts.length} parts; db read ${readMs.toFixed(0)} ms; load ${loadavg()[0]!.toFixed(1)}`,
    );
    for (const [name, run] of experiments) console.log(`  ${name}: ${(await run()).toFixed(0)} ms`);
  }
  // Decode cost alone, from the wire form.
  const { revision, parts } = await readSnapshotBodies(f.db, 1024 * 1024);
  const { encodeSnapshotEvent } = await import("../snapshot-encoding.js");
  const wire = parts.map(
    (p, i) => encodeSnapshotEvent(i === parts.length - 1 ? "snapshot" : "snapshotPart", revision, p).bytes,
  );
  if (process.env.SNAPSHOT_WIRE_OUT) {
    const { writeFileSync } = await import("node:fs");
    const lens = Buffer.alloc(4 * wire.length);
    for (const [i, w] of wire.entries()) lens.writeUInt32LE(w.length, 4 * i);
    writeFileSync(
      process.env.SNAPSHOT_WIRE_OUT,
      Buffer.concat([Buffer.from(Uint32Array.of(wire.length).buffer), lens, ...wire]),
    );
  }
  // Side by side, alternating: the generated decoder and the agent's own (watch-event-decoder.ts).
  for (let k = 0; k < tries; k++) {
    const kept: unknown[] = [];
    t = performance.now();
    for (const w of wire) kept.push(topologypb.WatchTopologyResponse.decode(w));
    const generated = performance.now() - t;
    kept.length = 0;
    const decoder = new WatchEventDecoder();
    t = performance.now();
    for (const w of wire) kept.push(decoder.decode(w));
    const agent = performance.now() - t;
    console.log(
      `decode alone: generated ${generated.toFixed(0)} ms, agent's decoder ${agent.toFixed(0)} ms; load ${loadavg()[0]!.toFixed(1)}`,
    );
  }
  await fromDb.stop(100);
  await fromMemory.stop(100);
  mirror.stop();
  await feed.stop();
  await f.close();
} finally {
  await pgs.stop();
}
