/**
 * Crash-consistency harness. For each refcount scheme and cache mode, a seeded workload (writes, unaligned
 * writes, zero writes with and without unmap, discards, flushes, snapshot create/apply/delete, scheme
 * checkpoints, close + reopen) runs on a fault-injecting file. At every write (or zeroRange: the fallocate
 * that zeroes a reused cluster) it issued, every crash state (prefixes of the unflushed writes, the last one
 * torn at sector boundaries, some other subsets) is rebuilt and verified:
 *
 *   1. recovery: a writable open with the same scheme, then a clean close, succeeds;
 *   2. the recovered image is plain qcow2 (no dirty, corrupt or journal bit, no autoclear bit QEMU does not know) and `refcow check`
 *      finds no corruption; it finds no leak either when the crash state had the dirty bit (recovery rebuilt the
 *      counts);
 *   3. every byte of the disk reads as it was at the last completed flush, or as one of the requests issued
 *      since (a write that was under way may or may not have reached the disk);
 *   4. every snapshot durable at the last flush still exists, none exists that was never created, and every
 *      snapshot present holds exactly what the disk held when it was taken;
 *   5. for a sample of the states QEMU can open (no refcow journal bit), or all of them: `qemu-img check` on
 *      the crash state as QEMU would see it (after `-r all` when it is dirty: QEMU repairs a dirty image when
 *      it opens it) and on refcow's recovered image is clean (leaks allowed only when the state was not dirty,
 *      as QEMU's own crashes leave them), and both read the same guest data (`qemu-img compare`);
 *   6. for another sample of the states (journal ones included): `check -r all` opened under the scheme, as
 *      `refcow check -r all --scheme S` runs it, exits as `qemu-img check -r all` does on the same state (on
 *      a journal state, QEMU refuses the bit: on a copy with the journal replayed, as check first does), and
 *      leaves an image that `qemu-img check` finds clean, with no dirty, corrupt or journal bit, whose every
 *      byte and snapshot passes 3 and 4.
 *
 * With `reflink`, the fault file can clone (copy-free COW, engine/data/cow-copy.ts), at sector granularity so that
 * the small clusters of the geometries share blocks too: each clone is a crash point of its own, and may be
 * lost, reordered with the writes or torn like one.
 *
 * Everything is deterministic by seed. A failure carries what is needed to reproduce it: scheme, cache,
 * geometry, seed, steps and crash point (see reproducer()).
 */
import { performance } from "node:perf_hooks";
import { AUTOCLEAR_BITMAPS, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, INCOMPAT_STANDARD } from "../format/features.js";

/** refcow's own incompatible bits (its journal, its data log): QEMU refuses an image with one, refcow replays it. */
const REFCOW_LOG_BITS = SCHEME_CATALOG.knownIncompatible & ~INCOMPAT_STANDARD;
import { SnapshotError } from "../engine/errors.js";
import { Qcow2Image } from "../open/qcow2.js";
import type { AllocPolicyName, CacheMode, FlushOrder } from "../engine/types.js";
import { type CrashState, FaultFile, SECTOR } from "../io/fault-file.js";
import type { BlockFile } from "../io/block-file.js";
import { MemoryFile } from "../io/memory-file.js";
import { SCHEME_CATALOG, SCHEME_NAMES } from "../schemes/index.js";
import { QEMU_CHECK, qemuImg, qemuImgAvailable, Scratch } from "./qemu-tools.js";
import { CRASH_GEOMETRIES, type CrashGeometry } from "./crash-geometries.js";

export interface CrashTestOptions {
  schemes?: string[];
  caches?: CacheMode[];
  /** First seed (default 1). */
  seed?: number;
  /** Seeds per scheme and cache mode (default 3): seed, seed+1, ... */
  seeds?: number;
  /** Workload steps per seed (default 60). */
  steps?: number;
  /** Geometry name; by default the seeds rotate through CRASH_GEOMETRIES. */
  geometry?: string;
  /** Allocation policy; by default odd seeds use append, even ones first-fit. */
  alloc?: AllocPolicyName;
  /** The eager scheme's flush order while the workload runs (default refcow's). */
  order?: FlushOrder;
  /** The file can clone (shared extents, at 512-byte blocks): copies on write clone instead of copying. */
  reflink?: boolean;
  /** Tear points per last write (default 2: after its first sector, and before its last; Infinity: every boundary). */
  torn?: number;
  /** Non-prefix subsets of the unflushed writes per crash point (default 2). */
  subsets?: number;
  /** States per scheme and cache mode also checked by QEMU (default 12; "all"; 0: none). */
  qemuSample?: number | "all";
  /** States per scheme and cache mode also repaired by `check -r all` and compared with QEMU's (default 6; 0: none). */
  checkSample?: number;
  /** Only this crash point (log position), to reproduce a failure. */
  at?: number;
  /** Failures reported in full per scheme and cache mode (default 5); all are counted. */
  maxReported?: number;
  /** Called after each scheme/cache cell. */
  onCell?: (cell: CrashCellResult) => void;
}

