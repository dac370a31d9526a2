// Property: replicas that apply the same command sequence agree byte for byte, whatever the mix of
// valid and refused commands, and a replica restored from a snapshot mid-way keeps agreeing.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { federationpb, intentpb } from "@isthmus/schema";
import fc from "fast-check";
import { IntentStateMachine } from "./state-machine.js";
import { meta } from "./test-harness.js";

type Command = Omit<federationpb.IntentCommand, "proposedUnixMs">;

const names = fc.constantFrom("a", "b", "c", "d");
const sites = fc.constantFrom("ams", "fra", "nyc");
const cidrs = fc.constantFrom(
  "10.0.0.0/24",
  "10.0.0.0/16",
  "10.1.0.0/24",
  "2001:db8::/64",
  "10.0.0.5/24",
  "bad",
);

/** Commands that refer to objects by name; ids are resolved against the replica at apply time. */
type Op =
  | { t: "site"; name: string }
  | { t: "join"; name: string; token: number }
  | { t: "revoke"; name: string }
  | { t: "network"; name: string; cidr: string; site: string; vni: number }
  | { t: "router"; name: string; site: string }
  | { t: "attach"; router: string; network: string }
  | { t: "group"; name: string }
  | { t: "rule"; name: string; group: string; remote: string; min: number; max: number }
  | { t: "mtu"; name: string; mtu: number; stale: boolean }
  | { t: "delete"; kind: number; name: string };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constant("site" as const), name: sites }),
  fc.record({ t: fc.constant("join" as const), name: sites, token: fc.integer({ min: 0, max: 3 }) }),
  fc.record({ t: fc.constant("revoke" as const), name: sites }),
  fc.record({
    t: fc.constant("network" as const),
    name: names,
    cidr: cidrs,
    site: sites,
    vni: fc.constantFrom(0, 0, 0x100005, 0x0fffff),
  }),
  fc.record({ t: fc.constant("router" as const), name: names, site: sites }),
  fc.record({ t: fc.constant("attach" as const), router: names, network: names }),
  fc.record({ t: fc.constant("group" as const), name: names }),
  fc.record({
    t: fc.constant("rule" as const),
    name: names,
    group: names,
    remote: fc.constantFrom("", "a", "b"),
    min: fc.integer({ min: 0, max: 100 }),
    max: fc.integer({ min: 0, max: 100 }),
  }),
  fc.record({
    t: fc.constant("mtu" as const),
    name: names,
    mtu: fc.constantFrom(1400, 1450, 9000, 10),
    stale: fc.boolean(),
  }),
  fc.record({ t: fc.constant("delete" as const), kind: fc.integer({ min: 1, max: 7 }), name: names }),
);

function toCommand(sm: IntentStateMachine, o: Op): Command {
  const idOf = (kind: "router" | "network" | "securityGroup", name: string) =>
    sm.byName(kind, name)?.meta?.id ?? "";
  switch (o.t) {
    case "site":
      return { addSite: { name: o.name, region: "", description: "", labels: {} } };
    case "join":
      return {
        joinSite: {
          site: o.name,
          publicKeyJwk: '{"kty":"OKP","x":"k"}',
          tokenId: `t${o.token}`,
          tokenExpiresUnixMs: 2e12,
        },
      };
    case "revoke":
      return { revokeSite: { site: o.name } };
    case "network":
      return {
        create: {
          object: {
            network: {
              meta: meta(`n-${o.name}`),
              subnets: [{ cidr: o.cidr, gatewayIp: "" }],
              sites: [o.site],
              vni: o.vni,
              mtu: 0,
            },
          },
        },
      };
    case "router":
      return {
        create: {
          object: {
            router: {
              meta: meta(`r-${o.name}`),
              uplinks: [{ site: o.site, ipCidr: "192.0.2.2/24", gatewayIp: "", snat: false }],
              routes: [],
              transitVni: 0,
            },
          },
        },
      };
    case "attach":
      return {
        create: {
          object: {
            routerInterface: {
              meta: meta(`ri-${o.router}-${o.network}`),
              routerId: idOf("router", `r-${o.router}`),
              networkId: idOf("network", `n-${o.network}`),
              ip: "",
              mac: "",
            },
          },
        },
      };
    case "group":
      return { create: { object: { securityGroup: { meta: meta(`g-${o.name}`), stateless: false } } } };
    case "rule":
      return {
        create: {
          object: {
            securityGroupRule: {
              meta: meta(`rule-${o.name}`),
              securityGroupId: idOf("securityGroup", `g-${o.group}`),
              direction: 1,
              ethertype: 1,
              protocol: "tcp",
              portRangeMin: o.min,
              portRangeMax: o.max,
              remoteCidr: "",
              remoteGroupId: o.remote ? idOf("securityGroup", `g-${o.remote}`) : "",
            },
          },
        },
      };
    case "mtu": {
      const n = sm.byName("network", `n-${o.name}`);
      const net: intentpb.Network = n ?? {
        meta: meta(`n-${o.name}`),
        subnets: [],
        sites: [],
        vni: 0,
        mtu: 0,
      };
      const revision = (net.meta?.revision ?? 0) - (o.stale ? 1 : 0);
      return {
        update: {
          object: {
            network: {
              ...net,
              mtu: o.mtu,
              meta: { ...meta(`n-${o.name}`), id: net.meta?.id ?? "", revision },
            },
          },
        },
      };
    }
    case "delete": {
      const prefix = ["", "", "", "r-", "n-", "ri-", "g-", "rule-"][o.kind] ?? "";
      return { delete: { kind: o.kind, id: "", name: `${prefix}${o.name}`, expectedRevision: 0 } };
    }
  }
}

/** Successful commands across all runs: the property is vacuous if everything is refused. */
let applied = 0;

describe("intent state machine determinism (property)", () => {
  it("replicas agree byte for byte; a replica restored mid-way keeps agreeing", () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 60 }), fc.nat(), (ops, cut) => {
        const a = new IntentStateMachine({ journalLimit: 8 });
        const b = new IntentStateMachine({ journalLimit: 8 });
        const restoreAt = cut % ops.length;
        let c: IntentStateMachine | undefined;
        ops.forEach((o, i) => {
          const index = i + 1;
          // Commands are built once (by the proposer) and the same bytes go to every replica.
          const cmd = {
            ...toCommand(a, o),
            proposedUnixMs: 1_750_000_000_000 + i,
          } as federationpb.IntentCommand;
          const ra = a.applyCommand(index, cmd);
          if (ra.ok) applied++;
          const rb = b.applyCommand(index, cmd);
          assert.deepEqual(ra, rb);
          if (c) assert.deepEqual(c.applyCommand(index, cmd), ra);
          if (i === restoreAt) {
            c = new IntentStateMachine({ journalLimit: 8 });
            c.restore(a.snapshot());
          }
        });
        const snap = Buffer.from(a.snapshot());
        assert.deepEqual(Buffer.from(b.snapshot()), snap);
        assert.ok(c);
        assert.deepEqual(Buffer.from(c.snapshot()), snap);
        const d = new IntentStateMachine();
        d.restore(snap);
        assert.deepEqual(Buffer.from(d.snapshot()), snap);
      }),
      { numRuns: 150, seed: 20261124 },
    );
    assert.ok(applied > 100, `only ${applied} commands succeeded`);
  });
});
