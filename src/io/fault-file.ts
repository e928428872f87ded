/**
 * Fault-injecting BlockFile: records every write, zeroRange, truncate and flush made on top of an initial
 * image, and can materialize any state a power loss could leave behind:
 *
 *   - every operation up to the last flush before the crash point is on disk;
 *   - of the writes after that flush (and before the crash point), any subset may have reached the disk
 *     (`prefix` states keep them in order, `subset` states pick other combinations, bounded);
 *   - a zeroRange (fallocate ZERO_RANGE / PUNCH_HOLE on a real file system) counts as a write of zeroes here:
 *     it may or may not have reached the disk, in any subset with the writes, and may be torn like one (a
 *     file system can carry a large punch out in several journal transactions);
 *   - the last write that reached the disk may be torn at sector (512-byte) granularity: only its first
 *     `tornSectors` sectors arrived (one tear point per write by default, or several, up to every boundary);
 *   - size changes (truncates) after the last flush are kept, in log order with the writes that reached the disk;
 *   - a clone (a copy-free copy: FICLONERANGE on a file system that shares extents), when `cloneBlockSize` is
 *     set, is a crash point like a write of the bytes it shares (held in the log as they read at the clone):
 *     it may or may not have reached the disk, in any subset with the writes, and may be torn — a file
 *     system remaps a large range extent by extent, in several transactions — at `cloneBlockSize`
 *     granularity (the harness models it as the sector, so that small clusters share too). A clone from
 *     another file (cloneFrom: a backing file) is the same crash point, with the source's bytes at the clone;
 *     every file counts as on this one's file system unless `crossFileClones` is off (then refused, as EXDEV).
 *
 * It also fails writes on demand (`failAfter`), to test how errors such as a full disk are handled.
 */
import type { BlockFile, IoPurpose } from "./block-file.js";
import { IoError } from "./block-file.js";
import { MemoryFile } from "./memory-file.js";

export const SECTOR = 512;

export type FaultOp =
  | { kind: "write"; offset: number; data: Uint8Array; purpose: IoPurpose }
  | { kind: "zero"; offset: number; length: number; purpose: IoPurpose }
  | { kind: "clone"; src: number; offset: number; data: Uint8Array; purpose: IoPurpose; from?: string }
  | { kind: "truncate"; size: number }
  | { kind: "flush" };

export interface CrashState {
  /** Number of operations issued before the crash. */
  at: number;
  /** Indices (into the log) of the unflushed writes (and zeroRanges) that reached the disk, in log order. */
  applied: number[];
  /** When set, the last applied write only reached the disk for its first `tornSectors` sectors. */
  tornSectors?: number;
}

export interface CrashStateOptions {
  /**
   * Tear points per last write: 0/false none, true or 1 the middle sector boundary, n > 1 up to n boundaries
   * spread evenly over the write, Infinity every boundary.
   */
  torn?: boolean | number;
  /** Other subsets of the unflushed writes to add, chosen by `random` (bounded by the number that exist). */
  subsets?: number;
  random?: () => number;
}

export class FaultFile implements BlockFile {
  readonly log: FaultOp[] = [];
  private readonly live: MemoryFile;
  readonly name: string;
  readonly readOnly = false;
  /** Writes (and zeroRanges, clones) fail with ENOSPC once this many more have been accepted (undefined: never). */
  failAfter?: number;
  /** The block size clones are aligned to; 0 (the default): the file cannot clone and callers copy. */
  cloneBlockSize = 0;
  /** Whether clones from other files are made (false: refused, as between two file systems). */
  crossFileClones = true;
  /** The durable image as of some log position, reused by materialize() (crash points mostly move forward). */
  private durable: { end: number; file: MemoryFile } | undefined;

  constructor(
    private readonly initial: Uint8Array = new Uint8Array(0),
    name = "fault",
  ) {
    this.live = new MemoryFile(initial, { name });
    this.name = name;
  }

  read(buf: Uint8Array, offset: number, purpose?: IoPurpose): number {
    return this.live.read(buf, offset, purpose);
  }

  write(data: Uint8Array, offset: number, purpose: IoPurpose = "other"): void {
    this.spend(`write of ${data.length} bytes at ${offset}`);
    this.live.write(data, offset, purpose);
    this.log.push({ kind: "write", offset, data: data.slice(), purpose });
  }

  /** A file system that zeroes without writing: the engine takes the path it takes on Linux files. */
  readonly zeroesWithoutWriting = true;

