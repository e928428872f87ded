/**
 * Valid images the fuzzer starts from, made by QEMU and by refcow: snapshots, compressed clusters (zlib and
 * zstd), zero clusters, extended L2, version 2, 1- and 64-bit refcounts, a backing file reference, and each
 * scheme's on-disk leftovers (a live journal, dirty images of the lazy schemes, an owner table as an earlier
 * owner format left it).
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { withLegacyOwnerTable } from "../helpers/legacy-owner.js";

export interface SeedImage {
  name: string;
  bytes: Uint8Array;
}

/** The backing file the overlay seed names (relative: it must sit next to every mutant). */
export const BACKING_NAME = "fuzz-base.qcow2";

function qemuImg(args: string[], cwd: string): void {
  execFileSync("qemu-img", args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
}

function qemuIo(file: string, commands: string[], cwd: string): void {
  execFileSync("qemu-io", [...commands.flatMap((c) => ["-c", c]), file], { cwd, stdio: ["ignore", "pipe", "pipe"] });
}

/** An image made by QEMU: created with `create` (options, then the size), then qemu-io commands and snapshots in order. */
function qemuSeed(dir: string, name: string, create: string[], steps: (string | { snapshot: string })[]): SeedImage {
  const file = path.join(dir, `${name}.qcow2`);
  qemuImg(["create", "-q", "-f", "qcow2", ...create.slice(0, -1), file, create[create.length - 1]], dir);
  for (const s of steps) {
    if (typeof s === "string") qemuIo(file, [s], dir);
    else qemuImg(["snapshot", "-c", s.snapshot, file], dir);
  }
  // A plain Uint8Array: Buffer.slice() would share memory with the seed.
  return { name, bytes: new Uint8Array(fs.readFileSync(file)) };
}

/** An image made by refcow with a scheme, left open (`crashed`: its bytes as a dying process leaves them) or closed. */
function refcowSeed(name: string, scheme: string, opts: { clusterSize: number; size: number }, crashed: boolean, last?: (img: Qcow2Image) => void): SeedImage {
  const mem = new MemoryFile();
  Qcow2Image.create(mem, { size: opts.size, clusterSize: opts.clusterSize });
  const img = Qcow2Image.open(mem, { scheme, cache: "writeback" });
  const cs = opts.clusterSize;
  img.write(0, new Uint8Array(3 * cs).fill(0x11));
  img.write(opts.size - cs, new Uint8Array(cs).fill(0x22));
  img.snapshotCreate("one");
  img.write(cs, new Uint8Array(cs).fill(0x33));
  img.writeZeroes(2 * cs, cs);
  img.snapshotCreate("two", { vmState: new Uint8Array(1000).fill(0x44) });
  img.write(cs / 2, new Uint8Array(cs).fill(0x55));
  img.discard(opts.size - cs, cs);
  last?.(img);
  img.flush();
  if (crashed) return { name, bytes: mem.contents() };
  img.close();
  return { name, bytes: mem.contents() };
}

/** Builds every seed image; the backing file they need is written to `dir`. */
export function buildSeedImages(dir: string): SeedImage[] {
  const seeds: SeedImage[] = [];
  // QEMU-made.
  seeds.push(
    qemuSeed(dir, "qemu-v3", ["-o", "cluster_size=4096", "4M"], [
      "write -P 1 0 64k",
      "write -P 2 1M 8k",
      { snapshot: "a" },
      "write -c -P 3 128k 4k",
      "write -z 0 8k",
      "write -P 4 3M 4k",
      { snapshot: "b" },
      "write -P 5 4k 4k",
    ]),
  );
  seeds.push(qemuSeed(dir, "qemu-extl2", ["-o", "cluster_size=32k,extended_l2=on", "4M"], ["write -P 1 0 3k", "write -P 2 40k 1k", { snapshot: "a" }, "write -P 3 1k 1k", "write -z 64k 8k"]));
  seeds.push(qemuSeed(dir, "qemu-v2", ["-o", "compat=0.10,cluster_size=4096", "2M"], ["write -P 1 0 16k", { snapshot: "a" }, "write -P 2 4k 4k"]));
  seeds.push(qemuSeed(dir, "qemu-zstd", ["-o", "compression_type=zstd,cluster_size=8192", "2M"], ["write -c -P 7 0 32k", "write -P 8 64k 8k"]));
  seeds.push(qemuSeed(dir, "qemu-rc64", ["-o", "refcount_bits=64,cluster_size=512", "256k"], ["write -P 1 0 4k", { snapshot: "a" }, "write -P 2 512 512"]));
  seeds.push(qemuSeed(dir, "qemu-rc1", ["-o", "refcount_bits=1,cluster_size=4096", "1M"], ["write -P 1 0 12k"]));
  const base = path.join(dir, BACKING_NAME);
  qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", base, "2M"], dir);
  qemuIo(base, ["write -P 9 0 1M"], dir);
  seeds.push(qemuSeed(dir, "qemu-overlay", ["-o", "cluster_size=4096", "-b", BACKING_NAME, "-F", "qcow2", "2M"], ["write -P 1 4k 4k", { snapshot: "a" }, "write -P 2 8k 4k"]));
  // refcow-made, one per scheme; the lazy ones and the journal as a killed process leaves them.
  const g = { clusterSize: 4096, size: 1 << 20 };
  seeds.push(refcowSeed("refcow-eager", "eager", g, false));
  seeds.push(refcowSeed("refcow-journal-live", "journal", { clusterSize: 2048, size: 1 << 20 }, true));
  // The data log with records a killed writer left (its writes after the last snapshot).
  seeds.push(
    refcowSeed("refcow-log-live", "log", g, true, (img) => {
      img.snapshotCreate("three");
      for (let i = 0; i < 4; i++) img.write(i * 4096 + 512 * i, new Uint8Array(1024 + 512 * i).fill(0x60 + i));
    }),
  );
  const owner = refcowSeed("refcow-owner", "owner", g, false);
  seeds.push(owner, { name: "refcow-owner-legacy", bytes: withLegacyOwnerTable(owner.bytes) });
  seeds.push(refcowSeed("refcow-lazy-dirty", "lazy", g, true));
  seeds.push(refcowSeed("refcow-lazy-count-dirty", "lazy-count", { clusterSize: 1024, size: 256 << 10 }, true));
  // On disk too: `compare` takes a mutant and its seed.
  for (const s of seeds) fs.writeFileSync(seedPath(dir, s), s.bytes);
  return seeds;
}

export function seedPath(dir: string, s: SeedImage): string {
  return path.join(dir, `${s.name}.seed.qcow2`);
}
