/**
 * The I/O of one 4 KiB guest write right after a snapshot, per scheme: pinned, so that work added to the
 * post-snapshot path shows up here. Counted three times: by the engine's accounting wrapper, by a counting
 * file underneath it, and by the kernel: the same writes through the command line (`refcow io`) on a real
 * file under `strace -c`, less a baseline run that opens the image and ends without them.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BlockFile } from "../../src/io/block-file.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import { INCOMPAT_DIRTY } from "../../src/format/features.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { assertBuilt, REFCOW_BIN, tempDir } from "../cli/qemu-harness.js";

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
  // written whole (64 KiB), the new L2 table (64 KiB), the one 4 KiB page of the refcount block that changed (the
  // block is written back by its changed pages: metadata-cache.ts), then the L2 slice and the L1 entry (8 bytes).
  // Two flushes in the first write, not three: the slice lies in the copied table, which no L1 entry on the
  // disk points to yet, so the flush before the L1 entry orders data, count and slice at once (write-order.ts).
  eager: [
    { reads: 2, readBytes: 128 * K, writes: 5, writeBytes: 136 * K + 8, flushes: 2 },
    { reads: 1, readBytes: 64 * K, writes: 3, writeBytes: 72 * K, flushes: 2 },
  ],
  lazy: [
    { reads: 2, readBytes: 128 * K, writes: 4, writeBytes: 132 * K + 8, flushes: 2 },
    { reads: 1, readBytes: 64 * K, writes: 2, writeBytes: 68 * K, flushes: 2 },
  ],
  "lazy-count": [
    { reads: 2, readBytes: 128 * K, writes: 4, writeBytes: 132 * K + 8, flushes: 2 },
    { reads: 1, readBytes: 64 * K, writes: 2, writeBytes: 68 * K, flushes: 2 },
  ],
  owner: [
    { reads: 2, readBytes: 128 * K, writes: 4, writeBytes: 132 * K + 8, flushes: 2 },
    { reads: 1, readBytes: 64 * K, writes: 2, writeBytes: 68 * K, flushes: 2 },
  ],
  // One transaction (512 bytes here) instead of the L2 slice, L1 entry and refcount block.
  journal: [
    { reads: 2, readBytes: 128 * K, writes: 3, writeBytes: 132 * K + 512, flushes: 2 },
    { reads: 1, readBytes: 64 * K, writes: 2, writeBytes: 68 * K + 512, flushes: 2 },
  ],
  // No COW: one record (a 512-byte header and the 4 KiB) and the write's one flush. The data log exists already
  // (made by the snapshot create, or by an open that finds snapshots: LOG_MADE_AT_OPEN). The first write also
  // copies the L2 table (read once, written whole with the changed page of its refcount block, a flush, its L1 entry) and sets the
  // 8-byte feature field, which rides the record's flush. The second carries the decrement of the L2 table the
  // first copied away from (its refcount block page, as eager's second write does); later ones are the record alone.
  log: [
    { reads: 1, readBytes: 64 * K, writes: 5, writeBytes: 64 * K + 4 * K + 8 + 8 + 4608, flushes: 2 },
    { reads: 0, readBytes: 0, writes: 2, writeBytes: 4608 + 4 * K, flushes: 1 },
  ],
};

/**
 * What a writable open of an image with snapshots adds under `log`, beside eager's open of the same image: the
 * data log made off the write path (its 4 MiB area written once in 4 writes of 1 MiB, its header, the refcount
 * block, a flush, the header cluster with the extension and its flush).
 */
const LOG_MADE_AT_OPEN = { pwrites: 7, fdatasyncs: 2 };

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

// ------------------------------------------------------------------------------------------ the kernel's view

// strace installed (test/setup/ensure-bench-tools.sh) and allowed to trace here.
const hasStrace = spawnSync("strace", ["-f", "-qq", "-o", "/dev/null", "true"]).status === 0;

/** Calls per system call from an `strace -c` summary (the column "calls"). */
function straceSummary(text: string): Record<string, number> {
  const calls: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 5 && /^[0-9.]+$/.test(f[0]!) && /^[a-z_0-9]+$/.test(f[f.length - 1]!) && f[f.length - 1] !== "total") calls[f[f.length - 1]!] = Number(f[3]);
  }
  return calls;
}

/**
 * `refcow io` in this process's place under `strace -f -c`: opens `image` under `scheme` in writethrough, runs
 * `cmds`, then `sigraise 9` — the process ends as a crash does, without the close, whose write-back after the
 * writes (lazy's refcount blocks, journal's checkpoint, log's apply) a close without them would not do. The
 * pwrite64 and fdatasync calls the kernel saw.
 */