export interface CrashFailure {
  scheme: string;
  cache: CacheMode;
  geometry: string;
  alloc?: AllocPolicyName;
  reflink?: boolean;
  seed: number;
  steps: number;
  torn: number;
  subsets: number;
  /** Crash point: number of file operations issued before the crash. */
  at: number;
  /** Workload step under way at the crash ("open" for the first open), and what it was doing. */
  step: string;
  state: string;
  message: string;
}

export interface CrashCellResult {
  scheme: string;
  cache: CacheMode;
  seeds: number;
  crashPoints: number;
  states: number;
  failures: number;
  reported: CrashFailure[];
  qemuChecked: number;
  /** States repaired by check -r all under the scheme, and compared with qemu-img check -r all. */
  checkRepaired: number;
  /** States refcow recovered with leaked clusters left (allowed only when the state was not dirty). */
  leakyStates: number;
  ms: number;
}

export interface CrashReport {
  cells: CrashCellResult[];
  states: number;
  failures: number;
  qemuAvailable: boolean;
}

// ------------------------------------------------------------------------------------------------- workload

/** A small, fast, seedable generator (LCG), identical on every platform. */
export function seededRandom(seed: number): () => number {
  let s = (seed ^ 0x9e3779b9) >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 0x1_0000_0000;
  };
}

/** A state of the guest-visible contents that a completed flush made durable. */
interface Durable {
  at: number;
  active: Uint8Array;
  snapshots: Map<string, Uint8Array>;
}

/** A request after which some bytes of the active layer may read differently. */
interface Touch {
  at: number;
  start: number;
  end: number;
  /** What the range reads once the request has reached the disk: byte at `pos`, and bytes of [a, b). */
  value: (pos: number) => number;
  bytes: (a: number, b: number) => Uint8Array;
}

/** A touch whose range reads as `data` (indexed from `start`). */
function touchOf(at: number, start: number, data: Uint8Array): Touch {
  return { at, start, end: start + data.length, value: (p) => data[p - start], bytes: (a, b) => data.subarray(a - start, b - start) };
}

interface SnapshotEvent {
  at: number;
  name: string;
  kind: "create" | "delete";
}

interface StepRecord {
  firstOp: number;
  what: string;
}

export interface CrashWorkload {
  fault: FaultFile;
  durable: Durable[];
  touches: Touch[];
  events: SnapshotEvent[];
  steps: StepRecord[];
  /** Content of every snapshot ever created, by name (names are never reused). */
  snapshotContent: Map<string, Uint8Array>;
}

/** Bytes a workload write puts at guest offset `pos` (never 0, different per step and every 16 bytes). */
function pattern(step: number, pos: number): number {
  return 1 + ((step * 131 + Math.floor(pos / 16) * 7) % 255);
}

export function geometryFor(seed: number, name?: string): CrashGeometry {
  if (name !== undefined) {
    const g = CRASH_GEOMETRIES.find((x) => x.name === name);
    if (!g) throw new Error(`unknown crash geometry '${name}' (available: ${CRASH_GEOMETRIES.map((x) => x.name).join(", ")})`);
    return g;
  }
  return CRASH_GEOMETRIES[((seed % CRASH_GEOMETRIES.length) + CRASH_GEOMETRIES.length) % CRASH_GEOMETRIES.length];
}

