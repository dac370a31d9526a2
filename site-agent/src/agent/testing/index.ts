// Test support for agent tests in this package and in integration-tests: namespace "VMs", an
// in-process TopologyService, frame builders and a small fake simulator.

export { FakeTopologyServer } from "./fake-topology-server.js";
export { checksumsValid, tcpFrame, udpFrame } from "./frames.js";
export { NetnsLab, rootSkipReason, sh, type Vm } from "./netns.js";
