import assert from "node:assert/strict";
import { test } from "node:test";
import { dropCategory } from "./drop-reason.js";

test("detailed drop reasons reduce to their fixed words", () => {
  assert.equal(
    dropCategory("dropped by rule 5e1c0a4e-0000-4000-8000-000000000001 in chain chain-3"),
    "dropped_by_rule_in_chain",
  );
  assert.equal(dropCategory("no route to 10.2.0.3 on router router-7"), "no_route_to_on_router");
  assert.equal(dropCategory("NAT table full (65536 bindings): rule rule-1"), "nat_table_full_rule");
  assert.equal(dropCategory("spoofed_mac"), "spoofed_mac");
  assert.equal(dropCategory("1234"), "other");
});
