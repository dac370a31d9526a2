// A BPF map pinned in bpffs, opened through the native bpfmap addon (site-agent/native/bpfmap.c):
// one bpf() syscall per operation, no helper processes. Keys and values are raw Buffers of the
// map's fixed sizes; flow-map-codec.ts gives them meaning.
import { nativeAddon } from "../native-addon.js";

interface BpfMapAddon {
  objGet(path: string): number;
  update(fd: number, key: Buffer, value: Buffer, flags: number): void;
  lookup(fd: number, key: Buffer, out: Buffer): boolean;
  remove(fd: number, key: Buffer): boolean;
  nextKey(fd: number, key: Buffer | null, out: Buffer): boolean;
  updateBatch(fd: number, keys: Buffer, values: Buffer, count: number, flags: number): number;
  lookupBatch(
    fd: number,
    inBatch: Buffer | null,
    outBatch: Buffer,
    keys: Buffer,
    values: Buffer,
    count: number,
  ): { count: number; done: boolean };
  close(fd: number): void;
}

const ADDON = nativeAddon<BpfMapAddon>("isthmus_bpfmap.node", "BPF map access");

/** BPF_ANY / BPF_NOEXIST / BPF_EXIST from linux/bpf.h. */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

export function bpfMapAddonAvailable(): boolean {
  return ADDON.available();
}

function load(): BpfMapAddon {
  return ADDON.load();
}

export class BpfMap {
  private fd: number | undefined;

  private constructor(
    readonly path: string,
    readonly keySize: number,
    readonly valueSize: number,
    fd: number,
  ) {
    this.fd = fd;
  }

  /** Opens a map pinned at `path` (BPF_OBJ_GET). The sizes must match the map's definition. */
  static openPinned(path: string, keySize: number, valueSize: number): BpfMap {
    return new BpfMap(path, keySize, valueSize, load().objGet(path));
  }

  /** The map's fd, for readers that poll or mmap it (the upcall ring); closed with the map. */
  get descriptor(): number {
    return this.handle();
  }

  private handle(): number {
    if (this.fd === undefined) throw new Error(`bpf map ${this.path}: closed`);
    return this.fd;
  }

  private check(buf: Buffer, size: number, what: string): void {
    if (buf.length !== size)
      throw new Error(`bpf map ${this.path}: ${what} is ${buf.length} bytes, want ${size}`);
  }

  update(key: Buffer, value: Buffer, flags = BPF_ANY): void {
    this.check(key, this.keySize, "key");
    this.check(value, this.valueSize, "value");
    load().update(this.handle(), key, value, flags);
  }

  lookup(key: Buffer): Buffer | undefined {
    this.check(key, this.keySize, "key");
    const out = Buffer.alloc(this.valueSize);
    return load().lookup(this.handle(), key, out) ? out : undefined;
  }

  /** Returns whether an entry was removed. */
  delete(key: Buffer): boolean {
    this.check(key, this.keySize, "key");
    return load().remove(this.handle(), key);
  }

  /** Writes many entries in one syscall (BPF_MAP_UPDATE_BATCH); returns how many were written. */
  updateBatch(entries: { key: Buffer; value: Buffer }[], flags = BPF_ANY): number {
    if (entries.length === 0) return 0;
    const keys = Buffer.alloc(entries.length * this.keySize);
    const values = Buffer.alloc(entries.length * this.valueSize);
    entries.forEach((e, i) => {
      this.check(e.key, this.keySize, "key");
      this.check(e.value, this.valueSize, "value");
      e.key.copy(keys, i * this.keySize);
      e.value.copy(values, i * this.valueSize);
    });
    return load().updateBatch(this.handle(), keys, values, entries.length, flags);
  }

  /**
   * Reads up to `keys.length / keySize` entries in one syscall (BPF_MAP_LOOKUP_BATCH), starting at
   * `from` (null: the beginning; else a previous call's `next`); `next` (8 bytes) receives where to
   * go on. `done` is true when the walk reached the end (the last entries may come with it).
   */
  lookupBatch(
    from: Buffer | null,
    next: Buffer,
    keys: Buffer,
    values: Buffer,
  ): { count: number; done: boolean } {
    const count = Math.floor(keys.length / this.keySize);
    if (count < 1 || values.length < count * this.valueSize) {
      throw new Error(`bpf map ${this.path}: batch buffers hold no whole entry or disagree in count`);
    }
    return load().lookupBatch(this.handle(), from, next, keys, values, count);
  }

  /** All keys, at most `limit` (a map may change while it is walked; entries can be missed). */
  keys(limit = 1 << 20): Buffer[] {
    const out: Buffer[] = [];
    let prev: Buffer | null = null;
    while (out.length < limit) {
      const next = Buffer.alloc(this.keySize);
      if (!load().nextKey(this.handle(), prev, next)) break;
      out.push(next);
      prev = next;
    }
    return out;
  }

  close(): void {
    if (this.fd === undefined) return;
    load().close(this.fd);
    this.fd = undefined;
  }
}
