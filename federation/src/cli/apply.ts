// `isthmus apply -f intent.yaml`: makes the federation's admin objects match the file. Objects
// are matched by kind and name; missing ones are created, differing ones updated (with the
// revision just read, so a concurrent change is refused rather than overwritten), equal ones left
// alone — a second run changes nothing. Objects not in the file are never deleted.
import type { ServiceError } from "@grpc/grpc-js";
import { intentpb } from "@isthmus/schema";
import {
  type AnyObject,
  KIND_KEYS,
  KIND_NAMES,
  type KindKey,
  kindOf,
  metaOf,
  wrap,
} from "../intent/index.js";
import { type ConnectionFlags, describeError, FederationClient, loadClientConfig } from "./connection.js";
import {
  IntentFileError,
  type ParsedIntentFile,
  parseIntentFile,
  portRange,
  type YamlPath,
} from "./intent-file.js";

export interface ApplyFlags extends ConnectionFlags {
  file: string;
  dryRun?: boolean;
  output: string;
}

export type ApplyAction = "created" | "updated" | "unchanged";

export interface ApplyRecord {
  kind: string;
  name: string;
  action: ApplyAction;
  /** Top-level fields that differed (updates only). */
  fields?: string[];
}

/** Order of application: what an object refers to exists before it. */
interface Step {
  kind: KindKey;
  name: string;
  path: YamlPath;
  build(): AnyObject;
}

const FIELD_PREFIX: Record<KindKey, string> = {
  site: "site",
  gateway: "gateway",
  router: "router",
  network: "network",
  routerInterface: "router_interface",
  securityGroup: "security_group",
  securityGroupRule: "security_group_rule",
  floatingIp: "floating_ip",
  portRecord: "port",
};

/** Server field names (proto, snake_case) that the file spells differently. */
const RENAMES: Record<string, string | null> = {
  networkId: "network",
  routerId: null,
  securityGroupId: null,
  remoteGroupId: "remoteGroup",
  portId: "port",
  portRangeMin: "ports",
  portRangeMax: "ports",
};

export async function runApply(flags: ApplyFlags): Promise<number> {
  if (!["text", "json"].includes(flags.output)) {
    console.error(`isthmus apply: -o must be text or json, got "${flags.output}"`);
    return 2;
  }
  let parsed: ParsedIntentFile;
  try {
    parsed = parseIntentFile(flags.file);
  } catch (err) {
    console.error(`isthmus apply: ${(err as Error).message}`);
    return 1;
  }
  let client: FederationClient;
  try {
    client = new FederationClient(loadClientConfig(flags));
  } catch (err) {
    console.error(`isthmus apply: ${(err as Error).message}`);
    return 2;
  }
  const records: ApplyRecord[] = [];
  try {
    await applyIntent(client, parsed, { dryRun: flags.dryRun === true, onRecord: (r) => records.push(r) });
    printRecords(records, flags.output, flags.dryRun === true);
    return 0;
  } catch (err) {
    printRecords(records, flags.output, flags.dryRun === true);
    console.error(`isthmus apply: ${err instanceof IntentFileError ? err.message : describeError(err)}`);
    return 1;
  } finally {
    client.close();
  }
}

function printRecords(records: ApplyRecord[], output: string, dryRun: boolean): void {
  if (output === "json") {
    console.log(JSON.stringify(records, null, 2));
    return;
  }
  const verb = (a: ApplyAction) => (dryRun && a !== "unchanged" ? `would be ${a}` : a);
  for (const r of records) {
    if (r.action === "unchanged") continue;
    console.log(
      `${r.kind}/${r.name} ${verb(r.action)}${r.fields?.length ? ` (${r.fields.join(", ")})` : ""}`,
    );
  }
  const count = (a: ApplyAction) => records.filter((r) => r.action === a).length;
  console.log(
    `${dryRun ? "dry run: " : ""}${count("created")} created, ${count("updated")} updated, ${count("unchanged")} unchanged`,
  );
}

