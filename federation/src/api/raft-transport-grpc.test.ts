import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { credentials, Server, ServerCredentials } from "@grpc/grpc-js";
import { raftpb, type StartedServer, silentLogger, startGrpcServer } from "@isthmus/schema";
import { EntryType, type Message, MessageType } from "../raft/index.js";
import { GrpcRaftTransport, type GrpcRaftTransportOptions } from "./raft-transport-grpc.js";
import { fromWire, RaftWireError, toWire } from "./raft-wire.js";

function msg(from: string, to: string, k: number, extra: Partial<Message> = {}): Message {
  return {
    type: MessageType.Append,
    from,
    to,
    term: 3,
    logTerm: 2,
    index: k,
    entries: [{ term: 3, index: k + 1, type: EntryType.Normal, data: new TextEncoder().encode(`cmd-${k}`) }],
    commit: k,
    reject: false,
    rejectHint: 0,
    context: new Uint8Array(),
    ...extra,
  };
}

async function node(
  id: string,
  opts: Partial<GrpcRaftTransportOptions> = {},
  listen = "127.0.0.1:0",
): Promise<{ t: GrpcRaftTransport; got: Message[]; server: StartedServer }> {
  const t = new GrpcRaftTransport({ id, credentials: credentials.createInsecure(), ...opts });
  const got: Message[] = [];
  t.onMessage((m) => got.push(m));
  const server = new Server();
  server.addService(t.service.definition, t.service.implementation);
  const started = await startGrpcServer(server, listen, ServerCredentials.createInsecure(), silentLogger());
  return { t, got, server: started };
}

