// An in-memory port for tests: `inject` plays the VM sending a frame, `received` holds what the
// datapath wrote to the VM. Bounded like a real device queue.
import type { PortIO } from "./datapath.js";

export class MemoryPort implements PortIO {
  readonly received: Buffer[] = [];
  private onFrames: ((frames: Buffer[]) => void) | undefined;
  private waiters: { n: number; resolve: () => void }[] = [];
  closed = false;

  constructor(
    readonly name: string,
    /** Frames kept in `received`; writes beyond it are refused (counted by the datapath). */
    readonly capacity = 10_000,
  ) {}

  start(onFrames: (frames: Buffer[]) => void): void {
    this.onFrames = onFrames;
  }

  /** The VM sends frames (one batch). */
  inject(...frames: Buffer[]): void {
    if (!this.onFrames) throw new Error(`memory port ${this.name}: not started`);
    this.onFrames(frames.map((f) => Buffer.from(f)));
  }

  send(frames: Buffer[]): number {
    if (this.closed) return 0;
    const room = Math.max(0, this.capacity - this.received.length);
    const n = Math.min(room, frames.length);
    for (let i = 0; i < n; i++) this.received.push(Buffer.from(frames[i]!));
    this.waiters = this.waiters.filter((w) => {
      if (this.received.length >= w.n) {
        w.resolve();
        return false;
      }
      return true;
    });
    return n;
  }

  /**
   * Resolves once `n` frames in total have been received, or rejects after `timeoutMs` (generous:
   * the agents' event loop shares a loaded 2-core machine in CI; a frame that arrives returns early).
   */
  waitFor(n: number, timeoutMs = 10_000): Promise<void> {
    if (this.received.length >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(`memory port ${this.name}: ${this.received.length}/${n} frames after ${timeoutMs} ms`),
          ),
        timeoutMs,
      );
      this.waiters.push({
        n,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  close(): void {
    this.closed = true;
    this.onFrames = undefined;
  }
}
