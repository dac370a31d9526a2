// The seam between the controller's I/O and the pure translation (./translate): the controller
// calls it with the in-memory IntentIndex already holding the state after a change and the prior
// versions of what the change touched. Tests may substitute a smaller translator.
import type { intentpb, topologypb } from "@isthmus/schema";
import {
  type IntentView,
  type LocalHost,
  type LocalPortBinding,
  type TopologyDelta,
  translateAll,
  translateAllSteps,
  translateChange,
  translateHost,
  translateLocalPort,
} from "./translate/index.js";

export interface Translator {
  translateChange(
    view: IntentView,
    change: intentpb.IntentChange,
    prior: readonly intentpb.IntentObject[],
  ): TopologyDelta;
  translateLocalPort(view: IntentView, portId: string, prior: LocalPortBinding | undefined): TopologyDelta;
  translateHost(view: IntentView, hostId: string, prior: LocalHost | undefined): TopologyDelta;
  translateAll(view: IntentView): { objects: topologypb.TopologyObject[]; problems: string[] };
  /** translateAll in steps (optional): the controller lets its event loop run between them. */
  translateAllSteps?(
    view: IntentView,
    unitsPerStep: number,
  ): Generator<void, { objects: topologypb.TopologyObject[]; problems: string[] }>;
}

export const siteTranslator: Translator = {
  translateChange,
  translateLocalPort,
  translateHost,
  translateAll,
  translateAllSteps,
};
