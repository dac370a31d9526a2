// Field validation and referential checks for admin-declared objects. Each check throws an
// IntentError naming the offending field (dotted path from the object kind, e.g.
// "network.subnets[0].gateway_ip"). Pure functions of the object and a read-only view of state.
import { intentpb } from "@isthmus/schema";
import {
  type Address,
  isReservedInPrefix,
  type Prefix,
  parseAddress,
  parsePrefix,
  prefixContains,
  prefixesOverlap,
} from "./address.js";
import { IntentError, invalid } from "./errors.js";
import { isUuid, type KindKey, type KindMessages } from "./kinds.js";

/** Global tunnel keys (DESIGN.md §5): networks and router transit paths. */
export const GLOBAL_VNI_MIN = 0x100000;
export const GLOBAL_VNI_MAX = 0x7ffffe;

export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
export const MAX_LABELS = 64;
export const MAX_DESCRIPTION = 1024;
export const MAX_LIST_ITEMS = 256;

/** Site names are DNS labels: they appear in tokens, logs and derived host names. */
export const SITE_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function checkSiteName(field: string, name: string): void {
  if (!name) throw invalid(field, "is required");
  if (!SITE_NAME_RE.test(name)) {
    throw invalid(
      field,
      `"${name}" is not a valid site name (lowercase letters, digits and '-', 1–63, like a DNS label)`,
    );
  }
}

export interface IntentView {
  get<K extends KindKey>(kind: K, id: string): KindMessages[K] | undefined;
  list<K extends KindKey>(kind: K): KindMessages[K][];
  site(name: string): intentpb.Site | undefined;
}

export function checkName(field: string, name: string): void {
  if (!name) throw invalid(field, "is required");
  if (!NAME_RE.test(name)) {
    throw invalid(
      field,
      `"${name}" is not a valid name (1–63 of letters, digits, '.', '_', '-', starting with a letter or digit)`,
    );
  }
}

export function checkMeta(field: string, meta: intentpb.ObjectMeta | undefined): intentpb.ObjectMeta {
  if (!meta) throw invalid(`${field}.meta`, "is required");
  checkName(`${field}.meta.name`, meta.name);
  if (meta.id && !isUuid(meta.id)) throw invalid(`${field}.meta.id`, `"${meta.id}" is not a lowercase UUID`);
  if (meta.description.length > MAX_DESCRIPTION) {
    throw invalid(`${field}.meta.description`, `longer than ${MAX_DESCRIPTION} characters`);
  }
  const keys = Object.keys(meta.labels).sort();
  if (keys.length > MAX_LABELS) throw invalid(`${field}.meta.labels`, `more than ${MAX_LABELS} labels`);
  const labels: Record<string, string> = {};
  for (const k of keys) {
    if (!/^[A-Za-z0-9][A-Za-z0-9./_-]{0,126}$/.test(k))
      throw invalid(`${field}.meta.labels`, `bad label key "${k}"`);
    const v = meta.labels[k] ?? "";
    if (v.length > 256) throw invalid(`${field}.meta.labels.${k}`, "value longer than 256 characters");
    labels[k] = v;
  }
  return { ...meta, labels };
}

function checkCount(field: string, n: number): void {
  if (n > MAX_LIST_ITEMS) throw invalid(field, `more than ${MAX_LIST_ITEMS} entries`);
}

export function needPrefix(field: string, text: string, exact: boolean): Prefix {
  const p = parsePrefix(text);
  if (!p) throw invalid(field, `"${text}" is not a CIDR prefix (e.g. 10.0.0.0/24 or 2001:db8::/64)`);
  if (exact && !p.exact) {
    throw invalid(field, `"${text}" has host bits set (the network address must end in zero bits)`);
  }
  return p;
}

export function needAddress(field: string, text: string): Address {
  const a = parseAddress(text);
  if (!a) throw invalid(field, `"${text}" is not an IP address`);
  return a;
}

