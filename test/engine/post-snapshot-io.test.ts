/**
 * The I/O of one 4 KiB guest write right after a snapshot, per scheme: pinned, so that work added to the
 * post-snapshot path shows up here. Counted twice: by the engine's accounting wrapper and, independently, by
 * a counting file underneath it.
 */
import { describe, expect, it } from "vitest";
import type { BlockFile } from "../../src/io/block-file.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { Qcow2Image } from "../../src/engine/qcow2-image.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";

interface Counts {
  reads: number;
  readBytes: number;
  writes: number;
  writeBytes: number;
  flushes: number;
}

/** Counts the calls that reach the file (what a syscall trace of a real file would show). */
function countingFile(inner: BlockFile): { file: BlockFile; counts: Counts; sizes: () => number; reset(): void } {
  const counts: Counts = { reads: 0, readBytes: 0, writes: 0, writeBytes: 0, flushes: 0 };
  let sizes = 0;
  const file = Object.create(inner) as BlockFile;
  file.read = (buf, offset, purpose) => {
    counts.reads++;
    counts.readBytes += buf.length;
    return inner.read(buf, offset, purpose);
  };
  file.write = (data, offset, purpose) => {
    counts.writes++;
    counts.writeBytes += data.length;
    inner.write(data, offset, purpose);
  };
  file.flush = (purpose) => {
    counts.flushes++;
    inner.flush(purpose);
  };
  file.size = () => {
    sizes++;
    return inner.size();
  };
  return {
    file,
    counts,
    sizes: () => sizes,
    reset() {
      Object.assign(counts, { reads: 0, readBytes: 0, writes: 0, writeBytes: 0, flushes: 0 });
      sizes = 0;
    },
  };
}

function accounted(img: Qcow2Image): Counts {
  const total: Counts = { reads: 0, readBytes: 0, writes: 0, writeBytes: 0, flushes: 0 };
  for (const v of Object.values(img.stats())) {
    total.reads += v!.reads;
    total.readBytes += v!.readBytes;
    total.writes += v!.writes;
    total.writeBytes += v!.writeBytes;
    total.flushes += v!.flushes;
  }
  return total;
}

const K = 1024;
/** [first write after the snapshot (copies the L2 table), a later one (table copied already)], writethrough. */
const EXPECTED: Record<string, [Counts, Counts]> = {
  // COW read of the 60 KiB the write leaves (one 64 KiB read), the old L2 table read once (64 KiB); data
  // written whole (64 KiB), the new L2 table (64 KiB), the refcount block (64 KiB), then the L2 slice and the L1 entry (8 bytes).
  eager: [
    { reads: 2, readBytes: 128 * K, writes: 5, writeBytes: 196 * K + 8, flushes: 3 },
    { reads: 1, readBytes: 64 * K, writes: 3, writeBytes: 132 * K, flushes: 2 },
  ],
  lazy: [
    { reads: 2, readBytes: 128 * K, writes: 4, writeBytes: 132 * K + 8, flushes: 3 },
    { reads: 1, readBytes: 64 * K, writes: 2, writeBytes: 68 * K, flushes: 2 },
  ],
  "lazy-count": [
    { reads: 2, readBytes: 128 * K, writes: 4, writeBytes: 132 * K + 8, flushes: 3 },
    { reads: 1, readBytes: 64 * K, writes: 2, writeBytes: 68 * K, flushes: 2 },
  ],
  owner: [
    { reads: 2, readBytes: 128 * K, writes: 4, writeBytes: 132 * K + 8, flushes: 3 },
    { reads: 1, readBytes: 64 * K, writes: 2, writeBytes: 68 * K, flushes: 2 },
  ],
  // One transaction (512 bytes here) instead of the L2 slice, L1 entry and refcount block.
  journal: [
    { reads: 2, readBytes: 128 * K, writes: 3, writeBytes: 132 * K + 512, flushes: 2 },
    { reads: 1, readBytes: 64 * K, writes: 2, writeBytes: 68 * K + 512, flushes: 2 },
  ],
  // No COW: one record (a 512-byte header and the 4 KiB) and the write's one flush. The first write also copies
  // the L2 table (read once, written whole, its L1 entry) and makes the data log: its 4 MiB area written once
  // (4 writes of 1 MiB), its header, the refcount block, the header cluster with the extension, the 8-byte
  // feature field. The second carries the decrement of the L2 table the first copied away from (the refcount
  // block, as eager's second write does); later ones are the record alone.
  log: [
    { reads: 1, readBytes: 64 * K, writes: 11, writeBytes: 4 * 1024 * K + 512 + 3 * 64 * K + 8 + 4608 + 8, flushes: 4 },
    { reads: 0, readBytes: 0, writes: 2, writeBytes: 4608 + 64 * K, flushes: 1 },
  ],
};

describe("one 4 KiB write after a snapshot", () => {
  it("has expected counts for every registered scheme", () => {
    expect(Object.keys(EXPECTED).sort()).toEqual([...SCHEME_NAMES].sort());
  });

  for (const scheme of SCHEME_NAMES) {
    it(`${scheme}: pinned I/O, the same under the accounting wrapper and at the file`, () => {
      const mem = new MemoryFile();
      Qcow2Image.create(mem, { size: 64 << 20 });
      const under = countingFile(mem);
      const img = Qcow2Image.open(under.file, { scheme, cache: "writethrough" });
      const data = new Uint8Array(4096).fill(0x5a);
      for (let c = 0; c < 8; c++) img.write(c * 65536, data);
      img.snapshotCreate("s");
      const seen: Counts[] = [];
      for (let c = 0; c < 2; c++) {
        img.resetStats();
        under.reset();
        img.write(c * 65536 + 4096, data);
        seen.push(accounted(img));
        expect(under.counts).toEqual(seen[c]);
        // One size query at most (the allocator's overlap check of a cluster past the known end).
        expect(under.sizes()).toBeLessThanOrEqual(c === 0 ? 2 : 1);
      }
      expect(seen).toEqual(EXPECTED[scheme]);
      const back = img.read(65536, 8192);
      expect(back.subarray(0, 4096)).toEqual(data);
      expect(back.subarray(4096)).toEqual(data);
      img.close();
    });
  }
});
