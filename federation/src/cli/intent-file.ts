// The declarative intent file `isthmus apply -f` reads: YAML listing sites, security groups (with
// rules), networks, routers (with uplinks, routes and interfaces) and floating IPs, all referring
// to one another by name. Parsing keeps each node's position so every error names file:line:col.
import { readFileSync } from "node:fs";
import { isMap, isSeq, LineCounter, type Node, parseDocument } from "yaml";
import { z } from "zod";

const Name = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, "expected a name: 1–63 letters, digits, '.', '_', '-'");
const common = {
  name: Name,
  description: z.string().optional(),
  labels: z.record(z.string(), z.string()).optional(),
};

const SiteY = z.strictObject({ ...common, region: z.string().optional() });
const SubnetY = z.strictObject({ cidr: z.string(), gatewayIp: z.string().optional() });
const NetworkY = z.strictObject({
  ...common,
  subnets: z.array(SubnetY).default([]),
  sites: z.array(z.string()).default([]),
  vni: z.number().int().nonnegative().optional(),
  mtu: z.number().int().nonnegative().optional(),
});
const UplinkY = z.strictObject({
  site: z.string(),
  ipCidr: z.string(),
  gatewayIp: z.string().optional(),
  snat: z.boolean().optional(),
});
const RouteY = z.strictObject({
  destination: z.string(),
  nextHop: z.string().optional(),
  site: z.string().optional(),
  blackhole: z.boolean().optional(),
});
const InterfaceY = z.strictObject({
  name: Name.optional(),
  description: z.string().optional(),
  network: z.string(),
  ip: z.string().optional(),
  mac: z.string().optional(),
});
const RouterY = z.strictObject({
  ...common,
  uplinks: z.array(UplinkY).default([]),
  routes: z.array(RouteY).default([]),
  interfaces: z.array(InterfaceY).default([]),
  transitVni: z.number().int().nonnegative().optional(),
});
const RuleY = z.strictObject({
  name: Name.optional(),
  description: z.string().optional(),
  direction: z.enum(["ingress", "egress"]),
  ethertype: z.enum(["IPv4", "IPv6"]).default("IPv4"),
  protocol: z.string().default("any"),
  ports: z
    .union([
      z.number().int(),
      z.string().regex(/^\d+(-\d+)?$/, 'expected a port or a range like "8000-8080"'),
    ])
    .optional(),
  remoteCidr: z.string().optional(),
  remoteGroup: z.string().optional(),
});
const GroupY = z.strictObject({
  ...common,
  stateless: z.boolean().optional(),
  rules: z.array(RuleY).default([]),
});
const FloatingIpY = z.strictObject({
  ...common,
  router: z.string(),
  site: z.string(),
  externalIp: z.string(),
  port: z.string().optional(),
  fixedIp: z.string().optional(),
});
const IntentFileY = z.strictObject({
  sites: z.array(SiteY).default([]),
  securityGroups: z.array(GroupY).default([]),
  networks: z.array(NetworkY).default([]),
  routers: z.array(RouterY).default([]),
  floatingIps: z.array(FloatingIpY).default([]),
});

export type IntentFile = z.infer<typeof IntentFileY>;
export type YamlPath = (string | number)[];

export class IntentFileError extends Error {
  constructor(
    message: string,
    /** "file:line:col" (or just the file). */
    readonly where: string,
  ) {
    super(`${where}: ${message}`);
    this.name = "IntentFileError";
  }
}

export interface ParsedIntentFile {
  file: string;
  intent: IntentFile;
  /** "file:line:col" of the node at `path` (its key with `atKey`), or of its nearest existing ancestor. */
  locate(path: YamlPath, atKey?: boolean): string;
}

export function parseIntentFile(file: string, text?: string): ParsedIntentFile {
  let body: string;
  try {
    body = text ?? readFileSync(file, "utf8");
  } catch (err) {
    throw new IntentFileError(`cannot read: ${(err as Error).message}`, file);
  }
  const lc = new LineCounter();
  const doc = parseDocument(body, { lineCounter: lc, prettyErrors: false });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const pos = e?.linePos?.[0] ?? (e?.pos ? lc.linePos(e.pos[0]) : undefined);
    throw new IntentFileError(
      `invalid YAML: ${e?.message.split("\n")[0]}`,
      pos ? `${file}:${pos.line}:${pos.col}` : file,
    );
  }
  const locate = (path: YamlPath, atKey = false): string => {
    let node: unknown = doc.contents;
    let best: Node | undefined = doc.contents ?? undefined;
    for (const [i, key] of path.entries()) {
      if (isMap(node)) {
        const pair = node.items.find(
          (p) => String((p.key as { value?: unknown })?.value ?? p.key) === String(key),
        );
        node = atKey && i === path.length - 1 ? pair?.key : pair?.value;
      } else if (isSeq(node)) node = node.items[Number(key)];
      else node = undefined;
      if (!node) break;
      best = node as Node;
    }
    const start = best?.range?.[0];
    if (start === undefined) return file;
    const { line, col } = lc.linePos(start);
    return `${file}:${line}:${col}`;
  };
  const value = doc.toJS() ?? {};
  const parsed = IntentFileY.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    if (!issue) throw new IntentFileError("invalid intent file", file);
    const path = issue.path.map((p) => (typeof p === "symbol" ? String(p) : p));
    let msg = issue.message;
    if (issue.code === "unrecognized_keys") {
      const keys = (issue as { keys: string[] }).keys;
      const key = keys[0] ?? "";
      msg = `unknown field "${key}" in ${describePath(path)}`;
      return fail(msg, locate([...path, key], true));
    }
    return fail(`${describePath(path)}: ${msg}`, locate(path));
  }
  return { file, intent: parsed.data, locate };
}

function fail(message: string, where: string): never {
  throw new IntentFileError(message, where);
}

export function describePath(path: YamlPath): string {
  if (path.length === 0) return "the top level";
  return path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
}

/** "8000-8080" → [8000, 8080]; 443 → [443, 443]; undefined → [0, 0] (any). */
export function portRange(ports: number | string | undefined): [number, number] {
  if (ports === undefined) return [0, 0];
  if (typeof ports === "number") return [ports, ports];
  const [a, b] = ports.split("-").map(Number);
  return [a ?? 0, b ?? a ?? 0];
}