/** Runs the seeded workload of one scheme and cache mode on a fault-injecting file. */
export function runCrashWorkload(
  scheme: string,
  cache: CacheMode,
  seed: number,
  steps: number,
  geometry: CrashGeometry,
  alloc?: AllocPolicyName,
  order?: FlushOrder,
  reflink = false,
): CrashWorkload {
  const { clusterSize: cs, size } = geometry;
  const base = new MemoryFile();
  Qcow2Image.create(base, { size, clusterSize: cs, extendedL2: geometry.extendedL2 });
  const fault = new FaultFile(base.contents(), `${scheme}-${cache}-${seed}`);
  if (reflink) fault.cloneBlockSize = SECTOR;
  // Seeded randomness for the scheme too (the journal's sequence numbers): a run repeats byte for byte.
  const schemeRandom = seededRandom(seed * 65537 + 5);
  const open = () => Qcow2Image.open(fault, { scheme, cache, alloc, order, random: schemeRandom });
  const w: CrashWorkload = { fault, durable: [], touches: [], events: [], steps: [{ firstOp: 0, what: "open" }], snapshotContent: new Map() };
  let img = open();
  const rnd = seededRandom(seed);
  const model = new Uint8Array(size);
  const snaps = new Map<string, Uint8Array>();
  const durable = () => w.durable.push({ at: fault.log.length, active: model.slice(), snapshots: new Map(snaps) });
  w.durable.push({ at: 0, active: model.slice(), snapshots: new Map() });
  durable();
  let names = 0;
  const pick = () => {
    const all = [...snaps.keys()];
    return all[Math.floor(rnd() * all.length)];
  };
  for (let step = 0; step < steps; step++) {
    const at = fault.log.length;
    const r = rnd();
    let what: string;
    let isDurable = false;
    // Sector-aligned requests of 1-24 sectors, as a disk controller issues them, and some byte-unaligned ones.
    let off = Math.floor(rnd() * (size / 512)) * 512;
    let len = Math.min(size - off, (1 + Math.floor(rnd() * 24)) * 512);
    if (r < 0.36) {
      const data = new Uint8Array(len);
      for (let i = 0; i < len; i++) data[i] = pattern(step, off + i);
      img.write(off, data);
      model.set(data, off);
      w.touches.push(touchOf(at, off, data));
      what = `write ${len} bytes at ${off}`;
      isDurable = cache === "writethrough";
    } else if (r < 0.44) {
      off = Math.floor(rnd() * (size - 1));
      len = 1 + Math.floor(rnd() * Math.min(3000, size - off - 1));
      const data = new Uint8Array(len);
      for (let i = 0; i < len; i++) data[i] = pattern(step, off + i);
      img.write(off, data);
      model.set(data, off);
      w.touches.push(touchOf(at, off, data));
      what = `unaligned write ${len} bytes at ${off}`;
      isDurable = cache === "writethrough";
    } else if (r < 0.52) {
      const unmap = rnd() < 0.5;
      img.writeZeroes(off, len, { unmap });
      model.fill(0, off, off + len);
      w.touches.push(touchOf(at, off, new Uint8Array(len)));
      what = `write zeroes${unmap ? " (unmap)" : ""} ${len} bytes at ${off}`;
      isDurable = cache === "writethrough";
    } else if (r < 0.57) {
      img.discard(off, len);
      // Whole clusters only are discarded (they then read as zeroes); the rest is left as it was.
      const a = Math.ceil(off / cs) * cs;
      const b = Math.floor((off + len) / cs) * cs;
      if (a < b) {
        model.fill(0, a, b);
        w.touches.push(touchOf(at, a, new Uint8Array(b - a)));
      }
      what = `discard ${len} bytes at ${off}`;
      isDurable = cache === "writethrough";
    } else if (r < 0.7) {
      img.flush();
      what = "flush";
      isDurable = true;
    } else if (r < 0.77) {
      if (snaps.size >= 6) {
        img.flush();
        what = "flush";
      } else {
        const name = `s${names++}`;
        const content = model.slice();
        w.events.push({ at, name, kind: "create" });
        w.snapshotContent.set(name, content);
        img.snapshotCreate(name);
        snaps.set(name, content);
        what = `snapshot create ${name}`;
      }
      // Snapshot operations flush before they return.
      isDurable = true;
    } else if (r < 0.82) {
      if (snaps.size) {
        const name = pick();
        const content = snaps.get(name)!;
        w.touches.push(touchOf(at, 0, content));
        img.snapshotApply(name);
        model.set(content);
        what = `snapshot apply ${name}`;
        isDurable = true;
      } else {
        what = "nothing (no snapshot to apply)";
      }
    } else if (r < 0.87) {
      if (snaps.size) {
        const name = pick();
        w.events.push({ at, name, kind: "delete" });
        try {
          img.snapshotDelete(name);
          snaps.delete(name);
          what = `snapshot delete ${name}`;
          isDurable = true;
        } catch (e) {
          // The owner scheme refuses to delete a snapshot with several children; nothing changes.
          if (!(e instanceof SnapshotError)) throw e;
          w.events.pop();
          what = `snapshot delete ${name} (refused)`;
        }
      } else {
        what = "nothing (no snapshot to delete)";
      }
    } else if (r < 0.93) {
      if (img.core.scheme.checkpoint) {
        img.core.scheme.checkpoint();
        what = "checkpoint";
      } else {
        img.flush();
        what = "flush (scheme has no checkpoint)";
      }
      isDurable = true;
    } else {
      img.close();
      img = open();
      what = "close and reopen";
      isDurable = true;
    }
    w.steps.push({ firstOp: at, what: `step ${step}: ${what}` });
    if (isDurable) durable();
  }
  w.steps.push({ firstOp: fault.log.length, what: "final close" });
  img.close();
  durable();
  return w;
}