export async function applyIntent(
  client: FederationClient,
  parsed: ParsedIntentFile,
  opts: { dryRun: boolean; onRecord: (r: ApplyRecord) => void },
): Promise<void> {
  const listed = await client.rpc((c) => c.list, { kind: intentpb.ObjectKind.OBJECT_KIND_UNSPECIFIED });
  const byName = Object.fromEntries(KIND_KEYS.map((k) => [k, new Map<string, AnyObject>()])) as Record<
    KindKey,
    Map<string, AnyObject>
  >;
  for (const o of listed.objects) {
    const k = kindOf(o);
    if (k) byName[k].set(metaOf(o[k] as AnyObject).name, o[k] as AnyObject);
  }
  const planned = new Set<string>();
  const idOf = (kind: KindKey, name: string, where: YamlPath): string => {
    const o = byName[kind].get(name);
    if (o) return metaOf(o).id;
    if (opts.dryRun && planned.has(`${kind}/${name}`)) return "00000000-0000-4000-8000-000000000000";
    throw new IntentFileError(
      `no ${KIND_NAMES[kind]} named "${name}" (neither in this file nor on the coordinator)`,
      parsed.locate(where),
    );
  };

  const steps = planSteps(parsed, idOf);
  for (const s of steps) planned.add(`${s.kind}/${s.name}`);
  for (const step of steps) {
    const msg = step.build();
    const cur = byName[step.kind].get(step.name);
    try {
      if (!cur) {
        if (!opts.dryRun) {
          const res = await client.rpc((c) => c.create, { object: wrap(step.kind, msg as never) });
          const created = res.object?.[step.kind] as AnyObject | undefined;
          if (created) byName[step.kind].set(step.name, created);
        }
        opts.onRecord({ kind: KIND_NAMES[step.kind], name: step.name, action: "created" });
        continue;
      }
      fillServerAssigned(step.kind, msg, cur);
      const m = metaOf(cur);
      msg.meta = { ...metaOf(msg), id: m.id, revision: m.revision, createdRevision: m.createdRevision };
      const fields = changedFields(step.kind, msg, cur);
      if (fields.length === 0) {
        opts.onRecord({ kind: KIND_NAMES[step.kind], name: step.name, action: "unchanged" });
        continue;
      }
      if (!opts.dryRun) {
        const res = await client.rpc((c) => c.update, { object: wrap(step.kind, msg as never) });
        const updated = res.object?.[step.kind] as AnyObject | undefined;
        if (updated) byName[step.kind].set(step.name, updated);
      }
      opts.onRecord({ kind: KIND_NAMES[step.kind], name: step.name, action: "updated", fields });
    } catch (err) {
      const se = err as ServiceError;
      if (typeof se.code !== "number") throw err;
      const field = /^([a-z_]+(?:\.[A-Za-z_]+|\[\d+\])*):/.exec(se.details ?? "")?.[1] ?? "";
      const where = parsed.locate(field ? yamlPathFor(step.kind, step.path, field) : step.path);
      throw new IntentFileError(`${KIND_NAMES[step.kind]} "${step.name}": ${describeError(err)}`, where);
    }
  }
}

function meta(name: string, description?: string, labels?: Record<string, string>): intentpb.ObjectMeta {
  return {
    id: "",
    name,
    revision: 0,
    description: description ?? "",
    labels: labels ?? {},
    createdRevision: 0,
  };
}

