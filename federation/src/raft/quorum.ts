// Majority arithmetic over a voter set: the commit index a quorum has acknowledged and the outcome
// of an election. Kept separate so joint configurations could combine two of these later.

export type VoteResult = "pending" | "lost" | "won";

/** Smallest number of voters that forms a majority. */
export function quorumSize(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

/**
 * The largest index that a majority of `voters` has acknowledged, given each voter's match index.
 * An empty voter set commits nothing.
 */
export function committedIndex(voters: readonly string[], matchOf: (id: string) => number): number {
  if (voters.length === 0) return 0;
  const matches = voters.map(matchOf).sort((a, b) => b - a);
  return matches[quorumSize(voters.length) - 1]!;
}

/** Election outcome so far, given granted/rejected votes (missing ids have not answered). */
export function voteResult(voters: readonly string[], votes: ReadonlyMap<string, boolean>): VoteResult {
  if (voters.length === 0) return "won";
  let granted = 0;
  let rejected = 0;
  for (const id of voters) {
    const v = votes.get(id);
    if (v === true) granted++;
    else if (v === false) rejected++;
  }
  const q = quorumSize(voters.length);
  if (granted >= q) return "won";
  if (voters.length - rejected >= q) return "pending";
  return "lost";
}