function needKnownSite(view: IntentView, field: string, name: string): intentpb.Site {
  if (!name) throw invalid(field, "is required");
  const s = view.site(name);
  if (!s) throw invalid(field, `unknown site "${name}"`);
  if (s.state === intentpb.SiteState.SITE_STATE_REVOKED) {
    throw new IntentError("failed_precondition", `site "${name}" is revoked`, field);
  }
  return s;
}

function needObject<K extends KindKey>(
  view: IntentView,
  kind: K,
  field: string,
  id: string,
): KindMessages[K] {
  if (!id) throw invalid(field, "is required");
  const o = view.get(kind, id);
  if (!o) throw new IntentError("not_found", `no ${kind} with id "${id}"`, field);
  return o;
}

export function checkVni(field: string, vni: number): void {
  if (vni < GLOBAL_VNI_MIN || vni > GLOBAL_VNI_MAX) {
    throw invalid(field, `${vni} (0x${vni.toString(16)}) is outside the global range 0x100000–0x7ffffe`);
  }
}

export function networkPrefixes(n: intentpb.Network): Prefix[] {
  return n.subnets.flatMap((s) => {
    const p = parsePrefix(s.cidr);
    return p ? [p] : [];
  });
}

export function checkNetwork(view: IntentView, n: intentpb.Network): void {
  checkCount("network.subnets", n.subnets.length);
  const prefixes: Prefix[] = [];
  n.subnets.forEach((s, i) => {
    const f = `network.subnets[${i}]`;
    const p = needPrefix(`${f}.cidr`, s.cidr, true);
    if (s.gatewayIp) {
      const g = needAddress(`${f}.gateway_ip`, s.gatewayIp);
      if (!prefixContains(p, g))
        throw invalid(`${f}.gateway_ip`, `${s.gatewayIp} is outside subnet ${s.cidr}`);
      if (isReservedInPrefix(p, g)) {
        throw invalid(`${f}.gateway_ip`, `${s.gatewayIp} is the network or broadcast address of ${s.cidr}`);
      }
    }
    prefixes.forEach((q, j) => {
      if (prefixesOverlap(p, q)) {
        throw invalid(`${f}.cidr`, `${s.cidr} overlaps subnets[${j}] (${n.subnets[j]?.cidr})`);
      }
    });
    prefixes.push(p);
  });
  checkCount("network.sites", n.sites.length);
  const seen = new Set<string>();
  n.sites.forEach((s, i) => {
    needKnownSite(view, `network.sites[${i}]`, s);
    if (seen.has(s)) throw invalid(`network.sites[${i}]`, `site "${s}" listed twice`);
    seen.add(s);
  });
  if (n.vni !== 0) checkVni("network.vni", n.vni);
  if (n.mtu !== 0 && (n.mtu < 576 || n.mtu > 9000))
    throw invalid("network.mtu", `${n.mtu} is outside 576–9000 (0 = default 1450)`);
}

export function checkRouter(view: IntentView, r: intentpb.Router): void {
  checkCount("router.uplinks", r.uplinks.length);
  checkCount("router.routes", r.routes.length);
  const sites = new Set<string>();
  r.uplinks.forEach((u, i) => {
    const f = `router.uplinks[${i}]`;
    needKnownSite(view, `${f}.site`, u.site);
    if (sites.has(u.site)) throw invalid(`${f}.site`, `router already has an uplink at site "${u.site}"`);
    sites.add(u.site);
    const p = needPrefix(`${f}.ip_cidr`, u.ipCidr, false);
    if (p.exact && p.length < (p.family === 4 ? 31 : 127)) {
      throw invalid(
        `${f}.ip_cidr`,
        `"${u.ipCidr}" is a network address; give the router's own address with its prefix length, e.g. 198.51.100.2/24`,
      );
    }
    if (u.gatewayIp) {
      const g = needAddress(`${f}.gateway_ip`, u.gatewayIp);
      if (!prefixContains(p, g)) throw invalid(`${f}.gateway_ip`, `${u.gatewayIp} is outside ${u.ipCidr}`);
      if (g.value === p.address) throw invalid(`${f}.gateway_ip`, "is the router's own uplink address");
    }
  });
  r.routes.forEach((rt, i) => {
    const f = `router.routes[${i}]`;
    const dst = needPrefix(`${f}.destination`, rt.destination, true);
    if (rt.blackhole) {
      if (rt.nextHop) throw invalid(`${f}.next_hop`, "must be empty for a blackhole route");
    } else {
      const nh = needAddress(`${f}.next_hop`, rt.nextHop);
      if (nh.family !== dst.family) throw invalid(`${f}.next_hop`, "address family differs from destination");
    }
    if (rt.site) needKnownSite(view, `${f}.site`, rt.site);
  });
  if (r.transitVni !== 0) checkVni("router.transit_vni", r.transitVni);
}

