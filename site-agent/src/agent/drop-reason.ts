// Drop reasons become metric labels, so they must come from a small set: the simulation's detailed
// texts ("dropped by rule <id> in chain <id>") are reduced to their fixed words, and the number of
// distinct reasons a datapath counts is bounded.

export const MAX_DROP_REASONS = 128;

/** "dropped by rule 5e1… in chain 77a…" → "dropped_by_rule_in_chain". */
export function dropCategory(reason: string): string {
  const words = reason
    .replace(/\([^)]*\)/g, " ")
    .split(/[\s:,]+/)
    .filter((w) => w !== "" && !/\d/.test(w) && !/^[0-9a-f-]{8,}$/i.test(w))
    .map((w) => w.toLowerCase().replace(/[^a-z_]/g, ""))
    .filter((w) => w !== "");
  const cat = words.join("_").slice(0, 48);
  return cat === "" ? "other" : cat;
}

/** Adds `n` drops of `reason` to a datapath's counters, folding new categories past the bound into "other". */
export function countDropIn(drops: Map<string, number>, reason: string, n = 1): void {
  let cat = dropCategory(reason);
  if (!drops.has(cat) && drops.size >= MAX_DROP_REASONS) cat = "other";
  drops.set(cat, (drops.get(cat) ?? 0) + n);
}
