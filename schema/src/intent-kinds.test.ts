import assert from "node:assert/strict";
import { test } from "node:test";
import * as intentpb from "./gen/isthmus/v1/intent.js";
import { INTENT_KIND_KEYS, intentKindEnum, intentKindFromEnum } from "./intent-kinds.js";

test("the kind table covers every IntentObject field and every ObjectKind, both ways", () => {
  assert.deepEqual([...INTENT_KIND_KEYS].sort(), Object.keys(intentpb.IntentObject.fromPartial({})).sort());
  const enumValues = Object.values(intentpb.ObjectKind).filter(
    (v): v is intentpb.ObjectKind =>
      typeof v === "number" && v !== intentpb.ObjectKind.OBJECT_KIND_UNSPECIFIED,
  );
  assert.equal(enumValues.length, INTENT_KIND_KEYS.length);
  for (const k of INTENT_KIND_KEYS) assert.equal(intentKindFromEnum(intentKindEnum(k)), k);
  for (const e of enumValues) assert.equal(intentKindEnum(intentKindFromEnum(e)!), e);
  assert.deepEqual(
    INTENT_KIND_KEYS.map(intentKindEnum),
    [...enumValues].sort((a, b) => a - b),
    "listed in ObjectKind order",
  );
  assert.equal(intentKindFromEnum(intentpb.ObjectKind.OBJECT_KIND_UNSPECIFIED), undefined);
  assert.equal(intentKindFromEnum(99 as intentpb.ObjectKind), undefined);
});