// ----------------------------------------------------------------------------------------------- verification

const u64At = (b: Uint8Array, o: number) => (b.length >= o + 8 ? new DataView(b.buffer, b.byteOffset + o, 8).getBigUint64(0) : 0n);

/** Incompatible feature bits of raw image bytes (0 for a version 2 image). */
export function incompatibleBits(bytes: Uint8Array): bigint {
  if (bytes.length < 104 || new DataView(bytes.buffer, bytes.byteOffset + 4, 4).getUint32(0) !== 3) return 0n;
  return u64At(bytes, 72);
}

interface Verdict {
  message?: string;
  leaks: number;
}

/** A view of a file whose close() does nothing: the recovered image is verified in place after its close. */
class KeepOpen implements BlockFile {
  constructor(private readonly f: BlockFile) {}
  get name(): string {
    return this.f.name;
  }
  get readOnly(): boolean {
    return this.f.readOnly;
  }
  read(buf: Uint8Array, offset: number): number {
    return this.f.read(buf, offset);
  }
  write(data: Uint8Array, offset: number): void {
    this.f.write(data, offset);
  }
  get zeroesWithoutWriting(): boolean {
    return this.f.zeroesWithoutWriting;
  }
  zeroRange(offset: number, length: number, _purpose?: unknown, unmap?: boolean): void {
    this.f.zeroRange(offset, length, undefined, unmap);
  }
  flush(): void {}
  size(): number {
    return this.f.size();
  }
  truncate(size: number): void {
    this.f.truncate(size);
  }
  close(): void {}
}

