/**
 * Allocation policy: under `append` no write ever lands in a cluster freed while the image was open (after a
 * discard, after a snapshot delete), and the file grows instead; under `first-fit` the same freed clusters
 * are reused, for every scheme.
 */
import { describe, expect, it } from "vitest";
import type { BlockFile, IoPurpose } from "../../src/io/block-file.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { allocationPolicy } from "../../src/engine/allocation/alloc-policy.js";
import { RequestError } from "../../src/engine/errors.js";
import type { AllocPolicyName } from "../../src/engine/types.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";

const CS = 65536;
const MIB = 1 << 20;

/** A memory file that remembers where every write (and zeroing) went. */
class RecordingFile implements BlockFile {
  readonly inner = new MemoryFile();
  readonly writes: { offset: number; length: number }[] = [];
  readonly name = "recording";
  readonly readOnly = false;
  read(buf: Uint8Array, offset: number, purpose?: IoPurpose): number {
    return this.inner.read(buf, offset, purpose);
  }
  write(data: Uint8Array, offset: number, purpose?: IoPurpose): void {
    this.writes.push({ offset, length: data.length });
    this.inner.write(data, offset, purpose);
  }
  readonly zeroesWithoutWriting = true;
  zeroRange(offset: number, length: number, purpose?: IoPurpose): void {
    this.writes.push({ offset, length });
    this.inner.zeroRange(offset, length, purpose);
  }
  flush(): void {}
  size(): number {
    return this.inner.size();
  }
  truncate(size: number): void {
    this.inner.truncate(size);
  }
  close(): void {}
}

/** Host clusters holding the guest range [offset, offset + length) of the active layer. */
function hostClusters(img: Qcow2Image, offset: number, length: number): Set<number> {
  const out = new Set<number>();
  for (const e of img.map()) {
    if (e.offset === undefined || e.start + e.length <= offset || e.start >= offset + length) continue;
    const a = Math.max(e.start, offset);
    const b = Math.min(e.start + e.length, offset + length);
    for (let g = a; g < b; g += CS) out.add(Math.floor((e.offset + (g - e.start)) / CS));
  }
  return out;
}

/** Writes since log position `from` that touch one of `clusters`. */
function writesInto(file: RecordingFile, from: number, clusters: Set<number>): number {
  let n = 0;
  for (const w of file.writes.slice(from)) {
    for (let c = Math.floor(w.offset / CS); c <= Math.floor((w.offset + w.length - 1) / CS); c++) if (clusters.has(c)) n++;
  }
  return n;
}

function openImage(scheme: string, alloc: AllocPolicyName): { file: RecordingFile; img: Qcow2Image } {
  const file = new RecordingFile();
  Qcow2Image.create(file, { size: 16 * MIB, clusterSize: CS });
  return { file, img: Qcow2Image.open(file, { scheme, alloc, cache: "writeback" }) };
}

