import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatPrefix, parseAddress, parsePrefix, prefixContains, prefixesOverlap } from "./address.js";

describe("addresses and prefixes", () => {
  it("parses IPv4 and IPv6 prefixes, noting host bits", () => {
    const p = parsePrefix("10.1.2.3/16");
    assert.ok(p);
    assert.equal(p.exact, false);
    assert.equal(formatPrefix(p), "10.1.0.0/16");
    assert.equal(parsePrefix("2001:db8::/32")?.exact, true);
    assert.equal(parsePrefix("::ffff:10.0.0.0/120")?.family, 6);
    for (const bad of ["10.0.0.0", "10.0.0.0/33", "10.0.0/8", "x/8", "2001:db8::/129", "10.0.0.0/-1"]) {
      assert.equal(parsePrefix(bad), undefined, bad);
    }
  });

  it("answers containment and overlap within a family only", () => {
    const net = parsePrefix("10.1.0.0/24");
    const ip = parseAddress("10.1.0.200");
    assert.ok(net && ip);
    assert.ok(prefixContains(net, ip));
    assert.equal(prefixContains(net, parseAddress("10.1.1.1") ?? ip), false);
    const six = parsePrefix("2001:db8::/32");
    const sixIp = parseAddress("2001:db8:ffff::1");
    assert.ok(six && sixIp);
    assert.ok(prefixContains(six, sixIp));
    assert.equal(prefixContains(six, ip), false);
    const wide = parsePrefix("10.0.0.0/8");
    assert.ok(wide);
    assert.ok(prefixesOverlap(net, wide));
    assert.equal(prefixesOverlap(net, parsePrefix("10.1.1.0/24") ?? net), false);
  });
});