/** The router interface's address: given, or the gateway of the first subnet that has one. */
export function routerInterfaceAddress(ri: intentpb.RouterInterface, n: intentpb.Network): string {
  if (ri.ip) return ri.ip;
  const s = n.subnets.find((x) => x.gatewayIp);
  if (!s) throw invalid("router_interface.ip", "is required: the network has no subnet with a gateway_ip");
  return s.gatewayIp;
}

export function checkRouterInterface(view: IntentView, ri: intentpb.RouterInterface): void {
  const router = needObject(view, "router", "router_interface.router_id", ri.routerId);
  const net = needObject(view, "network", "router_interface.network_id", ri.networkId);
  const others = view.list("routerInterface").filter((x) => x.meta?.id !== ri.meta?.id);
  if (others.some((x) => x.routerId === ri.routerId && x.networkId === ri.networkId)) {
    throw new IntentError(
      "already_exists",
      `router "${router.meta?.name}" already has an interface on network "${net.meta?.name}"`,
      "router_interface.network_id",
    );
  }
  const ipText = routerInterfaceAddress(ri, net);
  const ip = needAddress("router_interface.ip", ipText);
  const inSubnet = networkPrefixes(net).find((p) => prefixContains(p, ip));
  if (!inSubnet)
    throw invalid("router_interface.ip", `${ipText} is in none of network "${net.meta?.name}"'s subnets`);
  if (isReservedInPrefix(inSubnet, ip))
    throw invalid("router_interface.ip", `${ipText} is a network or broadcast address`);
  for (const o of others.filter((x) => x.networkId === ri.networkId)) {
    const onet = view.get("network", o.networkId);
    if (onet && routerInterfaceAddress(o, onet) === ipText) {
      throw new IntentError(
        "already_exists",
        `${ipText} is already used by router interface "${o.meta?.name}"`,
        "router_interface.ip",
      );
    }
  }
  for (const p of view.list("portRecord").filter((x) => x.networkId === ri.networkId)) {
    if (p.ips.includes(ipText)) {
      throw new IntentError(
        "already_exists",
        `${ipText} is already used by port "${p.meta?.name}"`,
        "router_interface.ip",
      );
    }
  }
  if (ri.mac && !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(ri.mac)) {
    throw invalid(
      "router_interface.mac",
      `"${ri.mac}" is not a lowercase MAC address like 02:00:00:00:00:01`,
    );
  }
  checkRouterSubnetsDisjoint(view, ri.routerId, others, ri.networkId, net, "router_interface.network_id");
}

/** A router cannot route between overlapping subnets: every network it attaches must be disjoint. */
export function checkRouterSubnetsDisjoint(
  view: IntentView,
  routerId: string,
  interfaces: intentpb.RouterInterface[],
  networkId: string,
  net: intentpb.Network,
  field: string,
): void {
  const mine = networkPrefixes(net);
  for (const o of interfaces) {
    if (o.routerId !== routerId || o.networkId === networkId) continue;
    const other = view.get("network", o.networkId);
    if (!other) continue;
    for (const p of networkPrefixes(other)) {
      const clash = mine.find((q) => prefixesOverlap(p, q));
      if (clash) {
        const cidr = net.subnets[mine.indexOf(clash)]?.cidr;
        throw invalid(
          field,
          `subnet ${cidr} of network "${net.meta?.name}" overlaps a subnet of network "${other.meta?.name}" on the same router`,
        );
      }
    }
  }
}