  zeroRange(offset: number, length: number, purpose: IoPurpose = "other"): void {
    if (length <= 0) return;
    this.spend(`zeroing of ${length} bytes at ${offset}`);
    this.live.zeroRange(offset, length, purpose);
    this.log.push({ kind: "zero", offset, length, purpose });
  }

  cloneRange(src: number, dst: number, length: number, purpose: IoPurpose = "other"): boolean {
    if (!this.canClone(src, dst, length)) return false;
    if (src < dst + length && dst < src + length) throw new IoError(`${this.name}: clone from ${src} to ${dst} overlaps itself`, "EINVAL");
    this.spend(`clone of ${length} bytes from ${src} to ${dst}`);
    const data = new Uint8Array(length);
    this.live.read(data, src);
    this.live.write(data, dst, purpose);
    this.log.push({ kind: "clone", src, offset: dst, data, purpose });
    return true;
  }

  cloneFrom(source: BlockFile, src: number, dst: number, length: number, purpose: IoPurpose = "other"): boolean {
    if (!this.crossFileClones || !this.canClone(src, dst, length)) return false;
    this.spend(`clone of ${length} bytes from ${source.name} at ${src} to ${dst}`);
    const data = new Uint8Array(length);
    source.read(data, src);
    this.live.write(data, dst, purpose);
    this.log.push({ kind: "clone", src, offset: dst, data, purpose, from: source.name });
    return true;
  }

  /** Whether clones are on; throws on ranges FICLONERANGE would refuse as unaligned. */
  private canClone(src: number, dst: number, length: number): boolean {
    const bs = this.cloneBlockSize;
    if (!bs || length <= 0) return false;
    if (src % bs || dst % bs || length % bs) throw new IoError(`${this.name}: clone of ${length} bytes from ${src} to ${dst} is not aligned to ${bs} bytes`, "EINVAL");
    return true;
  }

  private spend(what: string): void {
    if (this.failAfter === undefined) return;
    if (this.failAfter <= 0) throw new IoError(`${this.name}: ${what} failed: no space left on device`, "ENOSPC");
    this.failAfter--;
  }

  flush(): void {
    this.log.push({ kind: "flush" });
  }

  size(): number {
    return this.live.size();
  }

  truncate(size: number): void {
    this.live.truncate(size);
    this.log.push({ kind: "truncate", size });
  }

  close(): void {}

  /** The current contents (every operation applied). */
  contents(): Uint8Array {
    return this.live.contents();
  }

  /** Index just past the last flush before operation `at`. */
  lastFlushBefore(at: number): number {
    for (let i = Math.min(at, this.log.length) - 1; i >= 0; i--) if (this.log[i].kind === "flush") return i + 1;
    return 0;
  }

  /** Indices of the writes, zeroRanges and clones issued after the last flush before `at`. */
  unflushedWrites(at: number): number[] {
    const out: number[] = [];
    for (let i = this.lastFlushBefore(at); i < at; i++) if (changesData(this.log[i])) out.push(i);
    return out;
  }

  /** Log positions just after each write, zeroRange or clone: the crash points worth trying. */
  writePoints(): number[] {
    const out: number[] = [];
    this.log.forEach((op, i) => {
      if (changesData(op)) out.push(i + 1);
    });
    return out;
  }

  /**
   * Crash states at crash point `at`: every prefix of the unflushed writes (with the last one torn at the
   * chosen sector boundaries), plus up to `subsets` other combinations chosen by `random`.
   */
  crashStates(at: number, opts: CrashStateOptions = {}): CrashState[] {
    const pending = this.unflushedWrites(at);
    const tears = opts.torn === true ? 1 : opts.torn === false || opts.torn === undefined ? 0 : opts.torn;
    const states: CrashState[] = [];
    for (let k = 0; k <= pending.length; k++) {
      const applied = pending.slice(0, k);
      states.push({ at, applied });
      if (tears > 0 && k > 0) {
        const op = this.log[pending[k - 1]];
        // A clone tears at its blocks, a write at its sectors (tornSectors counts sectors either way).
        const unit = op.kind === "clone" ? Math.max(SECTOR, this.cloneBlockSize) / SECTOR : 1;
        for (const s of tearPoints(Math.ceil(opLength(op) / SECTOR / unit), tears)) states.push({ at, applied, tornSectors: s * unit });
      }
    }
    const n = pending.length;
    // Subsets that are not prefixes: 2^n - (n + 1) of them.
    const extra = Math.min(opts.subsets ?? 0, n > 1 ? (n > 40 ? Number.MAX_SAFE_INTEGER : 2 ** n - n - 1) : 0);
    if (extra > 0) {
      const rnd = opts.random ?? Math.random;
      const seen = new Set<string>();
      for (let k = 0; k <= n; k++) seen.add(pending.slice(0, k).join(","));
      let added = 0;
      for (let tries = 0; added < extra && tries < extra * 8; tries++) {
        const pick = pending.filter(() => rnd() < 0.5);
        const key = pick.join(",");
        if (seen.has(key)) continue;
        seen.add(key);
        states.push({ at, applied: pick });
        added++;
      }
    }
    return states;
  }