const bufferOf = (a: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const sameBytes = (a: Uint8Array, b: Uint8Array) => bufferOf(a).equals(bufferOf(b));
/** Whether a[aStart, aStart + n) equals b[bStart, bStart + n) (Buffer.compare over ranges: no view per call). */
const sameRange = (a: Buffer, aStart: number, b: Buffer, bStart: number, n: number) => a.compare(b, bStart, bStart + n, aStart, aStart + n) === 0;

/**
 * Guest-sized buffers for reading a recovered image, reused from state to state (thousands per workload, all
 * the same size): a fresh disk-sized array per read was most of the harness's garbage.
 */
const readBuffers = new Map<number, { active: Buffer; snapshot: Buffer }>();
function readBuffersOf(size: number): { active: Buffer; snapshot: Buffer } {
  let b = readBuffers.get(size);
  if (!b) {
    readBuffers.clear();
    b = { active: Buffer.alloc(size), snapshot: Buffer.alloc(size) };
    readBuffers.set(size, b);
  }
  return b;
}

/** Recovers one crash state with refcow (in place, in `file`) and verifies it against the workload's model. */
function verifyState(w: CrashWorkload, scheme: string, file: MemoryFile, dirty: boolean, at: number, alloc?: AllocPolicyName): Verdict {
  const view = new KeepOpen(file);
  try {
    Qcow2Image.open(view, { scheme, cache: "writeback", alloc, random: seededRandom(at) }).close();
  } catch (e) {
    return { message: `recovery (writable open with the ${scheme} scheme) failed: ${(e as Error).message}`, leaks: 0 };
  }
  return verifyRecovered(w, view, at, !dirty, "recovery");
}

/**
 * `check -r all` of one crash state (in place, in `file`) opened under the scheme as the CLI opens it, then
 * the image it leaves verified against the model. Returns the verdict and check's exit code.
 */
function repairState(w: CrashWorkload, scheme: string, file: MemoryFile, at: number, alloc?: AllocPolicyName): Verdict & { exit: number } {
  const view = new KeepOpen(file);
  let exit: number;
  try {
    const img = Qcow2Image.open(view, { scheme, cache: "writeback", alloc, forCheck: true, noRepairOnOpen: true, random: seededRandom(at) });
    try {
      let r = img.check("all");
      if (!r.failure && (r.leaksFixed || r.corruptionsFixed)) r = img.check();
      exit = r.failure || r.checkErrors ? QEMU_CHECK.failed : r.corruptions ? QEMU_CHECK.corrupt : r.leaks ? QEMU_CHECK.leaks : QEMU_CHECK.clean;
    } finally {
      img.close();
    }
  } catch (e) {
    return { message: `check -r all --scheme ${scheme} failed: ${(e as Error).message}`, leaks: 0, exit: QEMU_CHECK.failed };
  }
  if (exit !== QEMU_CHECK.clean) return { message: `check -r all --scheme ${scheme} exited ${exit}`, leaks: 0, exit };
  return { ...verifyRecovered(w, view, at, false, "check -r all"), exit };
}

/** Verifies an image refcow recovered or repaired: plain qcow2, consistent, and holding what the model says. */
function verifyRecovered(w: CrashWorkload, view: BlockFile, at: number, leaksAllowed: boolean, by: string): Verdict {
  let img: Qcow2Image;
  try {
    img = Qcow2Image.open(view, { readOnly: true });
  } catch (e) {
    return { message: `the image left by ${by} does not open: ${(e as Error).message}`, leaks: 0 };
  }
  try {
    const bits = img.core.header.incompatibleFeatures & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT | REFCOW_LOG_BITS);
    if (bits) return { message: `the image left by ${by} still has incompatible bits 0x${bits.toString(16)} set after a clean close`, leaks: 0 };
    // An autoclear bit QEMU does not know makes `qemu-img check -r` drop every snapshot: none may be left
    // (bit 0, QEMU's own "bitmaps consistent", belongs to an image with persistent bitmaps).
    if (img.core.header.autoclearFeatures & ~AUTOCLEAR_BITMAPS) return { message: `the image left by ${by} has autoclear bits 0x${img.core.header.autoclearFeatures.toString(16)} set after a clean close (only bit 0, bitmaps, may be)`, leaks: 0 };
    const check = img.check();
    if (check.corruptions || check.checkErrors) {
      return { message: `refcow check after ${by}: ${check.corruptions} corruptions, ${check.checkErrors} errors: ${check.messages.slice(0, 4).join("; ")}`, leaks: check.leaks };
    }
    if (check.leaks && !leaksAllowed) return { message: `refcow check after ${by}: ${check.leaks} leaked clusters (a rebuild or repair should leave none)`, leaks: check.leaks };
    // The durable state this crash point starts from, and what happened since.
    let cp = w.durable[0];
    for (const d of w.durable) if (d.at <= at) cp = d;
    const buffers = readBuffersOf(img.size);
    const got = buffers.active;
    img.readInto(got, 0);
    const active = bufferOf(cp.active);
    if (!got.equals(active)) {
      const touches = w.touches.filter((t) => t.at >= cp.at && t.at < at).map((t) => ({ t, data: bufferOf(t.bytes(t.start, t.end)) }));
      for (let sector = 0; sector < got.length; sector += 512) {
        // Fast path: the whole sector as the last flush left it, or as one request wrote it.
        const end = Math.min(sector + 512, got.length);
        if (sameRange(got, sector, active, sector, end - sector)) continue;
        if (touches.some(({ t, data }) => t.start <= sector && t.end >= end && sameRange(got, sector, data, sector - t.start, end - sector))) continue;
        for (let i = sector; i < end; i++) {
          if (got[i] === cp.active[i]) continue;
          if (touches.some(({ t }) => i >= t.start && i < t.end && t.value(i) === got[i])) continue;
          return { message: `guest byte ${i} reads ${got[i]}: the last flush left ${cp.active[i]}${touches.length ? `, and no request since wrote ${got[i]} there` : ""}`, leaks: check.leaks };
        }
      }
    }
    const events = w.events.filter((e) => e.at >= cp.at && e.at < at);
    const present = new Set(img.snapshotList().map((s) => s.name));
    for (const name of cp.snapshots.keys()) {
      if (!present.has(name) && !events.some((e) => e.kind === "delete" && e.name === name)) return { message: `snapshot ${name} was durable and is gone`, leaks: check.leaks };
    }
    const buf = buffers.snapshot;
    for (const name of present) {
      if (!cp.snapshots.has(name) && !events.some((e) => e.kind === "create" && e.name === name)) return { message: `snapshot ${name} exists but was not created before this point`, leaks: check.leaks };
      const want = w.snapshotContent.get(name);
      if (!want) return { message: `unknown snapshot ${name}`, leaks: check.leaks };
      img.readSnapshot(name, buf, 0);
      if (sameBytes(buf, want)) continue;
      const i = buf.findIndex((b, j) => b !== want[j]);
      return { message: `snapshot ${name}: guest byte ${i} reads ${buf[i]}, was ${want[i]} when the snapshot was taken`, leaks: check.leaks };
    }
    return { leaks: check.leaks };
  } catch (e) {
    return { message: `verifying the image left by ${by} failed: ${(e as Error).name}: ${(e as Error).message}`, leaks: 0 };
  } finally {
    img.close();
  }
}