describe("allocation policy", () => {
  it("is a known name or a clear error", () => {
    expect(allocationPolicy().name).toBe("first-fit");
    expect(allocationPolicy("append").name).toBe("append");
    expect(() => allocationPolicy("best-fit")).toThrow(RequestError);
    expect(() => Qcow2Image.open(new MemoryFile(), { alloc: "nope" as AllocPolicyName })).toThrow();
  });

  for (const scheme of SCHEME_NAMES) {
    for (const alloc of ["append", "first-fit"] as const) {
      it(`${scheme}, ${alloc}: clusters freed by a discard`, () => {
        const { file, img } = openImage(scheme, alloc);
        img.write(0, new Uint8Array(MIB).fill(1));
        img.flush();
        const freed = hostClusters(img, 0, MIB);
        expect(freed.size).toBe(16);
        img.discard(0, MIB);
        img.flush();
        const sizeAfterFree = file.size();
        const mark = file.writes.length;
        img.write(4 * MIB, new Uint8Array(MIB).fill(2));
        img.write(8 * MIB, new Uint8Array(MIB).fill(3));
        img.flush();
        if (alloc === "append") {
          expect(writesInto(file, mark, freed)).toBe(0);
          expect(file.size()).toBeGreaterThanOrEqual(sizeAfterFree + 2 * MIB);
        } else {
          expect(writesInto(file, mark, freed)).toBeGreaterThan(0);
          expect(file.size()).toBeLessThan(sizeAfterFree + 2 * MIB);
        }
        expect(img.read(4 * MIB, MIB).every((b) => b === 2)).toBe(true);
        expect(img.read(0, MIB).every((b) => b === 0)).toBe(true);
        img.close();
        const ro = Qcow2Image.open(new MemoryFile(file.inner.contents()), { readOnly: true });
        const check = ro.check();
        expect(check.corruptions + check.leaks, check.messages.join("\n")).toBe(0);
      });

      it(`${scheme}, ${alloc}: clusters freed by a snapshot delete`, () => {
        const { file, img } = openImage(scheme, alloc);
        img.write(0, new Uint8Array(MIB).fill(1));
        img.flush();
        const old = hostClusters(img, 0, MIB);
        img.snapshotCreate("s");
        img.write(0, new Uint8Array(MIB).fill(5)); // every cluster copied: the old ones belong to "s" only
        img.snapshotDelete("s");
        img.flush();
        const mark = file.writes.length;
        const sizeAfterFree = file.size();
        img.write(4 * MIB, new Uint8Array(MIB).fill(2));
        img.flush();
        if (alloc === "append") {
          expect(writesInto(file, mark, old)).toBe(0);
          expect(file.size()).toBeGreaterThanOrEqual(sizeAfterFree + MIB);
        } else {
          expect(writesInto(file, mark, old)).toBeGreaterThan(0);
        }
        expect(img.read(0, MIB).every((b) => b === 5)).toBe(true);
        img.close();
        const ro = Qcow2Image.open(new MemoryFile(file.inner.contents()), { readOnly: true });
        const check = ro.check();
        expect(check.corruptions + check.leaks, check.messages.join("\n")).toBe(0);
      });
    }
  }

  it("append puts metadata at the end too: L2 tables, L1 and snapshot tables, refcount blocks", () => {
    // 512-byte clusters with 64-bit refcounts: a refcount block covers 64 clusters, an L2 table 32 KiB.
    const file = new RecordingFile();
    Qcow2Image.create(file, { size: 4 * MIB, clusterSize: 512, refcountBits: 64 });
    const img = Qcow2Image.open(file, { alloc: "append" });
    for (let i = 0; i < 40; i++) img.write(i * 32768, new Uint8Array(512).fill(i + 1));
    img.snapshotCreate("a");
    img.flush();
    img.discard(0, 40 * 32768); // frees nothing (the snapshot keeps it) but copies L2 tables
    img.snapshotDelete("a"); // frees the old data, L2 tables, L1 copy and snapshot table
    img.flush();
    const end = Math.ceil(file.size() / 512);
    const mark = file.writes.length;
    for (let i = 0; i < 40; i++) img.write(i * 32768 + 2 * MIB, new Uint8Array(512).fill(i + 1));
    img.snapshotCreate("b");
    img.close();
    // Past the end as it was, everything new; before it, only in-place updates of live structures (the header,
    // L1 entries, COPIED flags of the active L2 tables, refcount entries).
    const live = new Set<number>([0]);
    const ro = Qcow2Image.open(new MemoryFile(file.inner.contents()), { readOnly: true });
    for (const c of liveMetadata(ro)) live.add(c);
    for (const w of file.writes.slice(mark)) {
      const c = Math.floor(w.offset / 512);
      if (c < end) expect(live.has(c), `write at cluster ${c} (end was ${end})`).toBe(true);
    }
    const check = ro.check();
    expect(check.corruptions + check.leaks).toBe(0);
  });
});

/** Clusters of the structures updated in place: active L1 and L2 tables, refcount table and blocks. */
function liveMetadata(img: Qcow2Image): number[] {
  const cs = img.clusterSize;
  const out: number[] = [];
  const h = img.core.header;
  for (let c = h.l1TableOffset / cs; c < Math.ceil((h.l1TableOffset + h.l1Size * 8) / cs); c++) out.push(c);
  for (let i = 0; i < img.core.refcounts.tableClusters; i++) out.push(img.core.refcounts.tableOffset / cs + i);
  for (const b of img.core.refcounts.table) if (b) out.push(b / cs);
  for (const l2 of img.core.l1) if (l2) out.push(l2 / cs);
  return out;
}
