// Inter-site forwarding at a gateway agent (DESIGN §2.4): a frame arriving with a global network key
// is delivered by (key, inner destination MAC) — to a port on this gateway, to the site host that
// owns the MAC (with that port's intra-site key), or on to the remote site's gateway. Unknown and
// broadcast destinations are flooded to the network's ports on the other side of the gateway.
import { topologypb } from "@isthmus/schema";
import type { Upcall, UpcallDecision } from "./datapath.js";
import type { FlowOutput } from "./flow-actions.js";
import { MAX_OUTPUTS } from "./flow-actions.js";
import { maskFromFields } from "./flow-key.js";
import type { TopologyStore } from "./topology-store.js";

/** Tag on flows that depend on which MACs a bridge knows (flooded destinations). */
export function bridgeMacsTag(bridgeId: string): string {
  return `macs:${bridgeId}`;
}

export function macTag(bridgeId: string, mac: string): string {
  return `mac:${bridgeId}:${mac.toLowerCase()}`;
}

function macText(b: Buffer): string {
  return [...b.subarray(0, 6)].map((x) => x.toString(16).padStart(2, "0")).join(":");
}

export class GatewayForwarder {
  constructor(
    private readonly hostId: string,
    private readonly store: TopologyStore,
    private readonly portNoById: Map<string, number>,
  ) {}

  forward(u: Upcall): UpcallDecision {
    const bridge = [...this.store.bridges.values()].find((b) => b.tunnelKey === u.tunnelKey);
    if (!bridge) return drop("vxlan_unknown_key");
    const fromRemote =
      u.from !== undefined && [...this.store.remoteGateways.values()].some((g) => g.ip === u.from!.ip);
    const dst = macText(u.frame);
    const tags = [bridge.id, macTag(bridge.id, dst)];
    const entry = [...this.store.macEntries.values()].find(
      (m) => m.bridgeId === bridge.id && m.mac.toLowerCase() === dst,
    );
    const broadcast = (u.frame[0]! & 1) === 1;
    const outputs: FlowOutput[] = [];
    if (!broadcast && entry) {
      tags.push(entry.id, entry.portId);
      const out = this.toPort(entry.portId, bridge, fromRemote, tags);
      if (typeof out === "string") return drop(out);
      outputs.push(out);
    } else {
      tags.push(bridgeMacsTag(bridge.id));
      for (const p of this.store.ports.values()) {
        if (p.deviceId !== bridge.id) continue;
        const remoteSite = p.type === topologypb.PortType.PORT_TYPE_REMOTE_SITE;
        // Floods cross the gateway once: from a remote site to local ports, and back.
        if (remoteSite === fromRemote || (p.type !== topologypb.PortType.PORT_TYPE_VM && !remoteSite))
          continue;
        const out = this.toPort(p.id, bridge, fromRemote, tags);
        if (typeof out !== "string") outputs.push(out);
      }
    }
    const unique = dedupe(outputs);
    return {
      actions:
        unique.length > 0 ? { outputs: unique } : { outputs: [], dropReason: "gateway_no_destination" },
      install:
        unique.length <= MAX_OUTPUTS
          ? { mask: maskFromFields(["inPort", "tunnelKey", "ethDst"]), tags }
          : undefined,
    };
  }

  private toPort(
    portId: string,
    bridge: topologypb.Bridge,
    fromRemote: boolean,
    tags: string[],
  ): FlowOutput | string {
    const local = this.portNoById.get(portId);
    if (local !== undefined) return { kind: "port", portNo: local };
    const port = this.store.ports.get(portId);
    if (!port) return "egress_port_unknown";
    if (port.type === topologypb.PortType.PORT_TYPE_REMOTE_SITE) {
      if (fromRemote) return "gateway_hairpin";
      const rg = [...this.store.remoteGateways.values()].find((g) => g.site === port.remoteSite);
      if (!rg) return "remote_gateway_unknown";
      tags.push(rg.id);
      return { kind: "tunnel", key: bridge.tunnelKey, remoteIp: rg.ip, remotePort: rg.port || 4789 };
    }
    const host = this.store.hosts.get(port.hostId);
    if (!host || host.tunnelIp === "" || host.id === this.hostId) return "egress_host_unknown";
    if (port.tunnelKey === 0) return "egress_port_without_key";
    tags.push(host.id);
    return {
      kind: "tunnel",
      key: port.tunnelKey,
      remoteIp: host.tunnelIp,
      remotePort: host.tunnelPort || 4789,
    };
  }
}

function dedupe(outputs: FlowOutput[]): FlowOutput[] {
  const seen = new Set<string>();
  return outputs.filter((o) => {
    const k = o.kind === "port" ? `p${o.portNo}` : `t${o.key}@${o.remoteIp}:${o.remotePort}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function drop(reason: string): UpcallDecision {
  return { actions: { outputs: [], dropReason: reason } };
}
