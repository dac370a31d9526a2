// Per-device caches of tag strings keyed by a number (MAC or IPv4), so the packet path does not
// format "mac:<bridge>:<mac>" for every packet. Bounded: when full it starts over.

export class TagCache {
  private readonly m = new Map<number, string>();

  constructor(
    private readonly make: (n: number) => string,
    readonly max = 4096,
  ) {}

  get(n: number): string {
    let s = this.m.get(n);
    if (s === undefined) {
      if (this.m.size >= this.max) this.m.clear();
      s = this.make(n);
      this.m.set(n, s);
    }
    return s;
  }
}