  /**
   * Builds the disk contents for a crash state: in a new file, or in `into` (its previous contents replaced),
   * for a caller that looks at one state at a time.
   */
  materialize(state: CrashState, into?: MemoryFile): MemoryFile {
    const durableEnd = this.lastFlushBefore(state.at);
    const durable = this.durableImage(durableEnd);
    const name = `${this.name}@crash${state.at}`;
    const f = into ?? durable.clone(name);
    if (into) into.copyFrom(durable, name);
    const last = state.applied[state.applied.length - 1];
    const applied = new Set(state.applied);
    for (let i = durableEnd; i < state.at; i++) {
      const op = this.log[i];
      if (op.kind === "truncate") {
        // A file system persists size changes with its metadata: they stay, in order.
        f.truncate(op.size);
      } else if ((op.kind === "write" || op.kind === "clone") && applied.has(i)) {
        if (i === last && state.tornSectors !== undefined) f.write(op.data.subarray(0, state.tornSectors * SECTOR), op.offset);
        else f.write(op.data, op.offset);
      } else if (op.kind === "zero" && applied.has(i)) {
        f.zeroRange(op.offset, i === last && state.tornSectors !== undefined ? Math.min(op.length, state.tornSectors * SECTOR) : op.length);
      }
    }
    return f;
  }

  /** A one-line description of a crash state, for failure reports. */
  describe(state: CrashState): string {
    const pending = this.unflushedWrites(state.at);
    const isPrefix = state.applied.every((v, i) => v === pending[i]);
    const what = (i: number) => {
      const op = this.log[i] as Extract<FaultOp, { kind: "write" | "zero" | "clone" }>;
      return `#${i} ${op.purpose} ${op.kind === "zero" ? "zeroing " : op.kind === "clone" ? `clone from ${op.from ? `${op.from} ` : ""}0x${op.src.toString(16)} ` : ""}${opLength(op)}B@0x${op.offset.toString(16)}`;
    };
    let s = `crash after op ${state.at} of ${this.log.length}: ${state.applied.length} of ${pending.length} unflushed writes reached the disk`;
    if (state.applied.length && !isPrefix) s += ` (subset: ${state.applied.join(",")})`;
    if (state.applied.length) s += `, last ${what(state.applied[state.applied.length - 1])}`;
    if (state.tornSectors !== undefined) s += ` torn after ${state.tornSectors} sector(s)`;
    return s;
  }

  /** The image with every operation before `end` applied (end: just past a flush), reusing earlier work. */
  private durableImage(end: number): MemoryFile {
    let d = this.durable;
    if (!d || d.end > end) d = { end: 0, file: new MemoryFile(this.initial, { name: `${this.name}@durable` }) };
    for (let i = d.end; i < end; i++) {
      const op = this.log[i];
      if (op.kind === "write" || op.kind === "clone") d.file.write(op.data, op.offset);
      else if (op.kind === "zero") d.file.zeroRange(op.offset, op.length);
      else if (op.kind === "truncate") d.file.truncate(op.size);
    }
    d.end = end;
    this.durable = d;
    return d.file;
  }
}

function changesData(op: FaultOp): op is Extract<FaultOp, { kind: "write" | "zero" | "clone" }> {
  return op.kind === "write" || op.kind === "zero" || op.kind === "clone";
}

/** Bytes a write, zeroRange or clone covers. */
function opLength(op: FaultOp): number {
  return op.kind === "write" || op.kind === "clone" ? op.data.length : op.kind === "zero" ? op.length : 0;
}

/** Up to `max` sector counts strictly between 0 and `sectors` (a write of one sector cannot tear). */
function tearPoints(sectors: number, max: number): number[] {
  if (sectors <= 1) return [];
  const inner = sectors - 1;
  if (max >= inner) return Array.from({ length: inner }, (_, i) => i + 1);
  if (max === 1) return [Math.max(1, Math.floor(sectors / 2))];
  const out = new Set<number>();
  for (let i = 0; i < max; i++) out.add(1 + Math.round((i * (inner - 1)) / (max - 1)));
  return [...out];
}
