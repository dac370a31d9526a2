// Site-local objects the controller owns itself (not from global intent): registered hosts and
// VM ports with their bindings and site-local tunnel keys.
import type { topologypb } from "@isthmus/schema";

export interface LocalHost {
  id: string;
  name: string;
  tunnelIp: string;
  tunnelPort: number;
  role: topologypb.HostRole;
  wanIp: string;
  wanPort: number;
}

/** A site-local VM port; bound when hostId is non-empty. */
export interface LocalPortBinding {
  id: string;
  name: string;
  networkId: string;
  hostId: string;
  interfaceName: string;
  mac: string;
  ips: string[];
  securityGroupIds: string[];
  /** Site-local tunnel key naming the port (0x000001–0x0FFFFF). */
  tunnelKey: number;
}

/** Site-local tunnel keys, disjoint from the coordinator's global keys (DESIGN.md §5). */
export const LOCAL_TUNNEL_KEY_MIN = 0x000001;
export const LOCAL_TUNNEL_KEY_MAX = 0x0fffff;
