// Key masks shared per distinct value: most flows of a host depend on the same few field sets, so
// the miss path looks a mask up instead of building an 80-byte buffer per new flow. The buffers
// handed out are shared and must never be written (the flow table copies a mask into its bucket).
import { type FlowField, KEY, maskFromFields } from "./flow-key.js";

const FIELDS = Object.keys(KEY) as FlowField[];
const BIT_OF = Object.fromEntries(FIELDS.map((f, i) => [f, 1 << i])) as Record<FlowField, number>;

/** Distinct (field set, prefix length) masks kept by default; a handful is typical per host. */
export const DEFAULT_KEY_MASK_CACHE_LIMIT = 1024;

export class KeyMaskCache {
  private readonly masks = new Map<number, Buffer>();

  constructor(readonly limit = DEFAULT_KEY_MASK_CACHE_LIMIT) {
    if (!(Number.isInteger(limit) && limit > 0))
      throw new RangeError(`KeyMaskCache: limit must be a positive integer, got ${limit}`);
  }

  get size(): number {
    return this.masks.size;
  }

  /**
   * The mask `maskFromFields(fields, ipDstBits)` would build, shared with every caller asking for
   * the same value. `extra` are fields added to `fields` (the handler's inPort/tunnelKey).
   */
  get(fields: Iterable<FlowField>, ipDstBits = 128, extra: readonly FlowField[] = []): Buffer {
    let bits = 0;
    for (const f of fields) bits |= BIT_OF[f];
    for (const f of extra) bits |= BIT_OF[f];
    // Prefix lengths of 32 and more keep the whole field, as in maskFromFields.
    const prefix = Number.isInteger(ipDstBits) && ipDstBits > 0 && ipDstBits < 32 ? ipDstBits : 32;
    if (prefix === 32 && !(Number.isInteger(ipDstBits) && ipDstBits > 0)) {
      maskFromFields([], ipDstBits); // throws the same error the uncached build would
    }
    const id = bits * 64 + prefix; // 19 field bits and a 6-bit prefix: exact in a double
    let mask = this.masks.get(id);
    if (mask === undefined) {
      if (this.masks.size >= this.limit) this.masks.clear();
      const list = FIELDS.filter((f) => (bits & BIT_OF[f]) !== 0);
      mask = maskFromFields(list, prefix);
      this.masks.set(id, mask);
    }
    return mask;
  }
}
