// SiteService: the site's local API. Hosts register (and get the host token their agent uses),
// ports are created, bound, unbound and deleted, agents heartbeat, and Status reports how current
// the site is.
// Writes go only through the active replica; the standby answers UNAVAILABLE naming why. Lists
// read the shared database, so both replicas serve them.
import { isIP } from "node:net";
import { type ServerUnaryCall, type sendUnaryData, status } from "@grpc/grpc-js";
import { type Logger, type sitepb, topologypb } from "@isthmus/schema";
import type { Database } from "./db/database.js";
import { FencedOut } from "./fence.js";
import type { HostLiveness } from "./host-liveness.js";
import type { HostTokens, TokenClaims, TokenRole } from "./host-token.js";
import { LocalRequestError, type LocalWriter, localReads } from "./local-store.js";
import type { BlockRef, LeasedBlock, SnatBlockLeases } from "./snat-block-leases.js";
import { grpcError } from "./topology-watch.js";
import type { IntentView, LocalPortBinding } from "./translate/index.js";

export interface SiteServiceDeps {
  view: IntentView;
  /** Lists read the database, so the standby replica serves them too. */
  db: Database;
  writer: () => LocalWriter | undefined;
  tokens: HostTokens;
  liveness: HostLiveness;
  hostTokenTtlSec: number;
  status: () => sitepb.SiteStatusResponse;
  log: Logger;
  /** SNAT port-block leases; absent = the LeaseSnatBlock calls answer UNIMPLEMENTED. */
  snatLeases?: SnatBlockLeases;
  /** Called after a successful port or host write (realized-state reporting). */
  onLocalChanged?: (kind: "port" | "host", id: string) => void;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

function toLocalPort(p: LocalPortBinding): sitepb.LocalPort {
  return {
    id: p.id,
    name: p.name,
    networkId: p.networkId,
    hostId: p.hostId,
    interfaceName: p.interfaceName,
    mac: p.mac,
    ips: p.ips,
    securityGroupIds: p.securityGroupIds,
    tunnelKey: p.tunnelKey,
  };
}

function toSnatBlock(b: LeasedBlock): sitepb.SnatBlock {
  return {
    deviceId: b.deviceId,
    natIp: b.natIp,
    start: b.start,
    size: b.size,
    expiresUnixMs: b.expiresUnixMs,
  };
}

function invalid(field: string, why: string): Error {
  return grpcError(status.INVALID_ARGUMENT, `field "${field}": ${why}`);
}

function toGrpc(err: unknown): Error {
  if (err instanceof LocalRequestError) {
    const code = {
      invalid: status.INVALID_ARGUMENT,
      "not-found": status.NOT_FOUND,
      exists: status.ALREADY_EXISTS,
      exhausted: status.RESOURCE_EXHAUSTED,
    }[err.kind];
    return grpcError(code, `field "${err.field}": ${err.message}`);
  }
  if (err instanceof FencedOut)
    return grpcError(status.UNAVAILABLE, `${err.message}; use the active controller`);
  if (typeof (err as { code?: unknown }).code === "number") return err as Error;
  return grpcError(status.INTERNAL, (err as Error).message);
}

export function siteService(d: SiteServiceDeps): sitepb.SiteServiceServer {
  const unary =
    <Req, Res>(roles: readonly TokenRole[], fn: (req: Req, who: TokenClaims) => Promise<Res>) =>
    (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => {
      d.tokens
        .verify(call.metadata, roles)
        .then((who) => fn(call.request, who))
        .then(
          (res) => cb(null, res),
          (err) => cb(toGrpc(err) as never),
        );
    };
  const writer = (): LocalWriter => {
    const w = d.writer();
    if (!w)
      throw grpcError(
        status.UNAVAILABLE,
        "this controller replica is standby (not holding the lease); use the active one",
      );
    return w;
  };
  const checkIps = (ips: string[], field: string) => {
    ips.forEach((ip, i) => {
      if (isIP(ip) === 0) throw invalid(`${field}[${i}]`, `"${ip}" is not an IP address`);
    });
  };
  const snat = (): SnatBlockLeases => {
    if (!d.snatLeases) throw grpcError(status.UNIMPLEMENTED, "this controller does not lease SNAT blocks");
    return d.snatLeases;
  };
  const blockRef = (b: sitepb.SnatBlock, i: number): BlockRef => {
    if (b.deviceId === "") throw invalid(`blocks[${i}].device_id`, "must not be empty");
    if (isIP(b.natIp) !== 4) throw invalid(`blocks[${i}].nat_ip`, `"${b.natIp}" is not an IPv4 address`);
    return { deviceId: b.deviceId, natIp: b.natIp, start: b.start };
  };
  const hostMayTouch = (who: TokenClaims, hostId: string) => {
    if (who.role === "host" && who.subject !== hostId) {
      throw grpcError(
        status.PERMISSION_DENIED,
        `host ${who.subject} may only bind ports to itself, not to ${hostId}`,
      );
    }
  };

  return {
    registerHost: unary(["admin"], async (req: sitepb.RegisterHostRequest) => {
      if (req.name === "") throw invalid("name", "must not be empty");
      if (isIP(req.tunnelIp) === 0) throw invalid("tunnel_ip", `"${req.tunnelIp}" is not an IP address`);
      if (req.role === topologypb.HostRole.HOST_ROLE_UNSPECIFIED)
        throw invalid("role", "must be HOST or GATEWAY");
      if (req.role === topologypb.HostRole.HOST_ROLE_GATEWAY && isIP(req.wanIp) === 0) {
        throw invalid("wan_ip", `a gateway needs its WAN address; "${req.wanIp}" is not an IP address`);
      }
      if (req.tunnelPort > 65535) throw invalid("tunnel_port", `${req.tunnelPort} is not a UDP port`);
      const host = await writer().registerHost({
        name: req.name,
        tunnelIp: req.tunnelIp,
        tunnelPort: req.tunnelPort || 4789,
        role: req.role,
        wanIp: req.wanIp,
        wanPort: req.role === topologypb.HostRole.HOST_ROLE_GATEWAY ? req.wanPort || 4789 : 0,
      });
      d.onLocalChanged?.("host", host.id);
      const t = await d.tokens.issue("host", host.id, d.hostTokenTtlSec);
      return { host, hostToken: t.token, tokenExpiresUnixMs: t.expiresUnixMs };
    }),

    createPort: unary(["admin"], async (req: sitepb.CreatePortRequest) => {
      if (req.name === "") throw invalid("name", "must not be empty");
      if (req.networkId === "") throw invalid("network_id", "must not be empty");
      if (!MAC.test(req.mac)) throw invalid("mac", `"${req.mac}" is not a MAC address (aa:bb:cc:dd:ee:ff)`);
      checkIps(req.ips, "ips");
      if (req.hostId !== "" && req.interfaceName === "")
        throw invalid("interface_name", "needed with host_id");
      const port = await writer().createPort({
        id: req.id,
        name: req.name,
        networkId: req.networkId,
        hostId: req.hostId,
        interfaceName: req.hostId === "" ? "" : req.interfaceName,
        mac: req.mac.toLowerCase(),
        ips: req.ips,
        securityGroupIds: req.securityGroupIds,
      });
      d.onLocalChanged?.("port", port.id);
      return { port: toLocalPort(port) };
    }),

    bindPort: unary(["admin", "host"], async (req: sitepb.BindPortRequest, who) => {
      if (req.hostId === "") throw invalid("host_id", "must not be empty");
      hostMayTouch(who, req.hostId);
      const port = await writer().bindPort(req.portId, req.hostId, req.interfaceName);
      d.onLocalChanged?.("port", port.id);
      return { port: toLocalPort(port) };
    }),

    unbindPort: unary(["admin", "host"], async (req: sitepb.UnbindPortRequest, who) => {
      const current = d.view.get("localPort", req.portId);
      if (current) hostMayTouch(who, current.hostId);
      const port = await writer().unbindPort(req.portId);
      d.onLocalChanged?.("port", port.id);
      return { port: toLocalPort(port) };
    }),

    deletePort: unary(["admin"], async (req: sitepb.DeletePortRequest) => {
      const port = await writer().deletePort(req.portId);
      d.onLocalChanged?.("port", port.id);
      return { port: toLocalPort(port) };
    }),

    listPorts: unary(["admin", "host"], async (req: sitepb.ListPortsRequest) => {
      const ports = await localReads.ports(d.db, { hostId: req.hostId, networkId: req.networkId });
      return { ports: ports.map(toLocalPort) };
    }),

    listHosts: unary(["admin", "host"], async () => ({ hosts: await localReads.hosts(d.db) })),

    status: unary(["admin", "host"], async () => d.status()),

    // Either replica records it (the database's clock); only the active one acts on it.
    heartbeat: unary(["admin", "host"], async (req: sitepb.HeartbeatRequest, who) => {
      if (req.hostId === "") throw invalid("host_id", "must not be empty");
      if (who.role === "host" && who.subject !== req.hostId) {
        throw grpcError(
          status.PERMISSION_DENIED,
          `host ${who.subject} may only heartbeat for itself, not for ${req.hostId}`,
        );
      }
      if (!(await d.liveness.heartbeat(req.hostId))) {
        throw grpcError(
          status.NOT_FOUND,
          `field "host_id": host ${req.hostId} is not registered at this site; register it again`,
        );
      }
      return { intervalMs: d.liveness.intervalMs, deadAfterMs: d.liveness.deadAfterMs };
    }),

    renewHostToken: unary(["host"], async (_req: sitepb.RenewHostTokenRequest, who) => {
      // From the database, like ListHosts, so either replica renews.
      if (!(await localReads.hosts(d.db)).some((h) => h.id === who.subject)) {
        throw grpcError(status.NOT_FOUND, `host ${who.subject} is not registered; register it again`);
      }
      const t = await d.tokens.issue("host", who.subject, d.hostTokenTtlSec);
      return { hostToken: t.token, tokenExpiresUnixMs: t.expiresUnixMs };
    }),

    leaseSnatBlock: unary(["host"], async (req: sitepb.LeaseSnatBlockRequest, who) => {
      const leases = snat();
      if (req.deviceId === "") throw invalid("device_id", "must not be empty");
      if (isIP(req.natIp) !== 4) throw invalid("nat_ip", `"${req.natIp}" is not an IPv4 address`);
      const min = req.portMin === 0 && req.portMax === 0 ? 1024 : req.portMin;
      const max = req.portMin === 0 && req.portMax === 0 ? 65535 : req.portMax;
      if (max > 65535) throw invalid("port_max", `${max} is not a port`);
      if (min > max) throw invalid("port_min", `${min} is above port_max ${max}`);
      writer();
      return { block: toSnatBlock(await leases.lease(who.subject, req.deviceId, req.natIp, min, max)) };
    }),

    renewSnatBlocks: unary(["host"], async (req: sitepb.RenewSnatBlocksRequest, who) => {
      const leases = snat();
      writer();
      const r = await leases.renew(who.subject, req.blocks.map(blockRef));
      return {
        renewed: r.renewed.map(toSnatBlock),
        lost: r.lost.map((b) => toSnatBlock({ ...b, size: leases.opts.blockSize, expiresUnixMs: 0 })),
      };
    }),

    releaseSnatBlocks: unary(["host"], async (req: sitepb.ReleaseSnatBlocksRequest, who) => {
      const leases = snat();
      writer();
      return { released: await leases.release(who.subject, req.blocks.map(blockRef)) };
    }),
  };
}
