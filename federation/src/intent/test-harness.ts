// Test helper: drives an IntentStateMachine with commands at consecutive log indexes, the way
// raft would, and offers builders so tests read as a topology in a few lines.
import assert from "node:assert/strict";
import type { federationpb, intentpb } from "@isthmus/schema";
import type { IntentErrorCode } from "./errors.js";
import type { KindKey } from "./kinds.js";
import { type ApplyOk, type ApplyResult, IntentStateMachine } from "./state-machine.js";

type Command = Omit<federationpb.IntentCommand, "proposedUnixMs">;

export function meta(name: string, extra: Partial<intentpb.ObjectMeta> = {}): intentpb.ObjectMeta {
  return { id: "", name, revision: 0, description: "", labels: {}, createdRevision: 0, ...extra };
}

export class IntentHarness {
  readonly sm: IntentStateMachine;
  index = 0;
  now = 1_750_000_000_000;

  constructor(sm = new IntentStateMachine()) {
    this.sm = sm;
    this.index = sm.index;
  }

  run(cmd: Command): ApplyResult {
    return this.sm.applyCommand(++this.index, {
      ...cmd,
      proposedUnixMs: this.now,
    } as federationpb.IntentCommand);
  }

  ok(cmd: Command): ApplyOk {
    const r = this.run(cmd);
    if (!r.ok) assert.fail(`expected success, got ${r.error.code}: ${r.error.message}`);
    return r;
  }

  fail(cmd: Command, code: IntentErrorCode, field?: string | RegExp): string {
    const r = this.run(cmd);
    if (r.ok) assert.fail(`expected ${code}${field ? ` on ${field}` : ""}, but the command succeeded`);
    assert.equal(r.error.code, code, r.error.message);
    if (typeof field === "string") assert.equal(r.error.field, field, r.error.message);
    else if (field) assert.match(r.error.field, field, r.error.message);
    return r.error.message;
  }

  create(obj: intentpb.IntentObject): ApplyOk {
    return this.ok({ create: { object: obj } });
  }

  /** Adds and joins a site so it may span networks and report. */
  activeSite(name: string): void {
    this.ok({ addSite: { name, region: "", description: "", labels: {} } });
    this.ok({
      joinSite: {
        site: name,
        publicKeyJwk: JSON.stringify({ kty: "OKP", crv: "Ed25519", x: `k-${name}` }),
        tokenId: `tok-${name}`,
        tokenExpiresUnixMs: this.now + 600_000,
      },
    });
  }

  network(
    name: string,
    cidr: string,
    sites: string[],
    extra: Partial<intentpb.Network> = {},
  ): intentpb.Network {
    const gw = cidr.includes(":") ? cidr.replace(/::\/\d+$/, "::1") : cidr.replace(/\.0\/\d+$/, ".1");
    const r = this.create({
      network: { meta: meta(name), subnets: [{ cidr, gatewayIp: gw }], sites, vni: 0, mtu: 0, ...extra },
    });
    return r.objects[0]?.network as intentpb.Network;
  }

  router(name: string, uplinks: intentpb.RouterUplink[] = []): intentpb.Router {
    return this.create({ router: { meta: meta(name), uplinks, routes: [], transitVni: 0 } }).objects[0]
      ?.router as intentpb.Router;
  }

  attach(name: string, router: intentpb.Router, net: intentpb.Network, ip = ""): intentpb.RouterInterface {
    return this.create({
      routerInterface: { meta: meta(name), routerId: id(router), networkId: id(net), ip, mac: "" },
    }).objects[0]?.routerInterface as intentpb.RouterInterface;
  }

  group(name: string): intentpb.SecurityGroup {
    return this.create({ securityGroup: { meta: meta(name), stateless: false } }).objects[0]
      ?.securityGroup as intentpb.SecurityGroup;
  }

  get<K extends KindKey>(kind: K, name: string) {
    const o = this.sm.byName(kind, name);
    assert.ok(o, `${kind} ${name} exists`);
    return o;
  }
}

export function id(o: { meta?: intentpb.ObjectMeta }): string {
  assert.ok(o.meta?.id, "object has an id");
  return o.meta.id;
}

export function rule(
  groupId: string,
  extra: Partial<intentpb.SecurityGroupRule> = {},
  name = "r1",
): intentpb.IntentObject {
  return {
    securityGroupRule: {
      meta: meta(name),
      securityGroupId: groupId,
      direction: 1,
      ethertype: 1,
      protocol: "tcp",
      portRangeMin: 22,
      portRangeMax: 22,
      remoteCidr: "",
      remoteGroupId: "",
      ...extra,
    },
  };
}

export function port(
  portId: string,
  networkId: string,
  ips: string[],
  extra: Partial<intentpb.PortRecord> = {},
): intentpb.PortRecord {
  return {
    meta: meta("", { id: portId }),
    site: "",
    host: "host-1",
    networkId,
    mac: "02:00:00:00:00:01",
    ips,
    securityGroupIds: [],
    up: true,
    ...extra,
  };
}
