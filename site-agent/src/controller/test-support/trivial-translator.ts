// A deliberately tiny Translator for testing the controller's store and watch paths with easily
// predicted output: Network → Bridge (same id, its VNI); nothing else.
import { intentpb, type topologypb } from "@isthmus/schema";
import type { IntentView } from "../translate/index.js";
import type { Translator } from "../translator.js";

function bridgeOf(n: intentpb.Network): topologypb.TopologyObject {
  return {
    bridge: {
      id: n.meta!.id,
      name: n.meta!.name,
      networkId: n.meta!.id,
      tunnelKey: n.vni,
      inboundFilterId: "",
      outboundFilterId: "",
      mtu: n.mtu || 1450,
      adminStateUp: true,
    },
  };
}

const none = { upserts: [], deletes: [], problems: [] };

export const trivialTranslator: Translator = {
  translateChange(view, change) {
    const out = {
      upserts: [] as topologypb.TopologyObject[],
      deletes: [] as topologypb.TopologyRef[],
      problems: [],
    };
    for (const ref of change.deletes) {
      if (ref.kind === intentpb.ObjectKind.OBJECT_KIND_NETWORK) out.deletes.push({ kind: 2, id: ref.id });
    }
    for (const o of change.upserts) {
      const n = o.network && view.get("network", o.network.meta!.id);
      if (n) out.upserts.push(bridgeOf(n));
    }
    return out;
  },
  translateLocalPort: () => none,
  translateHost: () => none,
  translateAll(view: IntentView) {
    return { objects: [...view.list("network")].map(bridgeOf), problems: [] };
  },
};

/** An IntentObject holding a Network. */
export function network(id: string, name: string, vni: number, revision = 0): intentpb.IntentObject {
  return {
    network: intentpb.Network.fromPartial({ meta: { id, name, revision }, vni, sites: ["a"], subnets: [] }),
  };
}

export function networkRef(id: string): intentpb.ObjectRef {
  return { kind: intentpb.ObjectKind.OBJECT_KIND_NETWORK, id, name: "" };
}
