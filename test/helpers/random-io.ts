/**
 * Random I/O against an image and a plain byte array (the model) side by side: fast-check generators of
 * operation lists, and `ModelledImage`, which applies one operation to both and checks every read.
 * Property tests decide the geometry, the open options and what to check beyond the model.
 */
import fc from "fast-check";
import { expect } from "vitest";
import { SnapshotError } from "../../src/engine/errors.js";
import type { Qcow2Image } from "../../src/open/qcow2.js";
import { MemoryFile } from "../../src/io/memory-file.js";

export type IoOp =
  | { kind: "write"; off: number; len: number; seed: number }
  | { kind: "zero"; off: number; len: number; unmap: boolean }
  | { kind: "discard"; off: number; len: number }
  /** A snapshot that saves `vmState` bytes of VM state (0: none). */
  | { kind: "snap"; vmState: number }
  | { kind: "apply"; pick: number }
  | { kind: "delete"; pick: number }
  | { kind: "reopen" }
  | { kind: "read"; off: number; len: number };

export interface IoOpMix {
  /** Longest range of a write, zero, discard or read, in bytes (cut at the end of the disk). */
  maxLength: number;
  /** Most operations in one list (at least 5). */
  maxOps: number;
  /** Relative weight of each kind of operation. */
  weights: Record<IoOp["kind"], number>;
  /** Size of the VM state a snapshot saves (default: none). */
  vmState?: fc.Arbitrary<number>;
}

/** Lists of operations on a disk of `size` bytes. */
export function ioOps(size: number, mix: IoOpMix): fc.Arbitrary<IoOp[]> {
  const w = mix.weights;
  const range = fc.tuple(fc.nat(size - 1), fc.integer({ min: 1, max: mix.maxLength })).map(([off, len]) => ({ off, len: Math.min(len, size - off) }));
  return fc.array(
    fc.oneof(
      { weight: w.write, arbitrary: fc.tuple(range, fc.nat()).map(([r, seed]) => ({ kind: "write" as const, ...r, seed })) },
      { weight: w.zero, arbitrary: fc.tuple(range, fc.boolean()).map(([r, unmap]) => ({ kind: "zero" as const, ...r, unmap })) },
      { weight: w.discard, arbitrary: range.map((r) => ({ kind: "discard" as const, ...r })) },
      { weight: w.snap, arbitrary: (mix.vmState ?? fc.constant(0)).map((vmState) => ({ kind: "snap" as const, vmState })) },
      { weight: w.apply, arbitrary: fc.nat(30).map((pick) => ({ kind: "apply" as const, pick })) },
      { weight: w.delete, arbitrary: fc.nat(30).map((pick) => ({ kind: "delete" as const, pick })) },
      { weight: w.reopen, arbitrary: fc.constant({ kind: "reopen" as const }) },
      { weight: w.read, arbitrary: range.map((r) => ({ kind: "read" as const, ...r })) },
    ),
    { minLength: 5, maxLength: mix.maxOps },
  );
}

/** `len` pseudo-random bytes from `seed` (a linear congruential sequence: the same seed, the same bytes). */
export function fillFrom(seed: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    b[i] = s >>> 24;
  }
  return b;
}

/** What a snapshot must hold: the guest data when it was taken, and its VM state. */
export interface ModelledSnapshot {
  data: Uint8Array;
  vmState: Uint8Array;
}

/** An open image and the byte array that says what it must read; `apply` runs one operation on both. */
export class ModelledImage {
  img: Qcow2Image;
  /** The file the image is open on (a new one after each reopen, as a process restart would see it). */
  file: MemoryFile;
  readonly model: Uint8Array;
  readonly snapshots = new Map<string, ModelledSnapshot>();
  private snapshotsTaken = 0;

  /** `open` opens the image on a file; it is called again at every reopen. */
  constructor(
    file: MemoryFile,
    private readonly size: number,
    private readonly open: (file: MemoryFile) => Qcow2Image,
  ) {
    this.file = file;
    this.img = open(file);
    this.model = new Uint8Array(size);
  }

  apply(o: IoOp): void {
    const img = this.img;
    if (o.kind === "write") {
      const d = fillFrom(o.seed, o.len);
      img.write(o.off, d);
      this.model.set(d, o.off);
    } else if (o.kind === "zero") {
      img.writeZeroes(o.off, o.len, { unmap: o.unmap });
      this.model.fill(0, o.off, o.off + o.len);
    } else if (o.kind === "discard") {
      img.discard(o.off, o.len);
      // Whole clusters only (and the disk's last partial cluster): the rest is left as it was.
      const cs = img.clusterSize;
      const a = Math.ceil(o.off / cs) * cs;
      const end = o.off + o.len;
      const b = end === this.size ? end : Math.floor(end / cs) * cs;
      if (a < b) this.model.fill(0, a, b);
    } else if (o.kind === "snap") {
      const name = `s${this.snapshotsTaken++}`;
      const vmState = fillFrom(this.snapshotsTaken * 7919, o.vmState);
      img.snapshotCreate(name, { vmState }); // an empty VM state is none
      this.snapshots.set(name, { data: this.model.slice(), vmState });
    } else if (o.kind === "apply" && this.snapshots.size) {
      const name = [...this.snapshots.keys()][o.pick % this.snapshots.size]!;
      img.snapshotApply(name);
      this.model.set(this.snapshots.get(name)!.data);
    } else if (o.kind === "delete" && this.snapshots.size) {
      const name = [...this.snapshots.keys()][o.pick % this.snapshots.size]!;
      try {
        img.snapshotDelete(name);
        this.snapshots.delete(name);
      } catch (e) {
        // A refused delete (the owner scheme's, of a snapshot with more than one child) changes nothing.
        if (!(e instanceof SnapshotError)) throw e;
      }
    } else if (o.kind === "reopen") {
      this.reopen();
    } else if (o.kind === "read") {
      expect(Buffer.from(img.read(o.off, o.len)).equals(Buffer.from(this.model.subarray(o.off, o.off + o.len)))).toBe(true);
    }
  }

  /** Closes the image and opens it again on a copy of its file. */
  reopen(): void {
    this.img.close();
    this.file = new MemoryFile(this.file.contents());
    this.img = this.open(this.file);
  }

  /** The whole active layer reads as the model. */
  expectActiveLayer(): void {
    expect(Buffer.from(this.img.read(0, this.size)).equals(Buffer.from(this.model))).toBe(true);
  }
}
