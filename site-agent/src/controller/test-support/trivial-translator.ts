// A deliberately tiny Translator for testing the controller's apply, store and watch paths
// without the real translation: Network → Bridge (same id, its VNI), local port → VM Port.
import { intentpb, topologypb } from "@isthmus/schema";
import type { Translator } from "../translator.js";

export const trivialTranslator: Translator = {
  translateChange(view, change) {
    const upserts: topologypb.TopologyObject[] = [];
    const deletes: topologypb.TopologyRef[] = [];
    for (const ref of change.deletes) {
      if (ref.kind === intentpb.ObjectKind.OBJECT_KIND_NETWORK) {
        deletes.push({ kind: topologypb.TopologyKind.TOPOLOGY_KIND_BRIDGE, id: ref.id });
      }
    }
    for (const o of change.upserts) {
      if (!o.network) continue;
      const n = view.get(intentpb.ObjectKind.OBJECT_KIND_NETWORK, o.network.meta!.id)?.network ?? o.network;
      upserts.push({
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
      });
    }
    return { upserts, deletes };
  },
  translateLocalPort(_view, b) {
    if (b.hostId === "")
      return { upserts: [], deletes: [{ kind: topologypb.TopologyKind.TOPOLOGY_KIND_PORT, id: b.id }] };
    return {
      upserts: [
        {
          port: topologypb.Port.fromPartial({
            id: b.id,
            name: b.name,
            type: topologypb.PortType.PORT_TYPE_VM,
            deviceId: b.networkId,
            hostId: b.hostId,
            interfaceName: b.interfaceName,
            mac: b.mac,
            ips: b.ips,
            tunnelKey: b.tunnelKey,
            adminStateUp: true,
          }),
        },
      ],
      deletes: [],
    };
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
