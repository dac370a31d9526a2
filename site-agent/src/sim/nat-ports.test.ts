import assert from "node:assert/strict";
import { test } from "node:test";
import { type NatBlock, type NatLeaseSource, NatPortAllocator } from "./nat-ports.js";
import { natKey } from "./nat-table.js";
import { SimState } from "./sim-state.js";

const ROUTER = "router-1";
const NAT_IP = (192 << 24) | (0 << 16) | (2 << 8) | 50;

/** A lease source handing out consecutive 64-port blocks that a test can take back. */
function source() {
  let next = 1024;
  const released: NatBlock[] = [];
  let lost: ((b: NatBlock) => void) | undefined;
  const src: NatLeaseSource = {
    lease: (deviceId, ip) => {
      const b = { deviceId, ip, start: next, size: 64 };
      next += 64;
      return b;
    },
    release: (b) => released.push(b),
    onLost: (l) => {
      lost = l;
    },
  };
  return { src, released, lose: (b: NatBlock) => lost!(b) };
}

test("a lost block is withdrawn: no port of it is handed out again", () => {
  const s = source();
  const alloc = new NatPortAllocator(s.src);
  const first = alloc.allocate(ROUTER, NAT_IP, 1024, 65535, 0, 0);
  assert.ok(first >= 1024 && first < 1088);
  s.lose(alloc.heldBlocks()[0]!);
  assert.deepEqual(alloc.heldBlocks(), []);
  assert.equal(alloc.takeWithdrawn().length, 1);
  assert.equal(alloc.takeWithdrawn().length, 0, "each withdrawn block is reported once");
  for (let i = 0; i < 100; i++) {
    const p = alloc.allocate(ROUTER, NAT_IP, 1024, 65535, i, 0);
    assert.ok(p >= 1088, `port ${p} is not from the lost block`);
  }
});

test("a block with no port in use for natBlockIdleMs goes back to the site; a busy one stays", () => {
  const s = source();
  const alloc = new NatPortAllocator(s.src);
  const a = alloc.allocate(ROUTER, NAT_IP, 1024, 1087, 0, 0);
  const b = alloc.allocate(ROUTER, NAT_IP, 1088, 1151, 0, 0);
  assert.equal(alloc.heldBlocks().length, 2);
  alloc.free(ROUTER, NAT_IP, a, 1_000);
  assert.equal(alloc.releaseIdle(1_000 + 59_999, 60_000), 0, "not idle long enough yet");
  assert.equal(alloc.releaseIdle(1_000 + 60_000, 60_000), 1);
  assert.deepEqual(
    s.released.map((x) => x.start),
    [1024],
  );
  assert.deepEqual(
    alloc.heldBlocks().map((x) => x.start),
    [1088],
    "the block with port in use is kept",
  );
  assert.ok(b >= 1088);
  // The released block no longer counts against maxBlocks: a one-block allocator can lease again.
  const one = new NatPortAllocator(source().src, 1);
  const p = one.allocate(ROUTER, NAT_IP, 1024, 65535, 0, 0);
  one.free(ROUTER, NAT_IP, p, 0);
  one.releaseIdle(10, 1);
  assert.ok(one.allocate(ROUTER, NAT_IP, 1024, 65535, 0, 10) >= 1024);
});

test("SimState.expire drops the SNAT bindings on a lost block and returns their tags", () => {
  const s = source();
  const state = new SimState(s.src);
  const lostPort = state.natPorts.allocate(ROUTER, NAT_IP, 1024, 1087, 0, 0);
  const keptPort = state.natPorts.allocate(ROUTER, NAT_IP, 1088, 1151, 0, 0);
  const bind = (origPort: number, natPort: number) => {
    const key = natKey("snat", ROUTER, 6, 0x0a000005, origPort, 0x08080808, 443);
    state.nat.put({
      kind: "snat",
      key,
      reverseKey: natKey("rsnat", ROUTER, 6, 0x08080808, 443, NAT_IP, natPort),
      deviceId: ROUTER,
      origIp: 0x0a000005,
      origPort,
      natIp: NAT_IP,
      natPort,
      expiresAt: 1_000_000,
    });
    return key;
  };
  const lostKey = bind(40000, lostPort);
  const keptKey = bind(40001, keptPort);
  s.lose(state.natPorts.heldBlocks().find((b) => b.start === 1024)!);
  const tags = state.expire(1);
  assert.ok(
    tags.some((t) => t.includes(lostKey)),
    `tags ${tags.join(",")} name the dropped binding`,
  );
  assert.equal(state.nat.lookupForward(lostKey, 1), undefined);
  assert.ok(state.nat.lookupForward(keptKey, 1), "a binding on a block still held stays");
  assert.equal(state.nat.size, 1);
});
