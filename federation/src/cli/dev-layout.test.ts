import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { devLayout, MAX_DEV_SITES, siteNames, VXLAN_PORT } from "./dev-layout.js";

describe("dev layout", () => {
  it("names sites by count (the example's two first) or by list, and refuses bad names", () => {
    assert.deepEqual(siteNames("2"), ["ams", "fra"]);
    assert.deepEqual(siteNames("4"), ["ams", "fra", "site-3", "site-4"]);
    assert.deepEqual(siteNames(" nyc, sjc ,lon"), ["nyc", "sjc", "lon"]);
    assert.throws(() => siteNames("0"), /expected 1 to 9 sites, got 0/);
    assert.throws(() => siteNames(String(MAX_DEV_SITES + 1)), /expected 1 to 9 sites/);
    assert.throws(() => siteNames("ams,Paris"), /"Paris" is not a valid site name/);
    assert.throws(() => siteNames("ams,ams"), /appears twice/);
  });

  it("derives every address from the health port, on distinct loopback tunnel addresses", async () => {
    const picked = () => Promise.reject(new Error("fixed layouts pick nothing"));
    const l = await devLayout("127.0.0.1", 7400, 3, ["ams", "fra"], picked);
    assert.deepEqual(l.coordinators, { c1: "127.0.0.1:7401", c2: "127.0.0.1:7402", c3: "127.0.0.1:7403" });
    const [ams, fra] = l.sites;
    assert.equal(ams?.controllerListen, "127.0.0.1:7410");
    assert.equal(fra?.controllerListen, "127.0.0.1:7420");
    assert.deepEqual(
      fra?.agents.map((a) => [a.name, a.role, a.tunnelIp, a.tunnelPort, a.metricsListen, a.adminListen]),
      [
        ["fra-host-1", "host", "127.0.0.21", VXLAN_PORT, "127.0.0.1:7422", "127.0.0.1:7423"],
        ["fra-gw-1", "gateway", "127.0.0.22", VXLAN_PORT, "127.0.0.1:7424", "127.0.0.1:7425"],
      ],
    );
    const ports = [
      ...Object.values(l.coordinators),
      ...l.sites.flatMap((s) => [
        s.controllerListen,
        s.controllerMetricsListen,
        ...s.agents.flatMap((a) => [a.metricsListen, a.adminListen]),
      ]),
    ];
    assert.equal(new Set(ports).size, ports.length, "no address used twice");
    await assert.rejects(devLayout("127.0.0.1", 65_520, 3, ["ams", "fra"], picked), /no room for 2 sites/);
  });

  it("with port 0 picks every port, and keeps the ports an earlier start saved", async () => {
    let next = 20_000;
    const pick = async () => next++;
    const first = await devLayout("127.0.0.1", 0, 3, ["ams"], pick);
    assert.equal(first.coordinators.c1, "127.0.0.1:20000");
    assert.equal(first.sites[0]?.agents[0]?.tunnelPort, 20_003);
    const again = await devLayout("127.0.0.1", 0, 3, ["ams", "fra"], pick, first);
    assert.deepEqual(again.coordinators, first.coordinators);
    assert.deepEqual(again.sites[0], first.sites[0]);
    assert.notEqual(again.sites[1]?.controllerListen, first.sites[0]?.controllerListen);
    const fresh = await devLayout("127.0.0.1", 0, 5, ["ams"], pick, first);
    assert.notEqual(fresh.coordinators.c1, first.coordinators.c1, "a different group is not reused");
  });
});
