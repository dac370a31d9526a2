// `isthmus get <kind> [name]`: lists objects of a kind (or `all`), or shows one, as a table or
// as JSON (`-o json`, the proto JSON form). References by id are shown by name in tables.
import { intentpb } from "@isthmus/schema";
import {
  type AnyObject,
  KIND_KEYS,
  KIND_NAMES,
  type KindKey,
  kindEnum,
  kindFromName,
  kindOf,
  metaOf,
} from "../intent/index.js";
import { type ConnectionFlags, describeError, FederationClient, loadClientConfig } from "./connection.js";
import { ago, formatTable } from "./table.js";

export interface GetFlags extends ConnectionFlags {
  output: string;
}

export function parseKind(text: string): KindKey | undefined {
  return kindFromName(text);
}

export function kindList(): string {
  return KIND_KEYS.map((k) => KIND_NAMES[k]).join(", ");
}

export async function runGet(kindText: string, name: string | undefined, flags: GetFlags): Promise<number> {
  if (!["table", "json"].includes(flags.output)) {
    console.error(`isthmus get: -o must be table or json, got "${flags.output}"`);
    return 2;
  }
  const all = kindText === "all";
  const kind = all ? undefined : parseKind(kindText);
  if (!all && !kind) {
    console.error(`isthmus get: unknown kind "${kindText}" (one of: all, ${kindList()})`);
    return 2;
  }
  if (all && name) {
    console.error("isthmus get: give a kind to look up one object by name");
    return 2;
  }
  let client: FederationClient;
  try {
    client = new FederationClient(loadClientConfig(flags));
  } catch (err) {
    console.error(`isthmus get: ${(err as Error).message}`);
    return 2;
  }
  try {
    if (kind && name) {
      const res = await client.rpc((c) => c.get, { kind: kindEnum(kind), id: "", name });
      if (!res.object) throw new Error("empty answer");
      if (flags.output === "json")
        console.log(JSON.stringify(intentpb.IntentObject.toJSON(res.object), null, 2));
      else {
        const everything = await client.rpc((c) => c.list, {
          kind: intentpb.ObjectKind.OBJECT_KIND_UNSPECIFIED,
        });
        console.log(renderTable(kind, [res.object], everything.objects));
      }
      return 0;
    }
    const res = await client.rpc((c) => c.list, { kind: intentpb.ObjectKind.OBJECT_KIND_UNSPECIFIED });
    const selected = kind ? res.objects.filter((o) => kindOf(o) === kind) : res.objects;
    if (flags.output === "json") {
      console.log(
        JSON.stringify(
          selected.map((o) => intentpb.IntentObject.toJSON(o)),
          null,
          2,
        ),
      );
      return 0;
    }
    const kinds = kind ? [kind] : KIND_KEYS.filter((k) => selected.some((o) => kindOf(o) === k));
    const blocks = kinds.map((k) => {
      const objs = selected.filter((o) => kindOf(o) === k);
      return `${all ? `${KIND_NAMES[k]}:\n` : ""}${renderTable(k, objs, res.objects)}`;
    });
    console.log(blocks.length > 0 ? blocks.join("\n\n") : `no ${kind ? KIND_NAMES[kind] : "object"}s`);
    return 0;
  } catch (err) {
    console.error(`isthmus get: ${describeError(err)}`);
    return 1;
  } finally {
    client.close();
  }
}

const STATE: Record<number, string> = { 0: "-", 1: "pending", 2: "active", 3: "revoked" };
const DIRECTION: Record<number, string> = { 0: "-", 1: "ingress", 2: "egress" };
const ETHER: Record<number, string> = { 0: "-", 1: "IPv4", 2: "IPv6" };

