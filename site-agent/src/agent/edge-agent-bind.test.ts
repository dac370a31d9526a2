import assert from "node:assert/strict";
import { after, test } from "node:test";
import { silentLogger } from "@isthmus/schema";
import type { PortIO } from "./datapath.js";
import { EdgeAgent } from "./edge-agent.js";
import { MemoryPort } from "./memory-port.js";
import { bridge, FakeSimulator, host, objs, snapshot, vmPort } from "./testing/fake-simulator.js";
import { UserspaceDatapath } from "./userspace-datapath.js";

// A port the datapath refuses (the interface vanished between open and bind, an MTU that does not
// fit) must not take the agent down: it is counted and retried, as a missing interface is.
class RefusingDatapath extends UserspaceDatapath {
  refuse = true;
  override addPort(portNo: number, portId: string, io: PortIO): void {
    if (this.refuse) throw new Error(`datapath refuses ${io.name}`);
    super.addPort(portNo, portId, io);
  }
}

const h = host("a", "127.0.0.2", 0);
const net = bridge("net1");
const vm = vmPort(net, h, "tapX", "02:00:00:00:0a:09", "10.0.0.9", 0x21);
const dp = new RefusingDatapath({ tunnelIp: h.tunnelIp, tunnelPort: 0, log: silentLogger() });
let agent: EdgeAgent | undefined;
after(async () => {
  await agent?.stop();
});

test("a port the datapath refuses is counted and retried, and binds once the datapath accepts it", async () => {
  await dp.start();
  const opened: MemoryPort[] = [];
  agent = new EdgeAgent({
    hostId: h.id,
    role: "host",
    datapath: dp,
    simulator: new FakeSimulator(),
    log: silentLogger(),
    openPort: (name) => {
      const p = new MemoryPort(name);
      opened.push(p);
      return p;
    },
  });
  assert.doesNotThrow(() =>
    agent!.applySnapshot(snapshot(1, objs({ hosts: [h], bridges: [net], ports: [vm] }))),
  );
  assert.equal(agent.boundPorts().size, 0);
  assert.equal(agent.stats.bindErrors, 1);
  agent.tick();
  assert.equal(agent.stats.bindErrors, 2, "retried on the next tick");
  dp.refuse = false;
  agent.tick();
  assert.ok(agent.boundPorts().has(vm.id), "bound once the datapath accepts it");
  assert.equal(opened.length, 3, "each attempt opened the interface afresh");
});
