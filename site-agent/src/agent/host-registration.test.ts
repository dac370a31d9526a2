import assert from "node:assert/strict";
import { test } from "node:test";
import { Server, ServerCredentials, type ServerUnaryCall, type sendUnaryData, status } from "@grpc/grpc-js";
import { silentLogger, sitepb } from "@isthmus/schema";
import { HostHeartbeat } from "./host-registration.js";

/** A SiteService that only answers Heartbeat, each answer `delayMs` late, and notes when each beat arrived. */
async function slowHeartbeatServer(delayMs: number, intervalMs: number) {
  const server = new Server();
  const arrivals: number[] = [];
  server.addService(sitepb.SiteServiceService, {
    heartbeat: (
      _call: ServerUnaryCall<sitepb.HeartbeatRequest, sitepb.HeartbeatResponse>,
      cb: sendUnaryData<sitepb.HeartbeatResponse>,
    ) => {
      arrivals.push(Date.now());
      setTimeout(() => cb(null, sitepb.HeartbeatResponse.fromPartial({ intervalMs })), delayMs);
    },
  } as unknown as sitepb.SiteServiceServer);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { address: `127.0.0.1:${port}`, arrivals, stop: () => server.forceShutdown() };
}

async function until(what: string, f: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("heartbeats start at the controller's interval however long each answer takes", async (t) => {
  // Each answer takes 700 ms against an interval of 300 ms (both under the 1 s deadline). A beat
  // scheduled an interval after the previous answer would reach the controller >= 1 000 ms after
  // the previous one; started at a fixed rate it goes out as soon as the slow answer is in (~700 ms).
  const srv = await slowHeartbeatServer(700, 300);
  const hb = new HostHeartbeat({
    controller: srv.address,
    hostId: "h1",
    token: () => "t",
    log: silentLogger(),
    initialIntervalMs: 300,
  });
  t.after(() => {
    hb.stop();
    srv.stop();
  });
  hb.start();
  await until("seven beats at the controller", () => srv.arrivals.length >= 7);
  // The first gap includes the connection's set-up; the median of the rest is the schedule.
  const gaps = srv.arrivals.slice(1).map((a, i) => a - srv.arrivals[i]!);
  const median = [...gaps.slice(1)].sort((a, b) => a - b)[Math.floor((gaps.length - 1) / 2)]!;
  assert.ok(median < 950, `median gap ${median} ms (gaps ${gaps.join(", ")})`);
  assert.ok(hb.sent >= 5, `accepted beats ${hb.sent}`);
});

test("a controller without Heartbeat is asked once", async (t) => {
  const server = new Server();
  let calls = 0;
  server.addService(sitepb.SiteServiceService, {
    heartbeat: (_c: unknown, cb: sendUnaryData<sitepb.HeartbeatResponse>) => {
      calls++;
      cb({ code: status.UNIMPLEMENTED, details: "no" });
    },
  } as unknown as sitepb.SiteServiceServer);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  const hb = new HostHeartbeat({
    controller: `127.0.0.1:${port}`,
    hostId: "h1",
    token: () => undefined,
    log: silentLogger(),
    initialIntervalMs: 100,
  });
  t.after(() => {
    hb.stop();
    server.forceShutdown();
  });
  hb.start();
  await until("the first beat", () => calls >= 1);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(calls, 1);
  assert.equal(hb.sent, 0);
});
