/**
 * Accounting BlockFile wrapper: counts operations, bytes and time per I/O purpose, so the cost of each guest
 * request can be broken down (guest data, COW, L2, refcounts, flushes...).
 *
 * A zeroRange counts as one write of its purpose: of no bytes where the file zeroes without writing
 * (fallocate, a hole), of its length where it writes the zeroes.
 */
import type { BlockFile, FileExtent, IoPurpose } from "./block-file.js";
import type { CostBreakdown, PurposeCost } from "./purpose.js";

const now = (): bigint => process.hrtime.bigint();

export class AccountingFile implements BlockFile {
  private costs: CostBreakdown = {};

  /** The file underneath (Qcow2Image.open puts a staging layer here while it opens the image). */
  constructor(public inner: BlockFile) {}

  get name(): string {
    return this.inner.name;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  private entry(purpose: IoPurpose): PurposeCost {
    let c = this.costs[purpose];
    if (!c) {
      c = { reads: 0, readBytes: 0, writes: 0, writeBytes: 0, flushes: 0, timeNs: 0, flushNs: 0 };
      this.costs[purpose] = c;
    }
    return c;
  }

  read(buf: Uint8Array, offset: number, purpose: IoPurpose = "other"): number {
    const t = now();
    const n = this.inner.read(buf, offset, purpose);
    const c = this.entry(purpose);
    c.reads++;
    c.readBytes += buf.length;
    c.timeNs += Number(now() - t);
    return n;
  }

  write(data: Uint8Array, offset: number, purpose: IoPurpose = "other"): void {
    const t = now();
    this.inner.write(data, offset, purpose);
    const c = this.entry(purpose);
    c.writes++;
    c.writeBytes += data.length;
    c.timeNs += Number(now() - t);
  }

  flush(purpose: IoPurpose = "other"): void {
    const t = now();
    this.inner.flush(purpose);
    const c = this.entry(purpose);
    const ns = Number(now() - t);
    c.flushes++;
    c.timeNs += ns;
    c.flushNs += ns;
  }

  size(): number {
    return this.inner.size();
  }

  get zeroesWithoutWriting(): boolean {
    return this.inner.zeroesWithoutWriting;
  }

  zeroRange(offset: number, length: number, purpose: IoPurpose = "other", unmap?: boolean): void {
    const t = now();
    this.inner.zeroRange(offset, length, purpose, unmap);
    // Asked after the call: a file that found out during it that it cannot zero without writing wrote zeroes.
    const written = this.inner.zeroesWithoutWriting ? 0 : length;
    const c = this.entry(purpose);
    c.writes++;
    c.writeBytes += written;
    c.timeNs += Number(now() - t);
  }

  extentAt(offset: number, length: number): FileExtent | undefined {
    return this.inner.extentAt?.(offset, length);
  }

  allocatedSize(): number | undefined {
    return this.inner.allocatedSize?.();
  }

  get cloneBlockSize(): number {
    return this.inner.cloneBlockSize ?? 0;
  }

  /** A clone counts as a clone of its purpose: no write, no bytes written (cloneBytes: what it shared). */
  cloneRange(src: number, dst: number, length: number, purpose: IoPurpose = "other"): boolean {
    if (!this.inner.cloneRange) return false;
    const t = now();
    return this.counted(this.inner.cloneRange(src, dst, length, purpose), t, length, purpose);
  }

  /** Counted as cloneRange. */
  cloneFrom(source: BlockFile, src: number, dst: number, length: number, purpose: IoPurpose = "other"): boolean {
    if (!this.inner.cloneFrom) return false;
    const t = now();
    return this.counted(this.inner.cloneFrom(source, src, dst, length, purpose), t, length, purpose);
  }

  /** Records a clone that was made (`done`) of `length` bytes, begun at `t`; returns `done`. */
  private counted(done: boolean, t: bigint, length: number, purpose: IoPurpose): boolean {
    if (!done) return false;
    const c = this.entry(purpose);
    c.clones = (c.clones ?? 0) + 1;
    c.cloneBytes = (c.cloneBytes ?? 0) + length;
    c.timeNs += Number(now() - t);
    return true;
  }

  /** The file underneath's: reading through this wrapper changes no byte. */
  get cloneHandle(): number | undefined {
    return this.inner.cloneHandle;
  }

  /** Counted under "growth": one write of the size change, whatever its direction. */
  truncate(size: number): void {
    const t = now();
    const before = this.inner.size();
    this.inner.truncate(size);
    const c = this.entry("growth");
    c.writes++;
    c.writeBytes += Math.abs(size - before);
    c.timeNs += Number(now() - t);
  }

  close(): void {
    this.inner.close();
  }

  /** Counters accumulated since the last reset (a deep copy). */
  snapshot(): CostBreakdown {
    return structuredClone(this.costs);
  }

  reset(): void {
    this.costs = {};
  }
}

/** Difference of two breakdowns (after - before), for the cost of one request. */
export function diffCosts(after: CostBreakdown, before: CostBreakdown): CostBreakdown {
  const out: CostBreakdown = {};
  for (const [k, a] of Object.entries(after) as [IoPurpose, PurposeCost][]) {
    const b = before[k];
    const d: PurposeCost = {
      reads: a.reads - (b?.reads ?? 0),
      readBytes: a.readBytes - (b?.readBytes ?? 0),
      writes: a.writes - (b?.writes ?? 0),
      writeBytes: a.writeBytes - (b?.writeBytes ?? 0),
      flushes: a.flushes - (b?.flushes ?? 0),
      timeNs: a.timeNs - (b?.timeNs ?? 0),
      flushNs: (a.flushNs ?? 0) - (b?.flushNs ?? 0),
    };
    const clones = (a.clones ?? 0) - (b?.clones ?? 0);
    if (clones) {
      d.clones = clones;
      d.cloneBytes = (a.cloneBytes ?? 0) - (b?.cloneBytes ?? 0);
    }
    if (d.reads || d.writes || d.flushes || clones) out[k] = d;
  }
  return out;
}
