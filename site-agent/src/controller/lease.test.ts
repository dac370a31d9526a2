import assert from "node:assert/strict";
import { test } from "node:test";
import { silentLogger } from "@isthmus/schema";
import { Database } from "./db/database.js";
import { migrate } from "./db/migrations.js";
import { postgresForTests } from "./db/postgres-for-tests.js";
import { FencedOut, leaseFence } from "./fence.js";
import { ControllerLease } from "./lease.js";

const pg = postgresForTests();

const OPTS = { ttlMs: 1_200, renewEveryMs: 300 };

test("two controllers racing for the lease: exactly one wins; the other takes over when it dies", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const url = await pg.createDatabase();
  const dbs = [new Database({ url, log: silentLogger() }), new Database({ url, log: silentLogger() })];
  t.after(async () => {
    for (const d of dbs) await d.close();
  });
  await Promise.all(dbs.map((d) => migrate(d)));
  const leases = dbs.map((d, i) => new ControllerLease(d, { holder: `ctl-${i}`, ...OPTS }, silentLogger()));
  // Race repeatedly: never two holders at once.
  for (let round = 0; round < 5; round++) {
    const won = await Promise.all(leases.map((l) => l.attempt()));
    assert.equal(won.filter(Boolean).length, 1, `round ${round}: exactly one active`);
  }
  for (const l of leases) l.start();
  t.after(async () => {
    for (const l of leases) await l.stop(false);
  });
  const activeIdx = leases.findIndex((l) => l.active);
  assert.ok(activeIdx >= 0);
  const standby = leases[1 - activeIdx]!;
  const oldToken = leases[activeIdx]!.currentToken()!;
  assert.equal(standby.active, false);

  // The active one dies without releasing (crash): the standby takes over after expiry.
  const died = Date.now();
  await leases[activeIdx]!.stop(false);
  const deadline = died + 10_000;
  while (!standby.active && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const tookMs = Date.now() - died;
  assert.ok(standby.active, "standby took over");
  assert.ok(tookMs < OPTS.ttlMs + 2 * OPTS.renewEveryMs + 1000, `take-over took ${tookMs} ms`);
  assert.ok(standby.currentToken()! > oldToken, "new fencing token");

  // The deposed holder's fence refuses writes.
  const deposed = leaseFence(`ctl-${activeIdx}`, () => oldToken);
  await assert.rejects(
    dbs[activeIdx]!.tx("deposed-write", (tx) => deposed.check(tx)),
    (err: unknown) => err instanceof FencedOut && /lost the lease/.test((err as Error).message),
  );
});

test("a clean stop releases the lease so the standby takes over at once", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const url = await pg.createDatabase();
  const a = new Database({ url, log: silentLogger() });
  const b = new Database({ url, log: silentLogger() });
  t.after(async () => {
    await a.close();
    await b.close();
  });
  await migrate(a);
  const la = new ControllerLease(a, { holder: "a", ttlMs: 60_000, renewEveryMs: 1_000 }, silentLogger());
  const lb = new ControllerLease(b, { holder: "b", ttlMs: 60_000, renewEveryMs: 1_000 }, silentLogger());
  assert.equal(await la.attempt(), true);
  assert.equal(await lb.attempt(), false);
  await la.stop(true);
  assert.equal(await lb.attempt(), true, "released lease is taken without waiting for the 60 s expiry");
  await lb.stop(false);
});

test("a lease that lapsed only locally (renewal late, nobody took it) resumes with the same token", async (t) => {
  if (pg.skip) return t.skip(pg.skip);
  const url = await pg.createDatabase();
  const a = new Database({ url, log: silentLogger() });
  const b = new Database({ url, log: silentLogger() });
  t.after(async () => {
    await a.close();
    await b.close();
  });
  await migrate(a);
  // Long enough that a renewal round trip on a loaded machine stays well inside it.
  const opts = { ttlMs: 2_000, renewEveryMs: 500 };
  const la = new ControllerLease(a, { holder: "a", ...opts }, silentLogger());
  const lb = new ControllerLease(b, { holder: "b", ...opts }, silentLogger());
  const seen: { active: boolean; token: number | undefined; resumed: boolean }[] = [];
  la.onChange((s) => seen.push({ active: s.active, token: s.token, resumed: s.resumed }));
  assert.equal(await la.attempt(), true);
  const token = la.currentToken()!;
  // No renewal for longer than the TTL, as when the event loop stalls.
  await new Promise((r) => setTimeout(r, opts.ttlMs + 100));
  assert.equal(la.active, false, "the local belief ends with the grant");
  assert.equal(await la.attempt(), true, "nobody took it: renewed");
  assert.equal(la.currentToken(), token, "same token: nothing else can have written");
  assert.deepEqual(seen.slice(0, 3), [
    { active: true, token, resumed: false },
    { active: false, token: undefined, resumed: false },
    { active: true, token, resumed: true },
  ]);

  // A write after a lapse renews first (the fence asks tokenNow) and goes ahead with the token.
  await new Promise((r) => setTimeout(r, opts.ttlMs + 100));
  assert.equal(await la.tokenNow(), token);
  assert.equal(la.active, true);

  // Lapsed again, and this time the other replica takes it first: no resume, a new token.
  await new Promise((r) => setTimeout(r, opts.ttlMs + 100));
  assert.equal(await lb.attempt(), true);
  assert.ok(lb.currentToken()! > token);
  assert.equal(await la.attempt(), false, "taken over: the old token is not renewed");
  assert.equal(la.active, false);
  assert.equal(await la.tokenNow(), undefined, "nothing to resume once another replica holds it");
  await la.stop(false);
  await lb.stop(false);
});
