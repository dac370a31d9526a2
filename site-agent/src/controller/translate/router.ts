// Router → local replica: every site the router spans gets the same router (same id, same
// interface MACs) with its interface ports, connected and static routes, and — where the router
// has an uplink at this site — the uplink port on a gateway host, a default route and NAT chains.
import { type intentpb, topologypb } from "@isthmus/schema";
import { canonicalIp, cidrContains, hostPrefix, networkOf, parseCidr } from "./cidr.js";
import {
  anyPrefixLike,
  type DerivedSet,
  ETHER_TYPE_IPV4,
  ETHER_TYPE_IPV6,
  normalizeMac,
} from "./derived-set.js";
import { chosenGatewayHost } from "./gateway-host.js";
import {
  derivedId,
  natInChainId,
  natOutChainId,
  routerInterfaceBridgePortId,
  routerInterfaceMac,
  routerInterfaceRouterPortId,
  uplinkInterfaceName,
  uplinkMac,
  uplinkPortId,
} from "./ids.js";
import type { IntentView } from "./view.js";

/** Route weights: lower wins among routes to one prefix. */
export const LOCAL_ROUTE_WEIGHT = 0;
export const ROUTE_WEIGHT = 100;
/** Rule positions in a router's NAT chains (ties are ordered by rule id; tied rules never overlap). */
export const NAT_REVERSE_POSITION = 10;
export const NAT_FLOATING_IP_POSITION = 100;
export const NAT_SNAT_POSITION = 200;
/** Source ports SNAT to the uplink address may use. */
export const SNAT_PORT_START = 1024;
export const SNAT_PORT_END = 65535;

/** The router's uplink at this site, if it has one (the first when intent lists several). */
export function uplinkHere(view: IntentView, r: intentpb.Router): intentpb.RouterUplink | undefined {
  return r.uplinks.find((u) => u.site === view.site);
}

/** A router exists at a site when it has an uplink there or an interface on a network there. */
export function routerSpansHere(view: IntentView, r: intentpb.Router): boolean {
  if (uplinkHere(view, r)) return true;
  for (const ri of view.routerInterfacesOfRouter(r.meta!.id)) {
    if (view.get("network", ri.networkId)?.sites.includes(view.site)) return true;
  }
  return false;
}

export interface InterfaceAddress {
  ip: string;
  /** The subnet the address lies in, normalized ("10.0.0.0/24"). */
  subnet: string;
  prefixLength: number;
}

/** A router interface's address and subnet, or a problem message. */
export function routerInterfaceAddress(
  ri: intentpb.RouterInterface,
  n: intentpb.Network,
): InterfaceAddress | string {
  const riId = ri.meta!.id;
  for (const s of n.subnets) {
    const subnet = networkOf(s.cidr);
    if (!subnet) continue;
    const ip = ri.ip !== "" ? canonicalIp(ri.ip) : canonicalIp(s.gatewayIp);
    if (ip && cidrContains(subnet, ip)) {
      return { ip, subnet, prefixLength: parseCidr(subnet)!.prefix };
    }
  }
  return ri.ip !== ""
    ? `router interface ${riId}: ip ${ri.ip} lies in no valid subnet of network ${n.meta!.id}; interface not created`
    : `router interface ${riId}: no ip and network ${n.meta!.id} has no subnet with a gateway_ip; interface not created`;
}

interface UplinkAddress {
  ip: string;
  cidr: string; // "198.51.100.2/24"
  subnet: string; // "198.51.100.0/24"
}

function uplinkAddress(routerId: string, u: intentpb.RouterUplink): UplinkAddress | string {
  const c = parseCidr(u.ipCidr);
  const subnet = networkOf(u.ipCidr);
  const ip = canonicalIp(u.ipCidr.split("/")[0] ?? "");
  if (!c || !subnet || !ip) {
    return `router ${routerId}: uplink at site ${u.site}: ip_cidr "${u.ipCidr}" is not address/prefix; uplink not created`;
  }
  return { ip, cidr: `${ip}/${c.prefix}`, subnet };
}