export function checkSecurityGroup(_view: IntentView, _g: intentpb.SecurityGroup): void {
  // Only meta (checked by the caller) and a boolean: nothing more to validate.
}

const NAMED_PROTOCOLS = new Set(["any", "tcp", "udp", "icmp", "icmpv6"]);

export function checkSecurityGroupRule(view: IntentView, r: intentpb.SecurityGroupRule): void {
  needObject(view, "securityGroup", "security_group_rule.security_group_id", r.securityGroupId);
  if (r.direction === intentpb.RuleDirection.RULE_DIRECTION_UNSPECIFIED) {
    throw invalid("security_group_rule.direction", "is required (ingress or egress)");
  }
  if (r.ethertype === intentpb.EtherType.ETHER_TYPE_UNSPECIFIED) {
    throw invalid("security_group_rule.ethertype", "is required (IPv4 or IPv6)");
  }
  const proto = r.protocol || "any";
  if (!NAMED_PROTOCOLS.has(proto)) {
    if (!/^\d{1,3}$/.test(proto) || Number(proto) > 255) {
      throw invalid(
        "security_group_rule.protocol",
        `"${proto}" is not any, tcp, udp, icmp, icmpv6 or a protocol number 0–255`,
      );
    }
  }
  if (proto === "icmp" && r.ethertype === intentpb.EtherType.ETHER_TYPE_IPV6) {
    throw invalid("security_group_rule.protocol", "use icmpv6 with ethertype IPv6");
  }
  if (proto === "icmpv6" && r.ethertype === intentpb.EtherType.ETHER_TYPE_IPV4) {
    throw invalid("security_group_rule.protocol", "icmpv6 needs ethertype IPv6");
  }
  const hasPorts = r.portRangeMin !== 0 || r.portRangeMax !== 0;
  if (hasPorts) {
    if (proto === "tcp" || proto === "udp") {
      if (r.portRangeMin < 1 || r.portRangeMin > 65535) {
        throw invalid("security_group_rule.port_range_min", `${r.portRangeMin} is outside 1–65535`);
      }
      if (r.portRangeMax < 1 || r.portRangeMax > 65535) {
        throw invalid("security_group_rule.port_range_max", `${r.portRangeMax} is outside 1–65535`);
      }
      if (r.portRangeMin > r.portRangeMax) {
        throw invalid(
          "security_group_rule.port_range_max",
          `port range is inverted (${r.portRangeMin} > ${r.portRangeMax})`,
        );
      }
    } else if (proto === "icmp" || proto === "icmpv6") {
      if (r.portRangeMin > 255)
        throw invalid("security_group_rule.port_range_min", "ICMP type must be 0–255");
      if (r.portRangeMax > 255 && r.portRangeMax !== 0xffff) {
        throw invalid("security_group_rule.port_range_max", "ICMP code must be 0–255 (65535 = any)");
      }
    } else {
      throw invalid(
        "security_group_rule.port_range_min",
        `ports apply only to tcp, udp and icmp, not "${proto}"`,
      );
    }
  }
  if (r.remoteCidr && r.remoteGroupId) {
    throw invalid(
      "security_group_rule.remote_group_id",
      "set at most one of remote_cidr and remote_group_id",
    );
  }
  if (r.remoteCidr) {
    const p = needPrefix("security_group_rule.remote_cidr", r.remoteCidr, true);
    const want = r.ethertype === intentpb.EtherType.ETHER_TYPE_IPV4 ? 4 : 6;
    if (p.family !== want)
      throw invalid("security_group_rule.remote_cidr", `is IPv${p.family} but ethertype is IPv${want}`);
  }
  if (r.remoteGroupId)
    needObject(view, "securityGroup", "security_group_rule.remote_group_id", r.remoteGroupId);
}