/**
 * QEMU's view of a crash state and of refcow's recovery of it. Returns a failure message, or undefined.
 * The caller only passes states without the refcow journal bit (QEMU refuses those, as it must).
 */
function qemuVerify(scratch: Scratch, raw: Uint8Array, recovered: Uint8Array): string | undefined {
  const dirty = (incompatibleBits(raw) & INCOMPAT_DIRTY) !== 0n;
  const a = scratch.file(raw, "state");
  const b = scratch.file(recovered, "recovered");
  try {
    // QEMU repairs a dirty image when it opens it for writing; check -r all does the same and reports after.
    const own = qemuImg(dirty ? ["check", "-r", "all", a] : ["check", a]);
    const okOwn = own.status === QEMU_CHECK.clean || (!dirty && own.status === QEMU_CHECK.leaks);
    if (!okOwn) return `qemu-img check${dirty ? " -r all" : ""} of the crash state exited ${own.status}:\n${own.out.trim()}`;
    const rec = qemuImg(["check", b]);
    const okRec = rec.status === QEMU_CHECK.clean || (!dirty && rec.status === QEMU_CHECK.leaks);
    if (!okRec) return `qemu-img check of refcow's recovered image exited ${rec.status}:\n${rec.out.trim()}`;
    const cmp = qemuImg(["compare", "-f", "qcow2", "-F", "qcow2", a, b]);
    if (cmp.status !== 0) return `QEMU reads the crash state differently from refcow's recovery of it: ${cmp.out.trim()}`;
    return undefined;
  } finally {
    scratch.remove(a);
    scratch.remove(b);
  }
}

/**
 * QEMU's `check -r all` of a crash state against refcow's (`exit`, leaving `repaired`). A journal state is
 * given to QEMU with its journal replayed and nothing else changed (what check does before it looks).
 */
function qemuVerifyRepair(scratch: Scratch, raw: Uint8Array, exit: number, repaired: Uint8Array | undefined): string | undefined {
  let state = raw;
  if (incompatibleBits(raw) & REFCOW_LOG_BITS) {
    const copy = new MemoryFile(raw);
    Qcow2Image.open(new KeepOpen(copy), { forCheck: true, noRepairOnOpen: true, noBacking: true }).close();
    state = copy.contents();
  }
  const a = scratch.file(state, "state");
  const b = repaired ? scratch.file(repaired, "repaired") : undefined;
  try {
    const own = qemuImg(["check", "-r", "all", a]);
    if (own.status !== exit) return `check -r all exited ${exit}, qemu-img check -r all of the same state ${own.status}:\n${own.out.trim()}`;
    if (!b) return undefined;
    const after = qemuImg(["check", b]);
    if (after.status !== QEMU_CHECK.clean) return `qemu-img check after refcow's check -r all exited ${after.status}:\n${after.out.trim()}`;
    return undefined;
  } finally {
    scratch.remove(a);
    if (b) scratch.remove(b);
  }
}