// The deadline only bounds a failing run (a condition that holds returns at once): generous for a
// loaded 2-core CI machine.
async function until(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("wire conversion round-trips every field and names the bad field of a malformed message", () => {
  const m = msg("a", "b", 7, {
    type: MessageType.Snapshot,
    reject: true,
    rejectHint: 5,
    context: new Uint8Array([1, 2]),
    snapshot: { index: 9, term: 2, confState: { voters: ["a", "b"], learners: ["c"], votersOutgoing: [] } },
    snapshotChunk: new Uint8Array([9, 9, 9]),
    snapshotOffset: 1024,
    snapshotDone: true,
  });
  const back = fromWire(raftpb.RaftMessage.decode(raftpb.RaftMessage.encode(toWire(m)).finish()));
  assert.deepEqual(
    { ...back, context: [...back.context], snapshotChunk: [...back.snapshotChunk!], entries: [] },
    { ...m, context: [1, 2], snapshotChunk: [9, 9, 9], entries: [] },
  );
  assert.equal(new TextDecoder().decode(back.entries[0]!.data), "cmd-7");
  assert.equal(back.entries[0]!.index, 8);
  assert.throws(() => fromWire({ ...toWire(m), type: 99 as raftpb.RaftMessageType }), /field type/);
  assert.throws(() => fromWire({ ...toWire(m), from: "" }), RaftWireError);
  assert.throws(
    () => fromWire({ ...toWire(m), entries: [{ term: 1, index: 1, type: 0, data: Buffer.alloc(0) }] }),
    /entries\[0\]\.type/,
  );
  assert.throws(() => fromWire({ ...toWire(m), snapshot: undefined }), /field snapshot/);
});

test("messages cross a real gRPC stream in order and in batches", async (t) => {
  const a = await node("a");
  const b = await node("b");
  t.after(async () => {
    await a.t.close();
    await b.t.close();
    await a.server.stop(100);
    await b.server.stop(100);
  });
  a.t.addPeer("b", b.server.address);
  b.t.addPeer("a", a.server.address);
  a.t.send(Array.from({ length: 2000 }, (_, k) => msg("a", "b", k)));
  await until(() => b.got.length === 2000, "2000 messages at b");
  assert.deepEqual(
    b.got.map((m) => m.index),
    Array.from({ length: 2000 }, (_, k) => k),
  );
  assert.equal(new TextDecoder().decode(b.got[1999]!.entries[0]!.data), "cmd-1999");
  b.t.send([msg("b", "a", 1, { type: MessageType.AppendResponse, entries: [] })]);
  await until(() => a.got.length === 1, "reply at a");
  assert.equal(a.got[0]!.type, MessageType.AppendResponse);
  assert.equal(a.t.stats().sent, 2000);
  assert.equal(b.t.stats().received, 2000);
});

test("unknown peers and full queues drop and count instead of blocking", async (t) => {
  const a = await node("a", { maxQueuedPerPeer: 10 });
  t.after(async () => {
    await a.t.close();
    await a.server.stop(100);
  });
  a.t.send([msg("a", "nobody", 1)]);
  a.t.addPeer("b", "127.0.0.1:1"); // nothing listens there
  a.t.send(Array.from({ length: 25 }, (_, k) => msg("a", "b", k)));
  const s = a.t.stats();
  assert.equal(s.droppedUnknownPeer, 1);
  assert.equal(s.droppedQueueFull, 15);
});

test("a peer that comes up later is reached after reconnecting with backoff", async (t) => {
  const b0 = await node("b");
  const port = b0.server.port;
  await b0.t.close();
  await b0.server.stop(100); // b is down; its port is known
  const a = await node("a", { backoff: { initialMs: 20, maxMs: 200 } });
  a.t.addPeer("b", `127.0.0.1:${port}`);
  const sendTick = setInterval(
    () => a.t.send([msg("a", "b", 1, { type: MessageType.Heartbeat, entries: [] })]),
    20,
  );
  let b: Awaited<ReturnType<typeof node>> | undefined;
  t.after(async () => {
    clearInterval(sendTick);
    await a.t.close();
    await a.server.stop(100);
    await b?.t.close();
    await b?.server.stop(100);
  });
  await until(() => a.t.stats().streamFailures >= 2, "failed attempts while b is down");
  b = await node("b", {}, `127.0.0.1:${port}`);
  const bb = b;
  await until(() => bb.got.length > 0, "a heartbeat at the restarted b");
  assert.equal(bb.got[0]!.type, MessageType.Heartbeat);
});

test("backoff doubles up to the ceiling and stays within the jitter band", () => {
  const t = new GrpcRaftTransport({
    id: "a",
    credentials: credentials.createInsecure(),
    backoff: { initialMs: 100, maxMs: 1000, jitter: 0.2 },
    random: () => 1,
  });
  assert.equal(t.backoffDelay(1), 120);
  assert.equal(t.backoffDelay(2), 240);
  assert.equal(t.backoffDelay(5), 1200);
  assert.equal(t.backoffDelay(50), 1200);
  const low = new GrpcRaftTransport({ id: "a", credentials: credentials.createInsecure(), random: () => 0 });
  assert.equal(low.backoffDelay(1), 40);
});

test("messages addressed to another node and malformed ones are dropped and counted", async (t) => {
  const b = await node("b");
  const client = new raftpb.RaftTransportServiceClient(b.server.address, credentials.createInsecure());
  t.after(async () => {
    client.close();
    await b.t.close();
    await b.server.stop(100);
  });
  await new Promise<void>((resolve, reject) => {
    const call = client.stream((err) => (err ? reject(err) : resolve()));
    call.write({
      messages: [
        toWire(msg("a", "c", 1)),
        { ...toWire(msg("a", "b", 2)), type: 0 as raftpb.RaftMessageType },
        toWire(msg("a", "b", 3)),
      ],
    });
    call.end();
  });
  await until(() => b.got.length === 1, "the one good message");
  assert.equal(b.got[0]!.index, 3);
  assert.equal(b.t.stats().misaddressed, 1);
  assert.equal(b.t.stats().malformed, 1);
});

/** A CA and one certificate (SAN 127.0.0.1, server and client use) made with the openssl CLI. */
function makeCerts(dir: string): { ca: Buffer; key: Buffer; cert: Buffer } {
  const run = (args: string[]) => {
    const r = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${r.stderr}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-subj",
    "/CN=raft-test-ca",
    "-days",
    "1",
  ]);
  run(["req", ...ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=raft-node"]);
  writeFileSync(
    join(dir, "ext.cnf"),
    "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
  );
  run(
    [
      "x509",
      "-req",
      "-in",
      "node.csr",
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "node.crt",
    ].concat(["-days", "1", "-extfile", "ext.cnf"]),
  );
  return {
    ca: readFileSync(join(dir, "ca.crt")),
    key: readFileSync(join(dir, "node.key")),
    cert: readFileSync(join(dir, "node.crt")),
  };
}

test("with mTLS credentials passed in, peers with a certificate get through and others do not", async (t) => {
  if (spawnSync("openssl", ["version"]).status !== 0) {
    if (process.env.CI) assert.fail("openssl must be installed in CI (.ci/run installs it)");
    t.skip("openssl CLI not installed; it makes the test certificates");
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "raft-mtls-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { ca, key, cert } = makeCerts(dir);
  const b = new GrpcRaftTransport({ id: "b", credentials: credentials.createSsl(ca, key, cert) });
  const got: Message[] = [];
  b.onMessage((m) => got.push(m));
  const server = new Server();
  server.addService(b.service.definition, b.service.implementation);
  const started = await startGrpcServer(
    server,
    "127.0.0.1:0",
    ServerCredentials.createSsl(ca, [{ private_key: key, cert_chain: cert }], true),
    silentLogger(),
  );
  const good = new GrpcRaftTransport({ id: "a", credentials: credentials.createSsl(ca, key, cert) });
  const anonymous = new GrpcRaftTransport({
    id: "x",
    credentials: credentials.createSsl(ca),
    backoff: { initialMs: 20, maxMs: 50 },
  });
  t.after(async () => {
    await good.close();
    await anonymous.close();
    await b.close();
    await started.stop(100);
  });
  good.addPeer("b", started.address);
  anonymous.addPeer("b", started.address);
  const tick = setInterval(() => {
    anonymous.send([msg("x", "b", 99, { type: MessageType.Heartbeat, entries: [] })]);
    good.send([msg("a", "b", 1, { type: MessageType.Heartbeat, entries: [] })]);
  }, 20);
  t.after(() => clearInterval(tick));
  await until(() => got.length > 0 && anonymous.stats().streamFailures >= 2, "mTLS delivery and refusal");
  assert.ok(
    got.every((m) => m.from === "a"),
    "nothing from the peer without a client certificate arrived",
  );
});
