// A bounded ring of the latest latency samples (milliseconds), with a running count so a reader
// can take exactly the samples recorded after a mark (a benchmark's new flows).

export class LatencyRing {
  /** Preallocated: recording a sample (one per new flow, per stage) allocates nothing. */
  private readonly samples: Float64Array;
  private filled = 0;
  private next = 0;
  /** Samples ever recorded (older ones beyond `capacity` are overwritten). */
  total = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new Error(`latency ring: capacity ${capacity} must be an integer ≥ 1`);
    }
    this.samples = new Float64Array(capacity);
  }

  record(ms: number): void {
    this.samples[this.next] = ms;
    if (this.filled < this.capacity) this.filled++;
    this.next = (this.next + 1) % this.capacity;
    this.total++;
  }

  /** The samples recorded since `total` was `mark` (at most `capacity`), oldest first. */
  since(mark = 0): number[] {
    const n = Math.min(this.total - mark, this.filled);
    const out: number[] = [];
    for (let i = n; i > 0; i--) {
      out.push(this.samples[(this.next - i + this.capacity) % this.capacity]!);
    }
    return out;
  }
}
