// Kernel fast path (issue 8): the KernelDatapath the agent selects with `--datapath kernel|auto`,
// plus the pieces it is built from (eBPF object loading/attachment, flow map access, codecs).
// See docs/kernel-datapath.md.
export { BPF_ANY, BPF_EXIST, BPF_NOEXIST, BpfMap, bpfMapAddonAvailable } from "./bpf-map.js";
export {
  chooseDatapath,
  type DatapathMode,
  kernelDatapathName,
  kernelDatapathSupport,
} from "./datapath-select.js";
export * from "./flow-map-codec.js";
export { KernelDatapath, type KernelDatapathOptions, VXLAN_OVERHEAD } from "./kernel-datapath.js";
export { kernelFlowFor, kernelKeyOf } from "./kernel-flow.js";
export { FLOW_OBJECT_PATH, type FlowProgram, kernelDatapathUnavailable, TcPrograms } from "./tc-programs.js";
export { DEFAULT_THREAD_SLICE_US, setThreadSliceUs, threadSliceUs } from "./thread-slice.js";
