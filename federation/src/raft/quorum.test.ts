// Majority arithmetic against brute force: the committed index is the largest index a majority
// has reached, and an election is won/lost exactly when a majority granted/can no longer grant.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { committedIndex, quorumSize, voteResult } from "./quorum.js";

test("committedIndex is the largest index acknowledged by a majority", () => {
  fc.assert(
    fc.property(fc.array(fc.nat(50), { minLength: 1, maxLength: 7 }), (matches) => {
      const voters = matches.map((_, k) => `v${k}`);
      const got = committedIndex(voters, (id) => matches[Number(id.slice(1))]!);
      const q = quorumSize(voters.length);
      let best = 0;
      for (let i = 0; i <= 50; i++) if (matches.filter((m) => m >= i).length >= q) best = i;
      assert.equal(got, best);
    }),
  );
});

test("voteResult agrees with counting", () => {
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom<boolean | undefined>(true, false, undefined), { minLength: 1, maxLength: 7 }),
      (vs) => {
        const voters = vs.map((_, k) => `v${k}`);
        const votes = new Map<string, boolean>();
        vs.forEach((v, k) => {
          if (v !== undefined) votes.set(`v${k}`, v);
        });
        const q = quorumSize(voters.length);
        const yes = vs.filter((v) => v === true).length;
        const no = vs.filter((v) => v === false).length;
        const expected = yes >= q ? "won" : voters.length - no >= q ? "pending" : "lost";
        assert.equal(voteResult(voters, votes), expected);
      },
    ),
  );
});
