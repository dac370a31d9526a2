// Tags as the packet path handles them: a Tag object wraps the tag string with a stamp, so a walk
// adds each tag once without hashing (the stamp says "already added in walk N"). Per-device
// caches keyed by a number (MAC or IPv4) keep "mac:<bridge>:<mac>" from being formatted per packet.

export class Tag {
  /** The walk that last added this tag (see Walk.tag). */
  stamp = 0;
  constructor(readonly s: string) {}
}

/** Bounded: when full it starts over. */
export class TagCache {
  private readonly m = new Map<number, Tag>();

  constructor(
    private readonly make: (n: number) => string,
    readonly max = 4096,
  ) {}

  get(n: number): Tag {
    let t = this.m.get(n);
    if (t === undefined) {
      if (this.m.size >= this.max) this.m.clear();
      t = new Tag(this.make(n));
      this.m.set(n, t);
    }
    return t;
  }
}
