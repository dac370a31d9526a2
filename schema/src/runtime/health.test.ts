import assert from "node:assert/strict";
import { test } from "node:test";
import { credentials, Server, ServerCredentials } from "@grpc/grpc-js";
import { HealthServiceClient, HealthServiceService } from "../gen/isthmus/v1/health.js";
import { startGrpcServer } from "./grpc-server.js";
import { HealthState, healthService, ServingStatus } from "./health.js";
import { silentLogger } from "./logger.js";

test("the gRPC health service answers SERVING on an ephemeral loopback port", async (t) => {
  const state = new HealthState("test");
  state.set("api", true);
  const server = new Server();
  server.addService(HealthServiceService, healthService(state));
  const started = await startGrpcServer(
    server,
    "127.0.0.1:0",
    ServerCredentials.createInsecure(),
    silentLogger(),
  );
  t.after(() => started.stop(100));
  assert.ok(started.port > 0);

  const client = new HealthServiceClient(started.address, credentials.createInsecure());
  t.after(() => client.close());
  const check = (service: string) =>
    new Promise<{ status: number; detail: string }>((resolve, reject) =>
      client.check({ service }, (err, res) => (err ? reject(err) : resolve(res))),
    );

  assert.equal((await check("")).status, ServingStatus.SERVING_STATUS_SERVING);
  assert.equal((await check("api")).status, ServingStatus.SERVING_STATUS_SERVING);
  assert.equal((await check("nope")).status, ServingStatus.SERVING_STATUS_SERVICE_UNKNOWN);

  state.set("db", false, "database unreachable");
  const down = await check("");
  assert.equal(down.status, ServingStatus.SERVING_STATUS_NOT_SERVING);
  assert.match(down.detail, /db: database unreachable/);
});

test("health Watch streams changes", async (t) => {
  const state = new HealthState("test");
  state.set("raft", false, "no leader");
  const server = new Server();
  server.addService(HealthServiceService, healthService(state));
  const started = await startGrpcServer(
    server,
    "127.0.0.1:0",
    ServerCredentials.createInsecure(),
    silentLogger(),
  );
  t.after(() => started.stop(100));
  const client = new HealthServiceClient(started.address, credentials.createInsecure());
  t.after(() => client.close());

  const seen: number[] = [];
  await new Promise<void>((resolve, reject) => {
    const stream = client.watch({ service: "" });
    stream.on("data", (r: { status: number }) => {
      seen.push(r.status);
      if (seen.length === 1) state.set("raft", true);
      if (seen.length === 2) {
        stream.cancel();
        resolve();
      }
    });
    stream.on("error", (e: { code?: number }) => (e.code === 1 ? resolve() : reject(e)));
  });
  assert.deepEqual(seen, [ServingStatus.SERVING_STATUS_NOT_SERVING, ServingStatus.SERVING_STATUS_SERVING]);
});

test("a process with no components registered is not serving yet", () => {
  const s = new HealthState("x");
  assert.equal(s.check("").status, ServingStatus.SERVING_STATUS_NOT_SERVING);
  assert.throws(() => s.set("", true), /must not be empty/);
});
