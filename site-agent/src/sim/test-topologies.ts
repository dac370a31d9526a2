// Topologies shared by the simulation tests and the benchmark: two subnets joined by a router,
// optionally with an uplink, each VM behind a bridge. Built with TopologyBuilder.
import { topologypb } from "@isthmus/schema";
import { TopologyBuilder } from "./topology-builder.js";

export const VM1_MAC = "02:00:00:00:01:01";
export const VM2_MAC = "02:00:00:00:02:01";
export const RA_MAC = "02:00:00:00:01:fe";
export const RB_MAC = "02:00:00:00:02:fe";
export const UP_MAC = "02:00:00:00:0f:fe";
export const EXT_MAC = "02:00:00:00:0f:01";

/** vm1 (10.0.1.1, bridge A) — router — vm2 (10.0.2.1, bridge B); uplink 203.0.113.2/24 on gw. */
export function twoSubnets(opts: { vm2Host?: string } = {}) {
  const t = new TopologyBuilder();
  const h1 = t.host("h1", "192.168.0.1");
  const h2 = t.host("h2", "192.168.0.2");
  const gw = t.host("gw", "192.168.0.9", topologypb.HostRole.HOST_ROLE_GATEWAY);
  const bA = t.bridge({ name: "A" });
  const bB = t.bridge({ name: "B" });
  const r = t.router({ name: "r" });
  const vm1 = t.vmPort(bA, h1, VM1_MAC, ["10.0.1.1"]);
  const vm2 = t.vmPort(bB, opts.vm2Host === "h2" ? h2 : h1, VM2_MAC, ["10.0.2.1"]);
  const ifA = t.routerInterface(r, bA, RA_MAC, "10.0.1.254/24");
  const ifB = t.routerInterface(r, bB, RB_MAC, "10.0.2.254/24");
  const up = t.uplink(r, gw, UP_MAC, "203.0.113.2/24");
  const routeA = t.route(r, "10.0.1.0/24", ifA.routerPort);
  const routeB = t.route(r, "10.0.2.0/24", ifB.routerPort);
  const routeUp = t.route(r, "203.0.113.0/24", up);
  const routeDefault = t.route(r, "0.0.0.0/0", up, { nextHopGateway: "203.0.113.1" });
  return { t, h1, h2, gw, bA, bB, r, vm1, vm2, ifA, ifB, up, routeA, routeB, routeUp, routeDefault };
}
