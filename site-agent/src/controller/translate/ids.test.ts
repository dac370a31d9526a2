import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { canonicalIp, cidrContains, hostPrefix, networkOf } from "./cidr.js";
import { derivedId, derivedMac } from "./ids.js";

describe("derived ids and MACs", () => {
  it("are stable UUIDv5-shaped ids that differ per source and role", () => {
    const a = derivedId("9b2f0c7e-0000-4000-8000-000000000001", "bridge-port");
    assert.equal(a, derivedId("9b2f0c7e-0000-4000-8000-000000000001", "bridge-port"));
    assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(a, derivedId("9b2f0c7e-0000-4000-8000-000000000001", "router-port"));
    assert.notEqual(a, derivedId("9b2f0c7e-0000-4000-8000-000000000002", "bridge-port"));
  });

  it("MACs are locally administered unicast and stable", () => {
    for (let i = 0; i < 200; i++) {
      const mac = derivedMac(`src-${i}`, "uplink/east");
      assert.equal(mac, derivedMac(`src-${i}`, "uplink/east"));
      const first = Number.parseInt(mac.slice(0, 2), 16);
      assert.equal(first & 0x01, 0, `${mac} is unicast`);
      assert.equal(first & 0x02, 0x02, `${mac} is locally administered`);
    }
  });
});

describe("cidr arithmetic", () => {
  it("normalizes networks for both families", () => {
    assert.equal(networkOf("198.51.100.2/24"), "198.51.100.0/24");
    assert.equal(networkOf("10.1.2.3/8"), "10.0.0.0/8");
    assert.equal(networkOf("10.1.2.3/32"), "10.1.2.3/32");
    assert.equal(networkOf("2001:db8:0:0:1::5/64"), "2001:db8::/64");
    assert.equal(networkOf("10.0.0.0/33"), undefined);
    assert.equal(networkOf("10.0.0.0"), undefined);
    assert.equal(networkOf("bogus/24"), undefined);
  });

  it("tests containment and formats host prefixes canonically", () => {
    assert.ok(cidrContains("10.0.0.0/24", "10.0.0.255"));
    assert.ok(!cidrContains("10.0.0.0/24", "10.0.1.0"));
    assert.ok(!cidrContains("10.0.0.0/24", "::1"));
    assert.ok(cidrContains("fe80::/10", "fe80::1"));
    assert.equal(hostPrefix("10.0.0.5"), "10.0.0.5/32");
    assert.equal(hostPrefix("2001:0db8:0000:0000:0000:0000:0000:0005"), "2001:db8::5/128");
    assert.equal(canonicalIp("::ffff:1.2.3.4"), "::ffff:102:304");
    assert.equal(canonicalIp("2001:db8:0:1:0:0:0:1"), "2001:db8:0:1::1");
    assert.equal(canonicalIp("1:0:0:2:0:0:0:3"), "1:0:0:2::3");
    assert.equal(canonicalIp("10.0.0.256"), undefined);
  });
});
