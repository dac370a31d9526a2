// The seam between the controller's I/O and the pure translation of intent into local topology
// (site-agent/src/controller/translate/). The controller calls it with an IntentView already
// holding the state after the change (the state before it is available through `previous`).
import type { intentpb } from "@isthmus/schema";
import type { IntentView } from "./intent-view.js";
import type { LocalPortBinding } from "./local-objects.js";
import type { TopologyDelta } from "./topology-store.js";

export interface Translator {
  translateChange(view: IntentView, change: intentpb.IntentChange, site: string): TopologyDelta;
  translateLocalPort(view: IntentView, binding: LocalPortBinding): TopologyDelta;
}
