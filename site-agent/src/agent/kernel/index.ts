// Kernel fast path (issue 8, first slice): eBPF object loading/attachment and flow map access.
// Not yet wired into the agent; see docs/kernel-datapath.md for what exists and what is left.
export { BPF_ANY, BPF_EXIST, BPF_NOEXIST, BpfMap, bpfMapAddonAvailable } from "./bpf-map.js";
export * from "./flow-map-codec.js";
export { FLOW_OBJECT_PATH, type FlowProgram, kernelDatapathUnavailable, TcPrograms } from "./tc-programs.js";