function planSteps(
  parsed: ParsedIntentFile,
  idOf: (k: KindKey, n: string, where: YamlPath) => string,
): Step[] {
  const f = parsed.intent;
  const steps: Step[] = [];
  const add = (step: Step): void => {
    steps.push(step);
  };
  f.sites.forEach((s, i) => {
    add({
      kind: "site",
      name: s.name,
      path: ["sites", i],
      build: (): intentpb.Site => ({
        meta: meta(s.name, s.description, s.labels),
        state: intentpb.SiteState.SITE_STATE_UNSPECIFIED,
        publicKeyJwk: "",
        appliedIndex: 0,
        lastHeardUnixMs: 0,
        region: s.region ?? "",
      }),
    });
  });
  f.securityGroups.forEach((g, i) => {
    add({
      kind: "securityGroup",
      name: g.name,
      path: ["securityGroups", i],
      build: (): intentpb.SecurityGroup => ({
        meta: meta(g.name, g.description, g.labels),
        stateless: g.stateless ?? false,
      }),
    });
  });
  f.networks.forEach((n, i) => {
    add({
      kind: "network",
      name: n.name,
      path: ["networks", i],
      build: (): intentpb.Network => ({
        meta: meta(n.name, n.description, n.labels),
        subnets: n.subnets.map((s) => ({ cidr: s.cidr, gatewayIp: s.gatewayIp ?? "" })),
        sites: n.sites,
        vni: n.vni ?? 0,
        mtu: n.mtu ?? 0,
      }),
    });
  });
  f.routers.forEach((r, i) => {
    add({
      kind: "router",
      name: r.name,
      path: ["routers", i],
      build: (): intentpb.Router => ({
        meta: meta(r.name, r.description, r.labels),
        uplinks: r.uplinks.map((u) => ({
          site: u.site,
          ipCidr: u.ipCidr,
          gatewayIp: u.gatewayIp ?? "",
          snat: u.snat ?? false,
        })),
        routes: r.routes.map((rt) => ({
          destination: rt.destination,
          nextHop: rt.nextHop ?? "",
          site: rt.site ?? "",
          blackhole: rt.blackhole ?? false,
        })),
        transitVni: r.transitVni ?? 0,
      }),
    });
  });
  f.routers.forEach((r, i) => {
    r.interfaces.forEach((itf, j) => {
      const name = itf.name ?? `${r.name}-${itf.network}`;
      const path = ["routers", i, "interfaces", j];
      steps.push({
        kind: "routerInterface",
        name,
        path,
        build: (): intentpb.RouterInterface => ({
          meta: meta(name, itf.description),
          routerId: idOf("router", r.name, ["routers", i, "name"]),
          networkId: idOf("network", itf.network, [...path, "network"]),
          ip: itf.ip ?? "",
          mac: itf.mac ?? "",
        }),
      });
    });
  });
  f.securityGroups.forEach((g, i) => {
    g.rules.forEach((rule, j) => {
      const name = rule.name ?? `${g.name}-${rule.direction}-${j}`;
      const path = ["securityGroups", i, "rules", j];
      const [min, max] = portRange(rule.ports);
      steps.push({
        kind: "securityGroupRule",
        name,
        path,
        build: (): intentpb.SecurityGroupRule => ({
          meta: meta(name, rule.description),
          securityGroupId: idOf("securityGroup", g.name, ["securityGroups", i, "name"]),
          direction:
            rule.direction === "ingress"
              ? intentpb.RuleDirection.RULE_DIRECTION_INGRESS
              : intentpb.RuleDirection.RULE_DIRECTION_EGRESS,
          ethertype:
            rule.ethertype === "IPv6"
              ? intentpb.EtherType.ETHER_TYPE_IPV6
              : intentpb.EtherType.ETHER_TYPE_IPV4,
          protocol: rule.protocol,
          portRangeMin: min,
          portRangeMax: max,
          remoteCidr: rule.remoteCidr ?? "",
          remoteGroupId: rule.remoteGroup
            ? idOf("securityGroup", rule.remoteGroup, [...path, "remoteGroup"])
            : "",
        }),
      });
    });
  });
  f.floatingIps.forEach((fip, i) => {
    const path = ["floatingIps", i];
    steps.push({
      kind: "floatingIp",
      name: fip.name,
      path,
      build: (): intentpb.FloatingIP => ({
        meta: meta(fip.name, fip.description, fip.labels),
        routerId: idOf("router", fip.router, [...path, "router"]),
        site: fip.site,
        externalIp: fip.externalIp,
        portId: fip.port ? idOf("portRecord", fip.port, [...path, "port"]) : "",
        fixedIp: fip.fixedIp ?? "",
      }),
    });
  });
  return steps;
}

