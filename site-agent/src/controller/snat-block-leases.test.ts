import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { startTestPostgres, type TestPostgres } from "./db/test-postgres.js";
import { LocalRequestError } from "./local-store.js";
import { type LeasedBlock, SnatBlockLeases } from "./snat-block-leases.js";
import { controllerFixture } from "./test-support/controller-fixture.js";

let pgs: TestPostgres | undefined;
let skip: string | undefined;
before(async () => {
  const r = await startTestPostgres();
  if ("skip" in r) {
    skip = r.skip;
    console.log(`# skipping: ${r.skip}`);
  } else pgs = r;
});
after(async () => {
  await pgs?.stop();
});

const ROUTER = "7d1c3c52-6f0e-4d5a-9a59-0d1f3a1b2c3d";

test("two hosts leasing at once never get overlapping blocks, and the range runs out with a clear error", async (t) => {
  if (skip) return t.skip(skip);
  const f = await controllerFixture(await pgs!.createDatabase());
  t.after(() => f.close());
  const leases = new SnatBlockLeases(f.db, f.ctx.fence, { blockSize: 64 });
  // 1024-2047 holds 16 blocks; 2 hosts × 10 concurrent requests compete for them.
  const asks = ["host-a", "host-b"].flatMap((h) =>
    Array.from({ length: 10 }, () =>
      leases.lease(h, ROUTER, "192.0.2.10", 1024, 2047).then(
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
  if (skip) return t.skip(skip);
  const f = await controllerFixture(await pgs!.createDatabase());
  t.after(() => f.close());
  const short = new SnatBlockLeases(f.db, f.ctx.fence, { ttlMs: 300 });
  const a = await short.lease("host-a", ROUTER, "192.0.2.20", 1024, 1087); // exactly one block
  assert.equal(a.start, 1024);
  await assert.rejects(short.lease("host-b", ROUTER, "192.0.2.20", 1024, 1087), /is leased/);
  // Renewing keeps it past its first expiry.
  await new Promise((r) => setTimeout(r, 200));
  const r1 = await short.renew("host-a", [a]);
  assert.equal(r1.renewed.length, 1);
  assert.ok(r1.renewed[0]!.expiresUnixMs > a.expiresUnixMs);
  await new Promise((r) => setTimeout(r, 200));
  await assert.rejects(short.lease("host-b", ROUTER, "192.0.2.20", 1024, 1087), /is leased/);
  // Not renewed: it lapses and host-b takes it over.
  await new Promise((r) => setTimeout(r, 400));
  const b = await short.lease("host-b", ROUTER, "192.0.2.20", 1024, 1087);
  assert.equal(b.start, 1024);
  const r2 = await short.renew("host-a", [a]);
  assert.deepEqual(r2.renewed, []);
  assert.equal(r2.lost.length, 1);
  assert.equal(r2.lost[0]!.start, 1024);
  // Releasing: only the holder's release counts; then the block is free at once.
  assert.equal(await short.release("host-a", [a]), 0, "host-a no longer holds it");
  assert.equal(await short.release("host-b", [b]), 1);
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
  if (skip) return t.skip(skip);
  const f = await controllerFixture(await pgs!.createDatabase());
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