/** Unit "router": the device, its uplink at this site with routes and NAT, and static routes. */
export function deriveRouter(view: IntentView, id: string, out: DerivedSet): void {
  const r = view.get("router", id);
  if (!r || !routerSpansHere(view, r)) return;
  const name = r.meta?.name ?? "";
  const site = view.site;
  const uplink = uplinkHere(view, r);
  let up: UplinkAddress | undefined;
  if (uplink) {
    const a = uplinkAddress(id, uplink);
    if (typeof a === "string") out.problem(a);
    else up = a;
  }
  out.router({
    id,
    name,
    adminStateUp: true,
    transitTunnelKey: r.transitVni,
    inboundFilterId: up ? natInChainId(id, site) : "",
    outboundFilterId: up ? natOutChainId(id, site) : "",
  });

  // Ports a static route's next hop may resolve through: (subnet, port id), in port-id order.
  const onLink: { subnet: string; portId: string }[] = [];
  for (const ri of view.routerInterfacesOfRouter(id)) {
    const n = view.get("network", ri.networkId);
    if (!n?.sites.includes(site)) continue;
    const a = routerInterfaceAddress(ri, n);
    if (typeof a !== "string")
      onLink.push({ subnet: a.subnet, portId: routerInterfaceRouterPortId(ri.meta!.id) });
  }

  if (uplink && up) {
    const portId = uplinkPortId(id, site);
    onLink.push({ subnet: up.subnet, portId });
    const gw = chosenGatewayHost(view);
    out.port({
      id: portId,
      name: `${name}-uplink`,
      type: topologypb.PortType.PORT_TYPE_ROUTER_UPLINK,
      deviceId: id,
      hostId: gw?.id ?? "",
      interfaceName: uplinkInterfaceName(id),
      tunnelKey: view.tunnelKeyOf(portId),
      mac: uplinkMac(id, site),
      ips: [up.cidr],
      adminStateUp: true,
      intentId: id,
    });
    out.route({
      id: derivedId(id, `uplink/${site}/connected`),
      routerId: id,
      srcPrefix: anyPrefixLike(up.subnet),
      dstPrefix: up.subnet,
      type: topologypb.RouteType.ROUTE_TYPE_NORMAL,
      nextHopPortId: portId,
      weight: ROUTE_WEIGHT,
    });
    out.route({
      id: derivedId(id, `uplink/${site}/local`),
      routerId: id,
      srcPrefix: anyPrefixLike(up.subnet),
      dstPrefix: hostPrefix(up.ip)!,
      type: topologypb.RouteType.ROUTE_TYPE_LOCAL,
      nextHopPortId: portId,
      weight: LOCAL_ROUTE_WEIGHT,
    });
    if (uplink.gatewayIp !== "") {
      const gwIp = canonicalIp(uplink.gatewayIp);
      if (!gwIp || !cidrContains(up.subnet, gwIp)) {
        out.problem(
          `router ${id}: uplink at site ${site}: gateway_ip "${uplink.gatewayIp}" is not an address in ${up.subnet}; no default route`,
        );
      } else {
        const any = anyPrefixLike(up.subnet);
        out.route({
          id: derivedId(id, `uplink/${site}/default`),
          routerId: id,
          srcPrefix: any,
          dstPrefix: any,
          type: topologypb.RouteType.ROUTE_TYPE_NORMAL,
          nextHopPortId: portId,
          nextHopGateway: gwIp,
          weight: ROUTE_WEIGHT,
        });
      }
    }
    deriveUplinkNat(id, site, portId, up, uplink.snat, out);
  }

  onLink.sort((a, b) => (a.portId < b.portId ? -1 : a.portId > b.portId ? 1 : 0));
  const seen = new Set<string>();
  r.routes.forEach((sr, i) => {
    if (sr.site !== "" && sr.site !== site) return;
    const dst = networkOf(sr.destination);
    if (!dst) {
      out.problem(`router ${id}: routes[${i}]: destination "${sr.destination}" is not a CIDR; route skipped`);
      return;
    }
    const nextHop = sr.blackhole ? "" : canonicalIp(sr.nextHop);
    if (nextHop === undefined) {
      out.problem(`router ${id}: routes[${i}]: next_hop "${sr.nextHop}" is not an IP address; route skipped`);
      return;
    }
    const routeId = derivedId(id, `static/${site}/${dst}/${sr.blackhole ? "blackhole" : nextHop}`);
    if (seen.has(routeId)) return; // the same route listed twice
    seen.add(routeId);
    if (sr.blackhole) {
      out.route({
        id: routeId,
        routerId: id,
        srcPrefix: anyPrefixLike(dst),
        dstPrefix: dst,
        type: topologypb.RouteType.ROUTE_TYPE_BLACKHOLE,
        weight: ROUTE_WEIGHT,
      });
      return;
    }
    const via = onLink.find((p) => cidrContains(p.subnet, nextHop));
    if (!via) {
      out.problem(
        `router ${id}: routes[${i}]: next_hop ${nextHop} is on no subnet of the router at site ${site}; route skipped`,
      );
      return;
    }
    out.route({
      id: routeId,
      routerId: id,
      srcPrefix: anyPrefixLike(dst),
      dstPrefix: dst,
      type: topologypb.RouteType.ROUTE_TYPE_NORMAL,
      nextHopPortId: via.portId,
      nextHopGateway: nextHop,
      weight: ROUTE_WEIGHT,
    });
  });
}

