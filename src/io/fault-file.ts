/**
 * Fault-injecting BlockFile: records every write, truncate and flush made on top of an initial image, and can
 * materialize any state a power loss could leave behind:
 *
 *   - every operation up to the last flush before the crash point is on disk;
 *   - of the writes after that flush (and before the crash point), any subset may have reached the disk
 *     (`prefix` states keep them in order, `subset` states pick any combination, bounded);
 *   - the last write that reached the disk may be torn at sector (512-byte) granularity.
 *
 * It also fails writes on demand (`failAfter`), to test how errors such as a full disk are handled.
 */
import type { BlockFile, IoPurpose } from "./block-file.js";
import { IoError } from "./block-file.js";
import { MemoryFile } from "./memory-file.js";

export type FaultOp =
  | { kind: "write"; offset: number; data: Uint8Array; purpose: IoPurpose }
  | { kind: "truncate"; size: number }
  | { kind: "flush" };

export interface CrashState {
  /** Number of operations issued before the crash. */
  at: number;
  /** Indices (into the log) of the unflushed writes that reached the disk. */
  applied: number[];
  /** When set, the last applied write only reached the disk for its first `tornSectors` sectors. */
  tornSectors?: number;
}

export class FaultFile implements BlockFile {
  readonly log: FaultOp[] = [];
  private readonly live: MemoryFile;
  readonly name: string;
  readonly readOnly = false;
  /** Writes fail with ENOSPC once this many more have been accepted (undefined: never). */
  failAfter?: number;

  constructor(private readonly initial: Uint8Array = new Uint8Array(0), name = "fault") {
    this.live = new MemoryFile(initial, { name });
    this.name = name;
  }

  read(buf: Uint8Array, offset: number, purpose?: IoPurpose): number {
    return this.live.read(buf, offset, purpose);
  }

  write(data: Uint8Array, offset: number, purpose: IoPurpose = "other"): void {
    if (this.failAfter !== undefined) {
      if (this.failAfter <= 0) throw new IoError(`${this.name}: write of ${data.length} bytes at ${offset} failed: no space left on device`, "ENOSPC");
      this.failAfter--;
    }
    this.live.write(data, offset, purpose);
    this.log.push({ kind: "write", offset, data: data.slice(), purpose });
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

  /** Indices of the writes issued after the last flush before `at`. */
  unflushedWrites(at: number): number[] {
    const out: number[] = [];
    for (let i = this.lastFlushBefore(at); i < at; i++) if (this.log[i].kind === "write") out.push(i);
    return out;
  }

  /**
   * Crash states at crash point `at`: every prefix of the unflushed writes (with the last one torn once per
   * sector boundary when `torn`), plus up to `subsets` other combinations chosen by `random`.
   */
  crashStates(at: number, opts: { torn?: boolean; subsets?: number; random?: () => number } = {}): CrashState[] {
    const pending = this.unflushedWrites(at);
    const states: CrashState[] = [];
    for (let k = 0; k <= pending.length; k++) {
      states.push({ at, applied: pending.slice(0, k) });
      if (opts.torn && k > 0) {
        const op = this.log[pending[k - 1]] as { data: Uint8Array };
        const sectors = Math.ceil(op.data.length / 512);
        if (sectors > 1) states.push({ at, applied: pending.slice(0, k), tornSectors: Math.max(1, Math.floor(sectors / 2)) });
      }
    }
    const extra = Math.min(opts.subsets ?? 0, pending.length > 1 ? 2 ** pending.length - pending.length - 1 : 0);
    const rnd = opts.random ?? Math.random;
    const seen = new Set(states.map((s) => s.applied.join(",")));
    for (let tries = 0; states.length < pending.length + 1 + extra && tries < extra * 8; tries++) {
      const pick = pending.filter(() => rnd() < 0.5);
      const key = pick.join(",");
      if (seen.has(key)) continue;
      seen.add(key);
      states.push({ at, applied: pick });
    }
    return states;
  }

  /** Builds the disk contents for a crash state. */
  materialize(state: CrashState): MemoryFile {
    const f = new MemoryFile(this.initial, { name: `${this.name}@crash${state.at}` });
    const durableEnd = this.lastFlushBefore(state.at);
    for (let i = 0; i < durableEnd; i++) apply(f, this.log[i]);
    const last = state.applied[state.applied.length - 1];
    for (const i of state.applied) {
      const op = this.log[i];
      if (i === last && state.tornSectors !== undefined && op.kind === "write") {
        f.write(op.data.subarray(0, state.tornSectors * 512), op.offset);
      } else {
        apply(f, op);
      }
    }
    // Truncates after the last flush: a file system persists size changes with the metadata; keep them in order.
    for (let i = durableEnd; i < state.at; i++) if (this.log[i].kind === "truncate") apply(f, this.log[i]);
    return f;
  }
}

function apply(f: MemoryFile, op: FaultOp): void {
  if (op.kind === "write") f.write(op.data, op.offset);
  else if (op.kind === "truncate") f.truncate(op.size);
}
