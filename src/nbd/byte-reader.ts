/**
 * Exact-length reads from a stream socket: `exact(n)` resolves with the next n bytes once they have arrived,
 * or with null when the peer closed (or the socket failed) before all of them came. One reader at a time.
 * Bytes beyond what is asked stay queued; the socket is paused while more than `highWater` bytes wait, so a
 * client that sends faster than the server serves is slowed by TCP, not buffered without bound.
 */
import type { Socket } from "node:net";

export class ByteReader {
  private chunks: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private want = 0;
  private waiter: ((b: Buffer | null) => void) | undefined;
  private paused = false;

  constructor(
    private readonly socket: Socket,
    private readonly highWater = 4 << 20,
  ) {
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("close", this.onEnd);
    socket.on("error", this.onEnd);
  }

  private readonly onData = (d: Buffer): void => {
    this.chunks.push(d);
    this.queued += d.length;
    if (this.queued > this.highWater && !this.paused && this.queued > this.want) {
      this.paused = true;
      this.socket.pause();
    }
    this.serve();
  };

  private readonly onEnd = (): void => {
    this.ended = true;
    this.serve();
  };

  /**
   * Stops reading: removes this reader's listeners and returns the bytes received and not taken, for the
   * next owner of the socket (which must listen for data itself; a socket this reader paused stays paused).
   */
  detach(): Buffer[] {
    if (this.waiter) throw new Error("internal: detach during a read");
    this.socket.off("data", this.onData);
    this.socket.off("end", this.onEnd);
    this.socket.off("close", this.onEnd);
    this.socket.off("error", this.onEnd);
    const rest = this.chunks;
    this.chunks = [];
    this.queued = 0;
    return rest;
  }

  /** Bytes received and not yet taken. */
  get buffered(): number {
    return this.queued;
  }

  /** True once the peer closed its side and every queued byte has been taken. */
  get atEnd(): boolean {
    return this.ended && this.queued === 0;
  }

  /** The next `n` bytes (a view that stays valid), or null at end of stream. */
  exact(n: number): Promise<Buffer | null> {
    if (this.waiter) throw new Error("internal: two reads at once on one connection");
    if (this.queued >= n) return Promise.resolve(this.take(n));
    if (this.ended) return Promise.resolve(null);
    this.want = n;
    if (this.paused) {
      this.paused = false;
      this.socket.resume();
    }
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  private serve(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.queued >= this.want) {
      this.waiter = undefined;
      w(this.take(this.want));
    } else if (this.ended) {
      this.waiter = undefined;
      w(null);
    }
  }

  private take(n: number): Buffer {
    this.queued -= n;
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first && first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.resumeIfLow();
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - at);
      c.copy(out, at, 0, k);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.resumeIfLow();
    return out;
  }

  private resumeIfLow(): void {
    if (this.paused && this.queued <= this.highWater) {
      this.paused = false;
      this.socket.resume();
    }
  }
}
