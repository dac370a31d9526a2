import assert from "node:assert/strict";
import { test } from "node:test";
import { postgresForTests } from "./db/postgres-for-tests.js";
import { LocalRequestError } from "./local-store.js";
import { type LeasedBlock, SnatBlockLeases } from "./snat-block-leases.js";
import { controllerFixture } from "./test-support/controller-fixture.js";

const pg = postgresForTests();

/**
 * Asks again, as an agent does, when the answer is not "exhausted": under heavy load 20
 * conflicting SERIALIZABLE transactions can use up the retry budget or outlive the fixture's lease.
 */
async function leaseRetrying(f: () => Promise<LeasedBlock>): Promise<LeasedBlock> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await f();
    } catch (err) {
      if ((err instanceof LocalRequestError && err.kind === "exhausted") || attempt >= 10) throw err;
      await new Promise((r) => setTimeout(r, 50 * attempt));
    }
  }
}

const ROUTER = "7d1c3c52-6f0e-4d5a-9a59-0d1f3a1b2c3d";

test("two hosts leasing at once never get overlapping blocks, and the range runs out with a clear error", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const f = await controllerFixture(await pg.createDatabase());
  t.after(() => f.close());
  const leases = new SnatBlockLeases(f.db, f.ctx.fence, { blockSize: 64 });
  // 1024-2047 holds 16 blocks; 2 hosts × 10 concurrent requests compete for them.
  const asks = ["host-a", "host-b"].flatMap((h) =>
    Array.from({ length: 10 }, () =>
      leaseRetrying(() => leases.lease(h, ROUTER, "192.0.2.10", 1024, 2047)).then(
        (b) => ({ host: h, b }),
        (e: Error) => ({ host: h, e }),
      ),
    ),
  );
  const results = await Promise.all(asks);
  const got = results.filter((r): r is { host: string; b: LeasedBlock } => "b" in r);
  const failed = results.filter((r): r is { host: string; e: Error } => "e" in r);
  assert.equal(got.length, 16, "every block of the range leased once");
  assert.equal(failed.length, 4);
  for (const { e } of failed) {
    assert.ok(e instanceof LocalRequestError && e.kind === "exhausted", String(e));
    assert.match(e.message, /every SNAT block of 192\.0\.2\.10/);
  }
  const starts = got.map((g) => g.b.start).sort((a, b) => a - b);
  assert.deepEqual(
    starts,
    Array.from({ length: 16 }, (_, i) => 1024 + i * 64),
    "distinct, aligned blocks",
  );
  assert.ok(got.some((g) => g.host === "host-a") && got.some((g) => g.host === "host-b"));
  // A different address has its own blocks.
  const other = await leases.lease("host-a", ROUTER, "192.0.2.11", 1024, 2047);
  assert.equal(other.start, 1024);
});

test("an expired lease is reclaimed by another host; the first host's renewal reports it lost", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const f = await controllerFixture(await pg.createDatabase());
  t.after(() => f.close());
  // Expiry is decided by the database clock; a long and a short lifetime keep the test independent
  // of how slowly this process runs.
  const short = new SnatBlockLeases(f.db, f.ctx.fence, { ttlMs: 300 });
  const long = new SnatBlockLeases(f.db, f.ctx.fence, { ttlMs: 60_000 });
  const a = await long.lease("host-a", ROUTER, "192.0.2.20", 1024, 1087); // exactly one block
  assert.equal(a.start, 1024);
  await assert.rejects(long.lease("host-b", ROUTER, "192.0.2.20", 1024, 1087), /is leased/);
  // Renewing extends it.
  const r1 = await long.renew("host-a", [a]);
  assert.equal(r1.renewed.length, 1);
  assert.ok(r1.renewed[0]!.expiresUnixMs >= a.expiresUnixMs);
  await assert.rejects(long.lease("host-b", ROUTER, "192.0.2.20", 1024, 1087), /is leased/);
  // The last renewal is a short one and nothing renews it again: it lapses and host-b takes it over.
  await short.renew("host-a", [a]);
  let b: LeasedBlock | undefined;
  for (let i = 0; i < 200 && !b; i++) {
    b = await long.lease("host-b", ROUTER, "192.0.2.20", 1024, 1087).catch(() => undefined);
    if (!b) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(b, "host-b got the lapsed block");
  assert.equal(b.start, 1024);
  const r2 = await long.renew("host-a", [a]);
  assert.deepEqual(r2.renewed, []);
  assert.equal(r2.lost.length, 1);
  assert.equal(r2.lost[0]!.start, 1024);
  // Releasing: only the holder's release counts; then the block is free at once.
  assert.equal(await long.release("host-a", [a]), 0, "host-a no longer holds it");
  assert.equal(await long.release("host-b", [b]), 1);
  const again = await new SnatBlockLeases(f.db, f.ctx.fence).lease(
    "host-a",
    ROUTER,
    "192.0.2.20",
    1024,
    1087,
  );
  assert.equal(again.start, 1024);
});

test("a host is bounded in how many blocks it holds", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const f = await controllerFixture(await pg.createDatabase());
  t.after(() => f.close());
  const leases = new SnatBlockLeases(f.db, f.ctx.fence, { maxBlocksPerHost: 2 });
  await leases.lease("host-a", ROUTER, "192.0.2.30", 1024, 65535);
  await leases.lease("host-a", ROUTER, "192.0.2.31", 1024, 65535);
  await assert.rejects(
    leases.lease("host-a", ROUTER, "192.0.2.32", 1024, 65535),
    /already holds 2 SNAT blocks/,
  );
  await leases.lease("host-b", ROUTER, "192.0.2.32", 1024, 65535);
});
