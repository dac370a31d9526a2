// Protobuf length-delimited fields written straight into one buffer, for framing stored encodings
// (a snapshot of 100k objects) without concatenating 100k small pieces, which cost seconds under
// load. Both the coordinator's intent snapshots and the site's topology changes are framed so.

/** Bytes a varint of `n` (an unsigned 32-bit length) takes. */
export function varintLength(n: number): number {
  let len = 1;
  while (n > 0x7f) {
    n >>>= 7;
    len++;
  }
  return len;
}

/** Bytes a length-delimited field with a one-byte tag takes: the tag, the length, the body. */
export function fieldSize(body: Uint8Array): number {
  return 1 + varintLength(body.length) + body.length;
}

/** Writes a one-byte `tag`, the length of `body` and `body` at `at`; returns the offset after it. */
export function writeField(out: Uint8Array, at: number, tag: number, body: Uint8Array): number {
  out[at++] = tag;
  let n = body.length;
  while (n > 0x7f) {
    out[at++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  out[at++] = n;
  out.set(body, at);
  return at + body.length;
}
