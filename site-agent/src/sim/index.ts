// Public surface of the packet simulation.
export { type ConntrackEntry, ConntrackTable, ctKey, ctReturnKey } from "./conntrack.js";
export { F, type FieldName, type FlowMask, FlowMatch, maskFields } from "./flow-match.js";
export { MacTable } from "./mac-table.js";
export {
  DEFAULT_NAT_BLOCK_SIZE,
  InMemoryNatBlockRegistry,
  type NatBlock,
  type NatLeaseSource,
  NatPortAllocator,
} from "./nat-ports.js";
export { type NatBinding, NatTable } from "./nat-table.js";
export type { PackedRules, RuleSnapshot } from "./packed-rules.js";
export type * from "./result.js";
export { DEFAULT_SIM_LIMITS, type SimLimits, SimState } from "./sim-state.js";
export { MAX_LOCAL_TUNNEL_KEY, simulate, TUNNEL_FLOW_STATE, TUNNEL_TRACE_BIT } from "./simulate.js";
export { type ConditionSpec, emptyCondition, newSimContext, TopologyBuilder } from "./topology-builder.js";
export {
  type BridgeView,
  type PortView,
  type RouterView,
  TopologyView,
  tag,
} from "./topology-view.js";
export type { SimContext } from "./walk.js";
