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

/**
 * The version of what siteTranslator derives. Bump it whenever the same intent comes to derive
 * different topology (new object shapes, new ids): a site's stored topology is then moved to the
 * new derivation when its controller next becomes active (IntentApplier.reconcileTranslation).
 * 1: each VM port with its own inbound and outbound chains. 2: ports with the same groups share
 * a profile's chains. 3: a security group's address group lists no addresses itself; each member
 * port's are an IpAddrGroupMember of their own. 4: a VM port bound at this site has no MacEntry
 * or ArpEntry (the bridge reads its MAC and addresses from the port).
 */
export const TRANSLATION_VERSION = 4;

export interface Translator {
  /**
   * What the stored topology was derived by (siteTranslator: TRANSLATION_VERSION). Absent: the
   * controller never re-derives the stored topology on start (test translators).
   */
  readonly version?: number;
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
  version: TRANSLATION_VERSION,
  translateChange,
  translateLocalPort,
  translateHost,
  translateAll,
  translateAllSteps,
};