export function checkFloatingIp(view: IntentView, f: intentpb.FloatingIP): intentpb.FloatingIP {
  const router = needObject(view, "router", "floating_ip.router_id", f.routerId);
  needKnownSite(view, "floating_ip.site", f.site);
  const uplink = router.uplinks.find((u) => u.site === f.site);
  if (!uplink) {
    throw new IntentError(
      "failed_precondition",
      `router "${router.meta?.name}" has no uplink at site "${f.site}" to carry a floating IP`,
      "floating_ip.site",
    );
  }
  const ext = needAddress("floating_ip.external_ip", f.externalIp);
  const up = parsePrefix(uplink.ipCidr);
  if (up && up.family !== ext.family) {
    throw invalid(
      "floating_ip.external_ip",
      `is IPv${ext.family} but the uplink at "${f.site}" is IPv${up.family}`,
    );
  }
  for (const o of view.list("floatingIp")) {
    if (o.meta?.id !== f.meta?.id && o.externalIp === f.externalIp) {
      throw new IntentError(
        "already_exists",
        `${f.externalIp} is already floating IP "${o.meta?.name}"`,
        "floating_ip.external_ip",
      );
    }
  }
  let fixedIp = f.fixedIp;
  if (f.portId) {
    const port = needObject(view, "portRecord", "floating_ip.port_id", f.portId);
    if (fixedIp) {
      if (!port.ips.includes(fixedIp))
        throw invalid("floating_ip.fixed_ip", `${fixedIp} is not an address of port "${port.meta?.name}"`);
    } else {
      fixedIp = port.ips.find((ip) => parseAddress(ip)?.family === ext.family) ?? "";
      if (!fixedIp)
        throw invalid("floating_ip.port_id", `port "${port.meta?.name}" has no IPv${ext.family} address`);
    }
  } else if (fixedIp) {
    throw invalid("floating_ip.fixed_ip", "needs port_id");
  }
  return { ...f, fixedIp };
}

/** A port reported by `site`; `field` is e.g. "ports[3]". */
export function checkPortRecord(view: IntentView, site: string, p: intentpb.PortRecord, field: string): void {
  const id = p.meta?.id ?? "";
  if (!isUuid(id))
    throw invalid(`${field}.meta.id`, `"${id}" is not a lowercase UUID (sites name their ports)`);
  if (p.meta?.name) checkName(`${field}.meta.name`, p.meta.name);
  if (p.site && p.site !== site) {
    throw new IntentError(
      "permission_denied",
      `site "${site}" may not report ports of site "${p.site}"`,
      `${field}.site`,
    );
  }
  const net = needObject(view, "network", `${field}.network_id`, p.networkId);
  if (!net.sites.includes(site)) {
    throw new IntentError(
      "failed_precondition",
      `network "${net.meta?.name}" does not span site "${site}"`,
      `${field}.network_id`,
    );
  }
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(p.mac))
    throw invalid(`${field}.mac`, `"${p.mac}" is not a lowercase MAC address`);
  checkCount(`${field}.ips`, p.ips.length);
  const prefixes = networkPrefixes(net);
  p.ips.forEach((ipText, i) => {
    const ip = needAddress(`${field}.ips[${i}]`, ipText);
    if (!prefixes.some((q) => prefixContains(q, ip))) {
      throw invalid(`${field}.ips[${i}]`, `${ipText} is in none of network "${net.meta?.name}"'s subnets`);
    }
  });
  checkCount(`${field}.security_group_ids`, p.securityGroupIds.length);
  p.securityGroupIds.forEach((g, i) => {
    needObject(view, "securityGroup", `${field}.security_group_ids[${i}]`, g);
  });
}

export function checkGatewayEndpoints(endpoints: intentpb.GatewayEndpoint[]): void {
  checkCount("gateway_endpoints", endpoints.length);
  endpoints.forEach((e, i) => {
    const f = `gateway_endpoints[${i}]`;
    if (!e.host) throw invalid(`${f}.host`, "is required");
    needAddress(`${f}.ip`, e.ip);
    if (e.port > 65535) throw invalid(`${f}.port`, `${e.port} is outside 0–65535 (0 = 4789)`);
  });
}
