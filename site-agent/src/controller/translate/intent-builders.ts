// Builders for intent objects and changes, so translation tests (and the controller's) state a
// federation in a few lines. Ids are derived from short names: id("net1") is the same UUID in
// every test and every run.
import { intentpb, topologypb } from "@isthmus/schema";
import { derivedId } from "./ids.js";
import type { LocalPortBinding } from "./view.js";

export const id = (name: string): string => derivedId("test", name);

const meta = (name: string, revision = 1): intentpb.ObjectMeta =>
  intentpb.ObjectMeta.fromPartial({ id: id(name), name, revision });

export function network(
  name: string,
  o: { sites: string[]; subnets?: { cidr: string; gatewayIp?: string }[]; vni?: number; mtu?: number },
): intentpb.IntentObject {
  return {
    network: intentpb.Network.fromPartial({
      meta: meta(name),
      sites: o.sites,
      subnets: (o.subnets ?? []).map((s) => ({ cidr: s.cidr, gatewayIp: s.gatewayIp ?? "" })),
      vni: o.vni ?? 0x100001,
      mtu: o.mtu ?? 0,
    }),
  };
}

export function router(
  name: string,
  o: {
    uplinks?: Partial<intentpb.RouterUplink>[];
    routes?: Partial<intentpb.StaticRoute>[];
    transitVni?: number;
  } = {},
): intentpb.IntentObject {
  return {
    router: intentpb.Router.fromPartial({
      meta: meta(name),
      uplinks: o.uplinks ?? [],
      routes: o.routes ?? [],
      transitVni: o.transitVni ?? 0,
    }),
  };
}

export function routerInterface(
  name: string,
  o: { router: string; network: string; ip?: string; mac?: string },
): intentpb.IntentObject {
  return {
    routerInterface: intentpb.RouterInterface.fromPartial({
      meta: meta(name),
      routerId: id(o.router),
      networkId: id(o.network),
      ip: o.ip ?? "",
      mac: o.mac ?? "",
    }),
  };
}

export function securityGroup(name: string, o: { stateless?: boolean } = {}): intentpb.IntentObject {
  return {
    securityGroup: intentpb.SecurityGroup.fromPartial({ meta: meta(name), stateless: o.stateless ?? false }),
  };
}

export function securityGroupRule(
  name: string,
  o: {
    group: string;
    direction: "ingress" | "egress";
    ethertype?: "ipv4" | "ipv6";
    protocol?: string;
    ports?: [number, number];
    remoteCidr?: string;
    remoteGroup?: string;
  },
): intentpb.IntentObject {
  return {
    securityGroupRule: intentpb.SecurityGroupRule.fromPartial({
      meta: meta(name),
      securityGroupId: id(o.group),
      direction:
        o.direction === "ingress"
          ? intentpb.RuleDirection.RULE_DIRECTION_INGRESS
          : intentpb.RuleDirection.RULE_DIRECTION_EGRESS,
      ethertype:
        o.ethertype === "ipv4"
          ? intentpb.EtherType.ETHER_TYPE_IPV4
          : o.ethertype === "ipv6"
            ? intentpb.EtherType.ETHER_TYPE_IPV6
            : intentpb.EtherType.ETHER_TYPE_UNSPECIFIED,
      protocol: o.protocol ?? "any",
      portRangeMin: o.ports?.[0] ?? 0,
      portRangeMax: o.ports?.[1] ?? 0,
      remoteCidr: o.remoteCidr ?? "",
      remoteGroupId: o.remoteGroup ? id(o.remoteGroup) : "",
    }),
  };
}

export function floatingIp(
  name: string,
  o: { router: string; site: string; externalIp: string; port?: string; fixedIp?: string },
): intentpb.IntentObject {
  return {
    floatingIp: intentpb.FloatingIP.fromPartial({
      meta: meta(name),
      routerId: id(o.router),
      site: o.site,
      externalIp: o.externalIp,
      portId: o.port ? id(o.port) : "",
      fixedIp: o.fixedIp ?? "",
    }),
  };
}

export function portRecord(
  name: string,
  o: { site: string; network: string; mac: string; ips: string[]; groups?: string[]; host?: string },
): intentpb.IntentObject {
  return {
    portRecord: intentpb.PortRecord.fromPartial({
      meta: meta(name),
      site: o.site,
      host: o.host ?? "",
      networkId: id(o.network),
      mac: o.mac,
      ips: o.ips,
      securityGroupIds: (o.groups ?? []).map(id),
      up: true,
    }),
  };
}

export function gateway(
  name: string,
  o: { site: string; endpoints: { ip: string; port?: number }[] },
): intentpb.IntentObject {
  return {
    gateway: intentpb.Gateway.fromPartial({
      meta: meta(name),
      site: o.site,
      endpoints: o.endpoints.map((e) => ({ host: "", ip: e.ip, port: e.port ?? 0 })),
    }),
  };
}

export function localPort(
  name: string,
  o: { network: string; host?: string; mac: string; ips: string[]; groups?: string[]; tunnelKey?: number },
): LocalPortBinding {
  return {
    id: id(name),
    name,
    networkId: id(o.network),
    hostId: o.host ? id(o.host) : "",
    interfaceName: `tap-${name}`.slice(0, 15),
    mac: o.mac,
    ips: o.ips,
    securityGroupIds: (o.groups ?? []).map(id),
    tunnelKey: o.tunnelKey ?? 0,
    adminStateUp: true,
  };
}

export function host(
  name: string,
  o: { gateway?: boolean; alive?: boolean; tunnelIp?: string } = {},
): topologypb.Host {
  return topologypb.Host.fromPartial({
    id: id(name),
    name,
    tunnelIp: o.tunnelIp ?? "192.0.2.10",
    tunnelPort: 4789,
    role: o.gateway ? topologypb.HostRole.HOST_ROLE_GATEWAY : topologypb.HostRole.HOST_ROLE_HOST,
    alive: o.alive ?? true,
  });
}

const OBJECT_KIND: Record<keyof intentpb.IntentObject, intentpb.ObjectKind> = {
  site: intentpb.ObjectKind.OBJECT_KIND_SITE,
  gateway: intentpb.ObjectKind.OBJECT_KIND_GATEWAY,
  router: intentpb.ObjectKind.OBJECT_KIND_ROUTER,
  network: intentpb.ObjectKind.OBJECT_KIND_NETWORK,
  routerInterface: intentpb.ObjectKind.OBJECT_KIND_ROUTER_INTERFACE,
  securityGroup: intentpb.ObjectKind.OBJECT_KIND_SECURITY_GROUP,
  securityGroupRule: intentpb.ObjectKind.OBJECT_KIND_SECURITY_GROUP_RULE,
  floatingIp: intentpb.ObjectKind.OBJECT_KIND_FLOATING_IP,
  portRecord: intentpb.ObjectKind.OBJECT_KIND_PORT_RECORD,
};

/** A change upserting `objects`. */
export function upsert(index: number, ...objects: intentpb.IntentObject[]): intentpb.IntentChange {
  return { index, upserts: objects, deletes: [] };
}

/** A change deleting the object of `kind` named `name`. */
export function remove(
  index: number,
  kind: keyof intentpb.IntentObject,
  name: string,
): intentpb.IntentChange {
  return { index, upserts: [], deletes: [{ kind: OBJECT_KIND[kind], id: id(name), name }] };
}
