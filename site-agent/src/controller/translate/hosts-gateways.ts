// Site-local hosts pass through as topology Hosts; other sites' Gateway objects become
// RemoteGateways (the endpoints this site's gateway agents tunnel inter-site traffic to).
import { canonicalIp } from "./cidr.js";
import type { DerivedSet } from "./derived-set.js";
import { derivedId } from "./ids.js";
import type { IntentView } from "./view.js";

export const DEFAULT_VXLAN_PORT = 4789;

/** Unit "host". */
export function deriveHost(view: IntentView, id: string, out: DerivedSet): void {
  const h = view.get("host", id);
  if (!h) return;
  out.host({
    id: h.id,
    name: h.name,
    tunnelIp: h.tunnelIp,
    tunnelPort: h.tunnelPort || DEFAULT_VXLAN_PORT,
    role: h.role,
    alive: h.alive ?? true,
    wanIp: h.wanIp,
    wanPort: h.wanPort,
  });
}

/** Unit "gateway": one RemoteGateway per endpoint of another site's gateway. */
export function deriveGateway(view: IntentView, id: string, out: DerivedSet): void {
  const g = view.get("gateway", id);
  if (!g || g.site === view.site) return;
  const seen = new Set<string>();
  g.endpoints.forEach((e, i) => {
    const ip = canonicalIp(e.ip);
    if (!ip) {
      out.problem(`gateway ${id}: endpoints[${i}]: ip "${e.ip}" is not an IP address; endpoint skipped`);
      return;
    }
    const port = e.port || DEFAULT_VXLAN_PORT;
    const key = `${ip}:${port}`;
    if (seen.has(key)) return;
    seen.add(key);
    out.remoteGateway({ id: derivedId(id, `endpoint/${key}`), site: g.site, ip, port });
  });
}
