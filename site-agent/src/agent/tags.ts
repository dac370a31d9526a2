// Flow tag names the agent itself adds (the simulation's convention, docs/simulation.md): a flow
// carrying `port:<id>` is invalidated when that port changes, and so on.
export const agentTag = {
  port: (id: string) => `port:${id}`,
  device: (id: string) => `device:${id}`,
  host: (id: string) => `host:${id}`,
  gateway: (site: string) => `gateway:${site}`,
  mac: (bridgeId: string, mac: string) => `mac:${bridgeId}:${mac.toLowerCase()}`,
  flood: (bridgeId: string) => `flood:${bridgeId}`,
} as const;

/** Tags naming a topology object by kind, for invalidating on any change to it. */
export function objectTag(kind: string, id: string): string {
  switch (kind) {
    case "bridge":
    case "router":
      return `device:${id}`;
    case "ipAddrGroup":
      return `ipgroup:${id}`;
    case "portGroup":
      return `portgroup:${id}`;
    case "remoteGateway":
      return `remotegateway:${id}`;
    case "macEntry":
      return `macentry:${id}`;
    case "arpEntry":
      return `arpentry:${id}`;
    case "ipAddrGroupMember":
      return `ipgroupmember:${id}`;
    default:
      return `${kind}:${id}`;
  }
}