export function renderTable(
  kind: KindKey,
  objects: intentpb.IntentObject[],
  context: intentpb.IntentObject[],
): string {
  const names = new Map<string, string>();
  for (const o of context) {
    const k = kindOf(o);
    if (k) names.set(metaOf(o[k] as AnyObject).id, metaOf(o[k] as AnyObject).name);
  }
  const nameOf = (id: string) => (id ? (names.get(id) ?? id) : "-");
  const rows = objects.map((o) => o[kind]).filter((x): x is NonNullable<typeof x> => x !== undefined);
  const rev = (x: AnyObject) => String(metaOf(x).revision);
  switch (kind) {
    case "site":
      return formatTable(
        ["NAME", "STATE", "REGION", "APPLIED", "LAST HEARD", "REVISION"],
        (rows as intentpb.Site[]).map((s) => [
          metaOf(s).name,
          STATE[s.state] ?? "?",
          s.region || "-",
          String(s.appliedIndex),
          ago(s.lastHeardUnixMs),
          rev(s),
        ]),
      );
    case "network":
      return formatTable(
        ["NAME", "SUBNETS", "SITES", "VNI", "MTU", "REVISION"],
        (rows as intentpb.Network[]).map((n) => [
          metaOf(n).name,
          n.subnets.map((s) => s.cidr).join(",") || "-",
          n.sites.join(",") || "-",
          `0x${n.vni.toString(16)}`,
          String(n.mtu || 1450),
          rev(n),
        ]),
      );
    case "router":
      return formatTable(
        ["NAME", "UPLINKS", "ROUTES", "TRANSIT VNI", "REVISION"],
        (rows as intentpb.Router[]).map((r) => [
          metaOf(r).name,
          r.uplinks.map((u) => `${u.site}:${u.ipCidr}`).join(",") || "-",
          String(r.routes.length),
          `0x${r.transitVni.toString(16)}`,
          rev(r),
        ]),
      );
    case "routerInterface":
      return formatTable(
        ["NAME", "ROUTER", "NETWORK", "IP", "MAC", "REVISION"],
        (rows as intentpb.RouterInterface[]).map((ri) => [
          metaOf(ri).name,
          nameOf(ri.routerId),
          nameOf(ri.networkId),
          ri.ip || "(gateway)",
          ri.mac,
          rev(ri),
        ]),
      );
    case "securityGroup":
      return formatTable(
        ["NAME", "STATEFUL", "REVISION"],
        (rows as intentpb.SecurityGroup[]).map((g) => [metaOf(g).name, g.stateless ? "no" : "yes", rev(g)]),
      );
    case "securityGroupRule":
      return formatTable(
        ["NAME", "GROUP", "DIRECTION", "ETHERTYPE", "PROTOCOL", "PORTS", "REMOTE", "REVISION"],
        (rows as intentpb.SecurityGroupRule[]).map((r) => [
          metaOf(r).name,
          nameOf(r.securityGroupId),
          DIRECTION[r.direction] ?? "?",
          ETHER[r.ethertype] ?? "?",
          r.protocol,
          r.portRangeMin || r.portRangeMax ? `${r.portRangeMin}-${r.portRangeMax}` : "any",
          r.remoteCidr || (r.remoteGroupId ? `group ${nameOf(r.remoteGroupId)}` : "any"),
          rev(r),
        ]),
      );
    case "floatingIp":
      return formatTable(
        ["NAME", "ROUTER", "SITE", "EXTERNAL IP", "PORT", "FIXED IP", "REVISION"],
        (rows as intentpb.FloatingIP[]).map((f) => [
          metaOf(f).name,
          nameOf(f.routerId),
          f.site,
          f.externalIp,
          nameOf(f.portId),
          f.fixedIp || "-",
          rev(f),
        ]),
      );
    case "portRecord":
      return formatTable(
        ["NAME", "SITE", "HOST", "NETWORK", "MAC", "IPS", "UP", "REVISION"],
        (rows as intentpb.PortRecord[]).map((p) => [
          metaOf(p).name,
          p.site,
          p.host,
          nameOf(p.networkId),
          p.mac,
          p.ips.join(",") || "-",
          p.up ? "yes" : "no",
          rev(p),
        ]),
      );
    case "gateway":
      return formatTable(
        ["NAME", "SITE", "ENDPOINTS", "REVISION"],
        (rows as intentpb.Gateway[]).map((g) => [
          metaOf(g).name,
          g.site,
          g.endpoints.map((e) => `${e.host}=${e.ip}:${e.port}`).join(",") || "-",
          rev(g),
        ]),
      );
    default:
      return "";
  }
}