/** Copies what the coordinator assigns (and the file leaves open) from the current object. */
function fillServerAssigned(kind: KindKey, msg: AnyObject, cur: AnyObject): void {
  switch (kind) {
    case "site": {
      const s = msg as intentpb.Site;
      const c = cur as intentpb.Site;
      Object.assign(s, {
        state: c.state,
        publicKeyJwk: c.publicKeyJwk,
        appliedIndex: c.appliedIndex,
        lastHeardUnixMs: c.lastHeardUnixMs,
      });
      return;
    }
    case "network": {
      const n = msg as intentpb.Network;
      if (n.vni === 0) n.vni = (cur as intentpb.Network).vni;
      return;
    }
    case "router": {
      const r = msg as intentpb.Router;
      if (r.transitVni === 0) r.transitVni = (cur as intentpb.Router).transitVni;
      return;
    }
    case "routerInterface": {
      const ri = msg as intentpb.RouterInterface;
      if (!ri.mac) ri.mac = (cur as intentpb.RouterInterface).mac;
      return;
    }
    case "floatingIp": {
      const f = msg as intentpb.FloatingIP;
      const c = cur as intentpb.FloatingIP;
      if (!f.fixedIp && f.portId && f.portId === c.portId) f.fixedIp = c.fixedIp;
      return;
    }
    default:
      return;
  }
}

/** Top-level fields (and meta's description/labels/name) whose values differ. */
function changedFields(kind: KindKey, a: AnyObject, b: AnyObject): string[] {
  const ja = intentpb.IntentObject.toJSON(wrap(kind, a as never)) as Record<string, Record<string, unknown>>;
  const jb = intentpb.IntentObject.toJSON(wrap(kind, b as never)) as Record<string, Record<string, unknown>>;
  const oa = ja[kind] ?? {};
  const ob = jb[kind] ?? {};
  const out: string[] = [];
  const ma = metaOf(a);
  const mb = metaOf(b);
  if (ma.description !== mb.description) out.push("description");
  if (JSON.stringify(sorted(ma.labels)) !== JSON.stringify(sorted(mb.labels))) out.push("labels");
  if (kind === "site") {
    if ((a as intentpb.Site).region !== (b as intentpb.Site).region) out.push("region");
    return out;
  }
  for (const key of new Set([...Object.keys(oa), ...Object.keys(ob)])) {
    if (key === "meta") continue;
    if (JSON.stringify(oa[key]) !== JSON.stringify(ob[key])) out.push(key);
  }
  return out;
}

function sorted(labels: Record<string, string>): [string, string][] {
  return Object.entries(labels).sort(([x], [y]) => (x < y ? -1 : 1));
}

/** Maps a server field path ("router.uplinks[0].ip_cidr") onto the file's path of the object. */
export function yamlPathFor(kind: KindKey, base: YamlPath, field: string): YamlPath {
  const segs: (string | number)[] = [];
  for (const part of field.split(".")) {
    const m = /^([A-Za-z_]+)((?:\[\d+\])*)$/.exec(part);
    if (!m) break;
    segs.push(m[1] ?? "");
    for (const idx of (m[2] ?? "").matchAll(/\[(\d+)\]/g)) segs.push(Number(idx[1]));
  }
  if (segs[0] === FIELD_PREFIX[kind]) segs.shift();
  const out: YamlPath = [...base];
  for (const s of segs) {
    if (s === "meta") continue;
    if (typeof s === "number") {
      out.push(s);
      continue;
    }
    const camel = s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    const renamed = camel in RENAMES ? RENAMES[camel] : camel;
    if (renamed === null) break;
    out.push(renamed ?? camel);
  }
  return out;
}