function traced(scheme: string, image: string, cmds: string[]): Promise<{ pwrites: number; fdatasyncs: number; stdout: string }> {
  const log = `${image}.strace`;
  const args = ["-f", "-c", "-o", log, "-e", "trace=pwrite64,pread64,fdatasync,fsync", process.execPath, REFCOW_BIN, "io", "--in-process", "--scheme", scheme, "-t", "writethrough"];
  for (const c of [...cmds, "sigraise 9"]) args.push("-c", c);
  args.push(image);
  return new Promise((resolve, reject) => {
    const child = spawn("strace", args, { cwd: path.dirname(image), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", () => {
      try {
        const calls = straceSummary(fs.readFileSync(log, "utf8"));
        // The image's own syncs are fdatasync (NodeFile.flush); an fsync would be counted as a flush too.
        resolve({ pwrites: calls["pwrite64"] ?? 0, fdatasyncs: (calls["fdatasync"] ?? 0) + (calls["fsync"] ?? 0), stdout });
      } catch (e) {
        reject(new Error(`strace of ${scheme} left no summary (${(e as Error).message}); stderr: ${stderr}`));
      }
    });
  });
}

describe("the same writes through refcow io, as strace counts them", () => {
  let dir: string;
  let prepared: string;
  beforeAll(() => {
    if (!hasStrace && !process.env.CI) return;
    assertBuilt();
    dir = tempDir("post-snapshot-strace");
    // The pinned test's image: 8 clusters with 4 KiB each, snapshot "s" (here closed, on a real file).
    prepared = path.join(dir, "prepared.qcow2");
    createImagePath(prepared, { size: 64 << 20 });
    const img = openImagePath(prepared, { scheme: "eager" }) as Qcow2Image;
    const data = new Uint8Array(4096).fill(0x5a);
    for (let c = 0; c < 8; c++) img.write(c * 65536, data);
    img.snapshotCreate("s");
    img.close();
  });
  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it(
    "pwrite64 and fdatasync of the two pinned writes, less an open that ends without them, per scheme",
    async () => {
      expect(hasStrace, "strace, the kernel-side oracle of this test: npm test installs it (test/setup/ensure-bench-tools.sh), or apt-get install strace").toBe(true);
      const WRITES = ["write -P 0x5a 4k 4k", "write -P 0x5a 68k 4k"];
      const runs = await Promise.all(
        SCHEME_NAMES.map(async (scheme) => {
          const copy = (tag: string) => {
            const f = path.join(dir, `${scheme}-${tag}.qcow2`);
            fs.copyFileSync(prepared, f);
            return f;
          };
          const baseImage = copy("base");
          const writeImage = copy("writes");
          const [base, writes] = await Promise.all([traced(scheme, baseImage, []), traced(scheme, writeImage, WRITES)]);
          const dirty = (f: string) => {
            const b = fs.readFileSync(f);
            return (new DataView(b.buffer, b.byteOffset).getBigUint64(72) & INCOMPAT_DIRTY) !== 0n;
          };
          return { scheme, base, writes, dirty: { base: dirty(baseImage), writes: dirty(writeImage) } };
        }),
      );
      const eagerBase = runs.find((r) => r.scheme === "eager")!.base;
      const logBase = runs.find((r) => r.scheme === "log")!.base;
      expect({ pwrites: logBase.pwrites - eagerBase.pwrites, fdatasyncs: logBase.fdatasyncs - eagerBase.fdatasyncs }).toEqual(LOG_MADE_AT_OPEN);
      for (const { scheme, base, writes, dirty } of runs) {
        expect(writes.stdout.match(/^wrote 4096\/4096 bytes/gm), scheme).toHaveLength(2);
        const [first, second] = EXPECTED[scheme]!;
        const expected = { pwrites: first.writes + second.writes, fdatasyncs: first.flushes + second.flushes };
        if (scheme === "lazy") {
          // The first write of this open sets the dirty bit (the 8-byte feature field, and its flush): in the
          // pinned test the writes before the snapshot, in the same open, had set it.
          expect(dirty).toEqual({ base: false, writes: true });
          expected.pwrites += 1;
          expected.fdatasyncs += 1;
        }
        expect({ scheme, pwrites: writes.pwrites - base.pwrites, fdatasyncs: writes.fdatasyncs - base.fdatasyncs }).toEqual({ scheme, ...expected });
      }
    },
    60_000,
  );
});