/**
 * NAT for an uplink. Pre-routing (router inbound filter): reverse-SNAT for return traffic of
 * SNATed connections, then floating-IP DNAT. Post-routing (outbound filter): reverse-DNAT for
 * return traffic of DNATed connections, then floating-IP SNAT, then the uplink SNAT.
 */
function deriveUplinkNat(
  routerId: string,
  site: string,
  portId: string,
  up: UplinkAddress,
  snat: boolean,
  out: DerivedSet,
): void {
  const natIn = natInChainId(routerId, site);
  const natOut = natOutChainId(routerId, site);
  out.chain({ id: natIn, name: `router-${routerId}-nat-in-${site}` });
  out.chain({ id: natOut, name: `router-${routerId}-nat-out-${site}` });
  out.rule({
    id: derivedId(routerId, `nat-in/${site}/reverse-snat`),
    chainId: natIn,
    position: NAT_REVERSE_POSITION,
    condition: { inPortIds: [portId] },
    action: topologypb.RuleAction.RULE_ACTION_REVERSE_SNAT,
    intentId: routerId,
  });
  out.rule({
    id: derivedId(routerId, `nat-out/${site}/reverse-dnat`),
    chainId: natOut,
    position: NAT_REVERSE_POSITION,
    condition: { outPortIds: [portId] },
    action: topologypb.RuleAction.RULE_ACTION_REVERSE_DNAT,
    intentId: routerId,
  });
  if (snat) {
    out.rule({
      id: derivedId(routerId, `nat-out/${site}/snat`),
      chainId: natOut,
      position: NAT_SNAT_POSITION,
      condition: {
        outPortIds: [portId],
        etherType: up.ip.includes(":") ? ETHER_TYPE_IPV6 : ETHER_TYPE_IPV4,
        matchForwardFlow: true,
      },
      action: topologypb.RuleAction.RULE_ACTION_SNAT,
      natTargets: [{ ipStart: up.ip, ipEnd: up.ip, portStart: SNAT_PORT_START, portEnd: SNAT_PORT_END }],
      intentId: routerId,
    });
  }
}

