// Network → local bridge: a stretched network spanning this site becomes a bridge keyed by the
// network's global VNI, with one REMOTE_SITE port per other site it spans; ports other sites
// report (PortRecords) are seeded as MAC/ARP entries behind the port for their site.
import { topologypb } from "@isthmus/schema";
import { canonicalIpList } from "./cidr.js";
import { type DerivedSet, normalizeMac } from "./derived-set.js";
import { chosenGatewayHost } from "./gateway-host.js";
import { derivedId, remoteSitePortId } from "./ids.js";
import type { IntentView } from "./view.js";

export const DEFAULT_NETWORK_MTU = 1450;
export const GLOBAL_VNI_MIN = 0x100000;
export const GLOBAL_VNI_MAX = 0x7ffffe;

/** Unit "network": the bridge and its remote-site ports. */
export function deriveNetwork(view: IntentView, id: string, out: DerivedSet): void {
  const n = view.get("network", id);
  if (!n?.sites.includes(view.site)) return;
  const name = n.meta?.name ?? "";
  if (n.vni < GLOBAL_VNI_MIN || n.vni > GLOBAL_VNI_MAX) {
    out.problem(
      `network ${id}: vni ${n.vni} is outside the global range 0x100000–0x7FFFFE; bridge not created`,
    );
    return;
  }
  out.bridge({
    id,
    name,
    networkId: id,
    tunnelKey: n.vni,
    mtu: n.mtu || DEFAULT_NETWORK_MTU,
    adminStateUp: true,
  });
  // Remote-site ports live on the gateway host: other hosts tunnel to it with the bridge's key.
  const gateway = chosenGatewayHost(view);
  for (const site of [...new Set(n.sites)].sort()) {
    if (site === view.site) continue;
    out.port({
      hostId: gateway?.id ?? "",
      id: remoteSitePortId(id, site),
      name: `${name}@${site}`,
      type: topologypb.PortType.PORT_TYPE_REMOTE_SITE,
      deviceId: id,
      remoteSite: site,
      adminStateUp: true,
      intentId: id,
    });
  }
}

/**
 * Unit "remotePort": a PortRecord of another site on a network both sites span → its MAC behind
 * the REMOTE_SITE port for that site, and its addresses as ARP entries. This site's own records
 * are ignored here: the local binding (translateLocalPort) places them.
 */
export function deriveRemotePortRecord(view: IntentView, id: string, out: DerivedSet): void {
  const p = view.get("portRecord", id);
  if (!p || p.site === view.site) return;
  const n = view.get("network", p.networkId);
  if (!n?.sites.includes(view.site) || !n.sites.includes(p.site)) return;
  if (n.vni < GLOBAL_VNI_MIN || n.vni > GLOBAL_VNI_MAX) return; // no bridge (deriveNetwork says why)
  const mac = normalizeMac(p.mac);
  if (!mac) {
    out.problem(`port record ${id}: mac "${p.mac}" is not a unicast MAC; no MAC/ARP entries`);
    return;
  }
  out.macEntry({
    id: derivedId(id, "mac-entry"),
    bridgeId: n.meta!.id,
    mac,
    portId: remoteSitePortId(n.meta!.id, p.site),
  });
  const ips = canonicalIpList(p.ips, (bad) =>
    out.problem(`port record ${id}: ips: "${bad}" is not an IP address; skipped`),
  );
  for (const ip of ips) {
    out.arpEntry({ id: derivedId(id, `arp/${ip}`), bridgeId: n.meta!.id, ip, mac });
  }
}
