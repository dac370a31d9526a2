import assert from "node:assert/strict";
import { test } from "node:test";
import { topologypb } from "@isthmus/schema";
import fc from "fast-check";
import { eth } from "../packets/packet-dsl.js";
import type { SimResult } from "./result.js";
import { simulate } from "./simulate.js";
import { type ConditionSpec, newSimContext, TopologyBuilder } from "./topology-builder.js";
import { TopologyView } from "./topology-view.js";

const RA = topologypb.RuleAction;
const M1 = "02:00:00:00:00:01";
const M2 = "02:00:00:00:00:02";
const PORTS = [22, 53, 80, 443, 1000];

interface RuleSpec {
  action: topologypb.RuleAction;
  cond: ConditionSpec;
}

/** Conditions mostly of the indexable kind (protocol, ether type, ports, addresses), some not. */
const condArb: fc.Arbitrary<ConditionSpec> = fc
  .record({
    etherType: fc.constantFrom(0, 0, 0x0800, 0x86dd, 0x0806),
    nwProto: fc.constantFrom(6, 17, 1, 1, 6),
    tpDst: fc.option(fc.constantFrom(...PORTS), { nil: undefined }),
    tpDstRange: fc.boolean(),
    invTpDst: fc.boolean(),
    tpSrc: fc.option(fc.constantFrom(0, 8, 1000), { nil: undefined }),
    nwSrc: fc.option(fc.constantFrom("10.0.0.0/24", "10.0.0.1/32", "10.9.0.0/16"), { nil: undefined }),
    foreign: fc.constantFrom(false, false, false, false, true),
    ret: fc.constantFrom(false, false, false, true),
  })
  .map((x) => {
    const c: ConditionSpec = { nwProto: x.nwProto };
    if (x.etherType !== 0) c.etherType = x.etherType;
    if (x.tpDst !== undefined) {
      c.tpDst = { start: x.tpDst, end: x.tpDstRange ? x.tpDst + 100 : x.tpDst };
      c.invTpDst = x.invTpDst && x.tpDstRange;
    }
    if (x.tpSrc !== undefined) c.tpSrc = { start: x.tpSrc, end: x.tpSrc };
    if (x.nwSrc !== undefined) c.nwSrc = x.nwSrc;
    if (x.foreign) c.ethSrc = M1; // not indexable: splits the run
    if (x.ret) c.matchReturnFlow = true;
    return c;
  });

const ruleArb: fc.Arbitrary<RuleSpec> = fc.record({
  action: fc.constantFrom(RA.RULE_ACTION_ACCEPT, RA.RULE_ACTION_DROP, RA.RULE_ACTION_CONTINUE),
  cond: condArb,
});

const frameArb: fc.Arbitrary<Uint8Array> = fc
  .record({
    kind: fc.constantFrom("tcp", "udp", "icmp", "ip6", "arp"),
    src: fc.constantFrom("10.0.0.1", "10.0.0.9", "10.9.1.1"),
    sport: fc.constantFrom(...PORTS, 8, 0),
    dport: fc.constantFrom(...PORTS, 100, 500),
  })
  .map(({ kind, src, sport, dport }) => {
    const e = eth(M1, M2);
    if (kind === "ip6") return e.ip6("fd00::1", "fd00::2").udp(sport, dport).build();
    if (kind === "arp") return e.arpReply(M1, src, M2, "10.0.0.2").build();
    const ip = e.ip4(src, "10.0.0.2");
    if (kind === "tcp") return ip.tcp(sport, dport).build();
    if (kind === "udp") return ip.udp(sport, dport).build();
    return ip.icmp(sport & 0xff, dport & 0xff).build();
  });

/** vm1 → vm2 on one bridge, `rules` as vm2's outbound filter; one view indexed, one linear. */
function views(rules: RuleSpec[]) {
  const t = new TopologyBuilder();
  const h = t.host("h1", "192.168.0.1");
  const br = t.bridge();
  const chain = t.chain("to-vm2");
  const vm1 = t.vmPort(br, h, M1, ["10.0.0.1"]);
  t.vmPort(br, h, M2, ["10.0.0.2"], { outboundFilterId: chain.id });
  for (const r of rules) t.rule(chain, r.action, r.cond);
  t.dropRule(chain);
  const indexed = new TopologyView(t.objects);
  const linear = new TopologyView(t.objects);
  for (const c of linear.chains.values()) c.runs = [{ start: 0, end: c.rules.length }];
  return { indexed, linear, ingress: { portId: vm1.id }, chainId: chain.id };
}

function same(a: SimResult, b: SimResult, what: string): void {
  assert.deepEqual(a.actions, b.actions, `${what}: actions`);
  assert.equal(a.dropReason, b.dropReason, `${what}: drop reason`);
  assert.equal(a.mask, b.mask, `${what}: mask`);
  assert.deepEqual([...a.tags].sort(), [...b.tags].sort(), `${what}: tags`);
}

test("rule index: indexed runs decide, tag and mask exactly as the linear walk (property)", () => {
  let indexedRuns = 0;
  fc.assert(
    fc.property(
      fc.array(ruleArb, { minLength: 8, maxLength: 40 }),
      fc.array(frameArb, { maxLength: 12 }),
      (rules, frames) => {
        const v = views(rules);
        if (v.indexed.chains.get(v.chainId)!.runs.some((r) => r.buckets !== undefined)) indexedRuns++;
        const ci = newSimContext("h1");
        const cl = newSimContext("h1");
        for (const f of frames) {
          same(simulate(v.indexed, f, v.ingress, ci), simulate(v.linear, f, v.ingress, cl), "frame");
        }
      },
    ),
    { numRuns: 150, seed: 6 },
  );
  assert.ok(indexedRuns > 50, `only ${indexedRuns} generated chains had an indexed run`);
});

test("rule index: a 1000-rule group finds the matching port rule and masks like the linear walk", () => {
  const rules: RuleSpec[] = [];
  for (let i = 0; i < 1000; i++) {
    rules.push({
      action: RA.RULE_ACTION_ACCEPT,
      cond: {
        etherType: 0x0800,
        nwProto: 6,
        tpDst: { start: 10000 + i, end: 10000 + i },
        nwSrc: "10.0.0.0/24",
      },
    });
  }
  const v = views(rules);
  const runs = v.indexed.chains.get(v.chainId)!.runs;
  assert.ok(
    runs.some((r) => r.buckets !== undefined && r.end - r.start === 1000),
    "the 1000 rules form one indexed run",
  );
  const cases = [
    eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").tcp(5555, 10999).build(), // last rule
    eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").tcp(5555, 9999).build(), // no rule: default drop
    eth(M1, M2).ip4("10.0.0.1", "10.0.0.2").udp(5555, 10005).build(), // wrong protocol
  ];
  const ci = newSimContext("h1");
  const cl = newSimContext("h1");
  const results = cases.map((f) => {
    const a = simulate(v.indexed, f, v.ingress, ci);
    same(a, simulate(v.linear, f, v.ingress, cl), "case");
    return a;
  });
  assert.equal(results[0]!.actions.at(-1)?.kind, "output");
  assert.equal(results[1]!.actions[0]?.kind, "drop");
  assert.equal(results[2]!.actions[0]?.kind, "drop");
});