/** Unit "routerInterface": the router port, its peer bridge port, routes and MAC/ARP entries. */
export function deriveRouterInterface(view: IntentView, id: string, out: DerivedSet): void {
  const ri = view.get("routerInterface", id);
  if (!ri) return;
  const n = view.get("network", ri.networkId);
  const r = view.get("router", ri.routerId);
  if (!n || !r || !n.sites.includes(view.site)) return;
  const a = routerInterfaceAddress(ri, n);
  if (typeof a === "string") {
    out.problem(a);
    return;
  }
  let mac = routerInterfaceMac(id);
  if (ri.mac !== "") {
    const m = normalizeMac(ri.mac);
    if (m) mac = m;
    else out.problem(`router interface ${id}: mac "${ri.mac}" is not a unicast MAC; using ${mac}`);
  }
  const routerPortId = routerInterfaceRouterPortId(id);
  const bridgePortId = routerInterfaceBridgePortId(id);
  const networkId = n.meta!.id;
  const routerId = r.meta!.id;
  out.port({
    id: routerPortId,
    name: `${r.meta?.name ?? ""}-${n.meta?.name ?? ""}`,
    type: topologypb.PortType.PORT_TYPE_ROUTER_INTERFACE,
    deviceId: routerId,
    peerId: bridgePortId,
    mac,
    ips: [`${a.ip}/${a.prefixLength}`],
    adminStateUp: true,
    intentId: id,
  });
  out.port({
    id: bridgePortId,
    name: `${n.meta?.name ?? ""}-${r.meta?.name ?? ""}`,
    type: topologypb.PortType.PORT_TYPE_BRIDGE_ROUTER,
    deviceId: networkId,
    peerId: routerPortId,
    adminStateUp: true,
    intentId: id,
  });
  out.route({
    id: derivedId(id, "route/connected"),
    routerId,
    srcPrefix: anyPrefixLike(a.subnet),
    dstPrefix: a.subnet,
    type: topologypb.RouteType.ROUTE_TYPE_NORMAL,
    nextHopPortId: routerPortId,
    weight: ROUTE_WEIGHT,
  });
  out.route({
    id: derivedId(id, "route/local"),
    routerId,
    srcPrefix: anyPrefixLike(a.subnet),
    dstPrefix: hostPrefix(a.ip)!,
    type: topologypb.RouteType.ROUTE_TYPE_LOCAL,
    nextHopPortId: routerPortId,
    weight: LOCAL_ROUTE_WEIGHT,
  });
  out.macEntry({ id: derivedId(id, "mac-entry"), bridgeId: networkId, mac, portId: bridgePortId });
  out.arpEntry({ id: derivedId(id, "arp-entry"), bridgeId: networkId, ip: a.ip, mac });
}

/** Unit "floatingIp": 1:1 DNAT (in) and SNAT (out) on the router's uplink at the FIP's site. */
export function deriveFloatingIp(view: IntentView, id: string, out: DerivedSet): void {
  const f = view.get("floatingIp", id);
  if (!f || f.site !== view.site || f.portId === "") return;
  const r = view.get("router", f.routerId);
  if (!r) return;
  const uplink = uplinkHere(view, r);
  if (!uplink) {
    out.problem(`floating ip ${id}: router ${f.routerId} has no uplink at site ${view.site}; not realized`);
    return;
  }
  if (typeof uplinkAddress(f.routerId, uplink) === "string") return; // deriveRouter reports it
  const ext = canonicalIp(f.externalIp);
  const fixed = canonicalIp(f.fixedIp);
  if (!ext || !fixed) {
    out.problem(
      `floating ip ${id}: external_ip "${f.externalIp}" / fixed_ip "${f.fixedIp}" must be IP addresses`,
    );
    return;
  }
  const portId = uplinkPortId(f.routerId, view.site);
  out.rule({
    id: derivedId(id, "dnat"),
    chainId: natInChainId(f.routerId, view.site),
    position: NAT_FLOATING_IP_POSITION,
    condition: { inPortIds: [portId], nwDst: hostPrefix(ext)! },
    action: topologypb.RuleAction.RULE_ACTION_DNAT,
    natTargets: [{ ipStart: fixed, ipEnd: fixed, portStart: 0, portEnd: 0 }],
    intentId: id,
  });
  out.rule({
    id: derivedId(id, "snat"),
    chainId: natOutChainId(f.routerId, view.site),
    position: NAT_FLOATING_IP_POSITION,
    // Every packet from the fixed address leaving the uplink, replies to inbound connections
    // included: static 1:1 NAT keeps no binding for REVERSE_DNAT to find.
    condition: { outPortIds: [portId], nwSrc: hostPrefix(fixed)! },
    action: topologypb.RuleAction.RULE_ACTION_SNAT,
    natTargets: [{ ipStart: ext, ipEnd: ext, portStart: 0, portEnd: 0 }],
    intentId: id,
  });
}
