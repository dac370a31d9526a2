// Puts the in-memory intent index back the way it was before a change whose transaction failed,
// so memory never runs ahead of the database.
import type { intentpb } from "@isthmus/schema";
import { type IntentIndex, kindOfObjectKind, unwrapIntentObject } from "./translate/index.js";

export function undoIntentChange(
  index: IntentIndex,
  change: Pick<intentpb.IntentChange, "upserts" | "deletes">,
  prior: readonly intentpb.IntentObject[],
): void {
  const before = new Map<string, intentpb.IntentObject>();
  for (const p of prior) {
    const k = unwrapIntentObject(p);
    before.set(`${k.kind}/${k.id}`, p);
  }
  const touched = new Map<string, { kind: string; id: string }>();
  for (const o of change.upserts) {
    const k = unwrapIntentObject(o);
    touched.set(`${k.kind}/${k.id}`, k);
  }
  for (const r of change.deletes) {
    const kind = kindOfObjectKind(r.kind);
    if (kind) touched.set(`${kind}/${r.id}`, { kind, id: r.id });
  }
  for (const [key, { kind, id }] of touched) {
    const old = before.get(key);
    if (old) {
      const k = unwrapIntentObject(old);
      index.put(k.kind, k.id, k.value as never);
    } else {
      index.remove(kind as never, id);
    }
  }
}
