// Where every process of `isthmus dev` listens: a pure function of the health address, the number
// of coordinators and the site names, so a restart finds the same addresses (the coordinators'
// raft peers and the agents' controller) and the log can print them before anything starts.
// Port 0 asks for picked ports instead (tests); they are saved with the data so a restart on the
// same data directory keeps them (raft snapshots remember the coordinators' addresses).

export type AgentRole = "host" | "gateway";

export interface DevAgentLayout {
  /** Host name registered with the site controller. */
  name: string;
  role: AgentRole;
  tunnelIp: string;
  tunnelPort: number;
  metricsListen: string;
  adminListen: string;
}

export interface DevSiteLayout {
  name: string;
  controllerListen: string;
  controllerMetricsListen: string;
  agents: DevAgentLayout[];
}

export interface DevLayout {
  health: string;
  coordinators: Record<string, string>;
  sites: DevSiteLayout[];
}

/** Well-known VXLAN port (DESIGN §5); every dev agent has its own loopback address for it. */
export const VXLAN_PORT = 4789;
/** Ports per site block: controller gRPC, controller metrics, then metrics + admin per agent. */
export const SITE_PORT_STRIDE = 10;
export const MAX_DEV_SITES = 9;
/** Names of `--sites N`: the first two are the sites of docs/examples/two-site-web.yaml. */
export const DEFAULT_SITE_NAMES = ["ams", "fra"];
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** `--sites`: a count (ams, fra, then site-3 …) or a comma-separated list of names. */
export function siteNames(spec: string): string[] {
  const trimmed = spec.trim();
  let names: string[];
  if (/^\d+$/.test(trimmed)) {
    const n = Number(trimmed);
    names = Array.from({ length: n }, (_, i) => DEFAULT_SITE_NAMES[i] ?? `site-${i + 1}`);
  } else {
    names = trimmed
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
  }
  if (names.length < 1 || names.length > MAX_DEV_SITES) {
    throw new Error(`--sites: expected 1 to ${MAX_DEV_SITES} sites, got ${names.length} ("${spec}")`);
  }
  for (const name of names) {
    if (!DNS_LABEL.test(name)) {
      throw new Error(`--sites: "${name}" is not a valid site name (lower-case DNS label)`);
    }
  }
  if (new Set(names).size !== names.length) throw new Error(`--sites: a name appears twice in "${spec}"`);
  return names;
}

/**
 * The fixed layout for health port P: coordinators on P+1…P+n; site i (from 0) on
 * P+10(i+1) (controller gRPC), +1 (controller metrics), +2/+3 (host agent metrics/admin),
 * +4/+5 (gateway agent metrics/admin); agent tunnels on 127.0.0.<10(i+1)+1> (host) and
 * <10(i+1)+2> (gateway), UDP 4789. With P = 0 every port comes from `pickPort`, except those
 * `previous` (the layout saved by an earlier start on the same host) already has.
 */
export async function devLayout(
  host: string,
  basePort: number,
  coordinators: number,
  sites: string[],
  pickPort: () => Promise<number>,
  previous?: DevLayout,
): Promise<DevLayout> {
  const fixed = basePort !== 0;
  if (fixed && basePort + SITE_PORT_STRIDE * sites.length + 5 > 65_535) {
    throw new Error(`--listen port ${basePort} leaves no room for ${sites.length} sites below 65535`);
  }
  const port = async (offset: number) => (fixed ? basePort + offset : await pickPort());
  const coords: Record<string, string> = {};
  for (let i = 0; i < coordinators; i++) coords[`c${i + 1}`] = `${host}:${await port(i + 1)}`;
  const reuse = !fixed && previous !== undefined && previous.health.startsWith(`${host}:`);
  if (reuse && Object.keys(previous.coordinators).join() === Object.keys(coords).join()) {
    Object.assign(coords, previous.coordinators);
  }
  const siteLayouts: DevSiteLayout[] = [];
  for (const [i, name] of sites.entries()) {
    const kept = reuse ? previous.sites.find((s) => s.name === name) : undefined;
    if (kept) {
      siteLayouts.push(kept);
      continue;
    }
    const block = SITE_PORT_STRIDE * (i + 1);
    const agents: DevAgentLayout[] = [];
    for (const [k, role] of (["host", "gateway"] as const).entries()) {
      agents.push({
        name: `${name}-${role === "host" ? "host" : "gw"}-1`,
        role,
        tunnelIp: `127.0.0.${block + k + 1}`,
        tunnelPort: fixed ? VXLAN_PORT : await pickPort(),
        metricsListen: `${host}:${await port(block + 2 + 2 * k)}`,
        adminListen: `${host}:${await port(block + 3 + 2 * k)}`,
      });
    }
    siteLayouts.push({
      name,
      controllerListen: `${host}:${await port(block)}`,
      controllerMetricsListen: `${host}:${await port(block + 1)}`,
      agents,
    });
  }
  return { health: `${host}:${basePort}`, coordinators: coords, sites: siteLayouts };
}
