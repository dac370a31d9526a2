// Public surface of the controller's translation: global intent + site-local objects → site
// topology, as pure functions over an IntentView. See docs/translation.md for what each intent
// object becomes.
export { canonicalIp, cidrContains, hostPrefix, networkOf } from "./cidr.js";
export { normalizeMac, refKey, topologyRefOf } from "./derived-set.js";
export { chosenGatewayHost } from "./gateway-host.js";
export * from "./ids.js";
export {
  DEFAULT_MAX_INDEX_OBJECTS,
  IntentIndex,
  type IntentIndexOptions,
  type TunnelKeyMove,
} from "./intent-index.js";
export { DEFAULT_NETWORK_MTU, GLOBAL_VNI_MAX, GLOBAL_VNI_MIN } from "./network.js";
export { type ChangedObject, type OverlayObject, overlayView } from "./prior-view.js";
export {
  translateAll,
  translateAllSteps,
  translateChange,
  translateChangedObjects,
  translateHost,
  translateLocalPort,
} from "./translate.js";
export {
  INTENT_KINDS,
  type IntentKind,
  type IntentView,
  type LocalHost,
  type LocalPortBinding,
  type TopologyDelta,
  type ViewKind,
  type ViewKinds,
  viewObjectId,
} from "./view.js";
export { kindOfObjectKind, unwrapIntentObject, wrapIntentObject } from "./view-indexes.js";