function stepAt(w: CrashWorkload, at: number): string {
  let s = w.steps[0];
  for (const r of w.steps) if (r.firstOp < at) s = r;
  return s.what;
}

/** Runs the harness over every scheme and cache mode asked for. */
export function runCrashTests(opts: CrashTestOptions = {}): CrashReport {
  const schemes = opts.schemes ?? SCHEME_NAMES;
  const caches = opts.caches ?? (["writeback", "writethrough"] as CacheMode[]);
  const first = opts.seed ?? 1;
  const seeds = opts.seeds ?? 3;
  const steps = opts.steps ?? 60;
  const sample = opts.qemuSample ?? 12;
  const checkSample = opts.checkSample ?? 6;
  const maxReported = opts.maxReported ?? 5;
  const torn = opts.torn ?? 2;
  const subsets = opts.subsets ?? 2;
  const qemu = (sample !== 0 || checkSample !== 0) && qemuImgAvailable();
  const scratch = qemu ? new Scratch("crash") : undefined;
  const cells: CrashCellResult[] = [];
  // Every crash state is rebuilt in this one file: nothing keeps a state's file past its turn (the samples
  // for QEMU and for check -r all keep copies of the bytes).
  const stateFile = new MemoryFile();
  try {
    for (const scheme of schemes) {
      for (const cache of caches) {
        const t0 = performance.now();
        const cell: CrashCellResult = { scheme, cache, seeds, crashPoints: 0, states: 0, failures: 0, reported: [], qemuChecked: 0, checkRepaired: 0, leakyStates: 0, ms: 0 };
        for (let seed = first; seed < first + seeds; seed++) {
          const geometry = geometryFor(seed, opts.geometry);
          const alloc: AllocPolicyName = opts.alloc ?? (seed % 2 ? "append" : "first-fit");
          const fail = (at: number, state: CrashState | undefined, w: CrashWorkload | undefined, message: string) => {
            cell.failures++;
            if (cell.reported.length < maxReported) {
              cell.reported.push({
                scheme,
                cache,
                geometry: geometry.name,
                alloc,
                reflink: opts.reflink,
                seed,
                steps,
                torn,
                subsets,
                at,
                step: w ? stepAt(w, at) : "workload",
                state: state && w ? w.fault.describe(state) : "",
                message,
              });
            }
          };
          let w: CrashWorkload;
          try {
            w = runCrashWorkload(scheme, cache, seed, steps, geometry, alloc, opts.order, opts.reflink);
          } catch (e) {
            fail(0, undefined, undefined, `the workload itself failed: ${(e as Error).stack ?? e}`);
            continue;
          }
          const qemuRandom = seededRandom(seed * 104729 + 3);
          // Reservoir of states for QEMU (uniform over the states it can open), unless it checks them all.
          const reservoir: { raw: Uint8Array; recovered: Uint8Array; at: number; state: CrashState }[] = [];
          // The sample is split over the seeds.
          const share = sample === "all" ? 0 : Math.ceil(sample / seeds);
          let eligible = 0;
          // Another reservoir, over every state, for check -r all.
          const toRepair: { raw: Uint8Array; at: number; state: CrashState }[] = [];
          const repairShare = Math.ceil(checkSample / seeds);
          const repairRandom = seededRandom(seed * 15485863 + 11);
          let seen = 0;
          const points = opts.at !== undefined ? [opts.at] : w.fault.writePoints();
          for (const at of points) {
            cell.crashPoints++;
            // The subsets drawn at a crash point depend only on the seed and the point: --at reproduces them.
            const random = seededRandom(seed * 7919 + at * 31 + 17);
            for (const state of w.fault.crashStates(at, { torn, subsets, random })) {
              cell.states++;
              const file = w.fault.materialize(state, stateFile);
              const head = new Uint8Array(112);
              file.read(head, 0);
              const incompat = incompatibleBits(head);
              // States QEMU can open (no journal or data log bit) may go to QEMU: all of them, or a uniform sample.
              let slot = -1;
              if (qemu && !(incompat & REFCOW_LOG_BITS)) {
                if (sample === "all") slot = 0;
                else {
                  eligible++;
                  slot = reservoir.length < share ? reservoir.length : Math.floor(qemuRandom() * eligible);
                  if (slot >= share) slot = -1;
                }
              }
              const raw = slot >= 0 ? file.contents() : undefined;
              if (qemu && repairShare > 0) {
                seen++;
                const k = toRepair.length < repairShare ? toRepair.length : Math.floor(repairRandom() * seen);
                if (k < repairShare) toRepair[k] = { raw: raw ?? file.contents(), at, state };
              }
              const v = verifyState(w, scheme, file, (incompat & INCOMPAT_DIRTY) !== 0n, at, alloc);
              if (v.leaks) cell.leakyStates++;
              if (v.message) {
                fail(at, state, w, v.message);
                continue;
              }
              if (!raw) continue;
              if (sample === "all") {
                cell.qemuChecked++;
                const m = qemuVerify(scratch!, raw, file.contents());
                if (m) fail(at, state, w, m);
              } else {
                reservoir[slot] = { raw, recovered: file.contents(), at, state };
              }
            }
          }
          for (const item of reservoir) {
            cell.qemuChecked++;
            const m = qemuVerify(scratch!, item.raw, item.recovered);
            if (m) fail(item.at, item.state, w, m);
          }
          for (const item of toRepair) {
            cell.checkRepaired++;
            const file = new MemoryFile(item.raw);
            const v = repairState(w, scheme, file, item.at, alloc);
            const m = qemuVerifyRepair(scratch!, item.raw, v.exit, v.message ? undefined : file.contents());
            if (v.message || m) fail(item.at, item.state, w, [v.message, m].filter(Boolean).join("\n"));
          }
        }
        cell.ms = performance.now() - t0;
        cells.push(cell);
        opts.onCell?.(cell);
      }
    }
  } finally {
    scratch?.dispose();
  }
  return {
    cells,
    states: cells.reduce((a, c) => a + c.states, 0),
    failures: cells.reduce((a, c) => a + c.failures, 0),
    qemuAvailable: qemu,
  };
}

