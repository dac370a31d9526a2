import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { getPriority, tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { silentLogger } from "@isthmus/schema";
import { agentNice, DEFAULT_AGENT_NICE, loadAgentConfig, startAgent } from "./agent-process.js";
import { MemoryPort } from "./memory-port.js";
import { FakeSimulator } from "./testing/fake-simulator.js";
import { FakeTopologyServer } from "./testing/fake-topology-server.js";

const dir = mkdtempSync(join(tmpdir(), "isthmus-agent-"));
after(() => rmSync(dir, { recursive: true, force: true }));

// The deadline only bounds a failing run (a condition that holds returns at once): generous for a
// loaded 2-core CI machine.
async function until(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("the agent registers with its admin token, watches with the host token, serves metrics and health", async () => {
  const server = new FakeTopologyServer([], 1);
  server.adminToken = "admin-secret";
  const controller = await server.start();
  const adminTokenFile = join(dir, "admin.token");
  writeFileSync(adminTokenFile, "admin-secret\n");
  const tokenFile = join(dir, "host.token");
  const priorityBefore = getPriority();
  const running = await startAgent(
    {
      name: "edge-1",
      adminTokenFile,
      tokenFile,
      controller,
      tunnelIp: "127.0.0.1",
      tunnelPort: 0,
      metricsListen: "127.0.0.1:0",
      adminListen: "127.0.0.1:0",
    },
    { log: silentLogger(), openPort: (n) => new MemoryPort(n), simulator: new FakeSimulator() },
  );
  try {
    assert.equal(server.registered[0]?.name, "edge-1");
    assert.equal(server.registered[0]?.tunnelPort, running.tunnelPort, "registers the port it bound");
    assert.equal(running.hostId, "host-1");
    assert.equal(readFileSync(tokenFile, "utf8").trim(), "host-token-host-1");
    await until(() => running.agent.store.ready, "the snapshot");
    assert.equal(server.requests[0]?.hostId, "host-1");
    assert.equal(server.watchAuth[0], "Bearer host-token-host-1");
    const metrics = await (await fetch(`http://127.0.0.1:${running.metricsPort}/metrics`)).text();
    assert.match(metrics, /isthmus_agent_controller_connected 1/);
    assert.match(metrics, /isthmus_agent_topology_revision 2/);
    const health = await fetch(`http://127.0.0.1:${running.metricsPort}/healthz`);
    assert.equal(health.status, 200);
    const status = (await (await fetch(`http://127.0.0.1:${running.adminPort}/status`)).json()) as {
      host: string;
    };
    assert.equal(status.host, "host-1");
    // agent.nice unset on the userspace path: the thread's priority is left as started.
    assert.equal(getPriority(), priorityBefore);
  } finally {
    await running.stop();
    await server.stop();
  }
});

test("a bad admin token stops start-up with the controller's reason", async () => {
  const server = new FakeTopologyServer([], 1);
  server.adminToken = "right";
  const controller = await server.start();
  const adminTokenFile = join(dir, "wrong.token");
  writeFileSync(adminTokenFile, "wrong\n");
  try {
    await assert.rejects(
      startAgent(
        {
          name: "edge-2",
          adminTokenFile,
          controller,
          tunnelIp: "127.0.0.1",
          tunnelPort: 0,
          metricsListen: "127.0.0.1:0",
          adminListen: "127.0.0.1:0",
        },
        { log: silentLogger(), openPort: (n) => new MemoryPort(n), simulator: new FakeSimulator() },
      ),
      /refused RegisterHost for "edge-2".*bad admin token/,
    );
  } finally {
    await server.stop();
  }
});

test("config names what is missing", async () => {
  await assert.rejects(
    startAgent({ controller: "127.0.0.1:1", tunnelIp: "127.0.0.1" }, { log: silentLogger() }),
    /--host <id>.*--name/,
  );
  await assert.rejects(
    startAgent({ host: "h", controller: "127.0.0.1:1", tunnelIp: "not-an-ip" }, { log: silentLogger() }),
    /agent\.tunnelIp/,
  );
  assert.throws(
    () =>
      loadAgentConfig(
        { host: "h", controller: "127.0.0.1:1", tunnelIp: "127.0.0.1" },
        { ISTHMUS_AGENT__NICE: "-30" },
      ),
    /agent\.nice/,
  );
  assert.equal(
    loadAgentConfig(
      { host: "h", controller: "127.0.0.1:1", tunnelIp: "127.0.0.1" },
      { ISTHMUS_AGENT__NICE: "-5" },
    ).nice,
    -5,
  );
  assert.equal(
    loadAgentConfig({ host: "h", controller: "127.0.0.1:1", tunnelIp: "127.0.0.1" }, {}).nice,
    undefined,
  );
});

test("agent.kernel.upcallBusyPollUs: off by default, set from the flag or the environment, bad values refused naming the field", () => {
  const base = { host: "h", controller: "127.0.0.1:1", tunnelIp: "127.0.0.1" };
  assert.equal(loadAgentConfig(base, {}).kernel.upcallBusyPollUs, 0);
  assert.equal(loadAgentConfig({ ...base, upcallBusyPollUs: "5000" }, {}).kernel.upcallBusyPollUs, 5000);
  assert.equal(
    loadAgentConfig(base, { ISTHMUS_AGENT__KERNEL__UPCALL_BUSY_POLL_US: "2000" }).kernel.upcallBusyPollUs,
    2000,
  );
  for (const bad of ["-1", "2.5", "abc", "1000001"]) {
    assert.throws(
      () => loadAgentConfig({ ...base, upcallBusyPollUs: bad }, {}),
      (e: Error) => /agent\.kernel\.upcallBusyPollUs/.test(e.message) && /flag/.test(e.message),
      bad,
    );
  }
});

test("agent.nice: an explicit value wins; unset, -10 on the kernel path and nothing on the userspace path", () => {
  assert.deepEqual(agentNice(5, "userspace"), { value: 5, explicit: true });
  assert.deepEqual(agentNice(0, "kernel"), { value: 0, explicit: true });
  assert.deepEqual(agentNice(undefined, "kernel"), { value: DEFAULT_AGENT_NICE, explicit: false });
  assert.equal(agentNice(undefined, "userspace"), undefined);
});
