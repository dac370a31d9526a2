// Hand-built Watch events for tests: what the generated encoders cannot write (a field no message
// of this version has, as a newer controller would send).
import { BinaryWriter, type topologypb } from "@isthmus/schema";

/**
 * A rule object (at `position`, matching UDP) whose condition also carries field `field` (varint
 * 1), which no Condition of this version has.
 */
export function ruleWithUnknownField(
  id: string,
  chainId: string,
  action: topologypb.RuleAction,
  field: number,
  position = 1,
): Buffer {
  const w = new BinaryWriter();
  w.uint32(10).string(id).uint32(18).string(chainId).uint32(24).uint32(position).uint32(40).int32(action);
  const condition = new BinaryWriter()
    .uint32(136)
    .uint32(17)
    .uint32(field << 3)
    .uint32(1)
    .finish();
  w.uint32(34).bytes(condition);
  // TopologyObject { rule = 7 }
  return Buffer.from(new BinaryWriter().uint32(58).bytes(w.finish()).finish());
}

/** An event whose objects (field 2 of a snapshot or an upsert list of a change) are these encoded objects. */
export function eventOf(kind: "snapshot" | "change", objects: Buffer[]): Buffer {
  const body = new BinaryWriter().uint32(8).uint64(3);
  for (const o of objects) body.uint32(18).bytes(o);
  return Buffer.from(
    new BinaryWriter()
      .uint32(kind === "snapshot" ? 10 : 18)
      .bytes(body.finish())
      .finish(),
  );
}