/** The command line that reruns one failing crash point. */
export function reproducer(f: CrashFailure): string {
  const alloc = f.alloc ? ` --alloc ${f.alloc}` : "";
  const torn = f.torn === Infinity ? "all" : String(f.torn);
  return `refcow crash-test --scheme ${f.scheme} -t ${f.cache} --geometry ${f.geometry}${alloc}${f.reflink ? " --reflink" : ""} --seed ${f.seed} --seeds 1 --steps ${f.steps} --torn ${torn} --subsets ${f.subsets} --at ${f.at}`;
}

/** The report as a table (one row per scheme and cache mode), then each reported failure. */
export function formatCrashReport(r: CrashReport): string {
  const head = ["scheme", "cache", "seeds", "crash points", "states", "qemu-checked", "check -r all", "leaky", "failures", "time"];
  const rows = r.cells.map((c) => [c.scheme, c.cache, String(c.seeds), String(c.crashPoints), String(c.states), String(c.qemuChecked), String(c.checkRepaired), String(c.leakyStates), String(c.failures), `${(c.ms / 1000).toFixed(1)} s`]);
  const total = (f: (c: CrashCellResult) => number) => String(r.cells.reduce((a, c) => a + f(c), 0));
  rows.push(["total", "", "", total((c) => c.crashPoints), String(r.states), total((c) => c.qemuChecked), total((c) => c.checkRepaired), total((c) => c.leakyStates), String(r.failures), `${(r.cells.reduce((a, c) => a + c.ms, 0) / 1000).toFixed(1)} s`]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cols: string[]) => cols.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ").trimEnd();
  let out = `${line(head)}\n${line(widths.map((n) => "-".repeat(n)))}\n${rows.map(line).join("\n")}\n`;
  if (!r.qemuAvailable) out += "(qemu-img not available or not asked for: no state was checked by QEMU)\n";
  for (const c of r.cells) {
    for (const f of c.reported) {
      out += `\nFAIL ${f.scheme}/${f.cache} geometry ${f.geometry} seed ${f.seed}, ${f.step}\n  ${f.state}\n  ${f.message.split("\n").join("\n  ")}\n  reproduce: ${reproducer(f)}\n`;
    }
    if (c.failures > c.reported.length) out += `\n(${c.failures - c.reported.length} more failures of ${c.scheme}/${c.cache} not shown)\n`;
  }
  return out;
}
