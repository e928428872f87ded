/**
 * The demo OS disk: where `guest-images/build-os.sh` puts it, how it gets built, and how `refcow os-image`
 * copies it into an image of the size asked.
 *
 * build-os.sh writes `os.img` (raw, sparse, 1 GiB: MBR, a FAT16 boot partition with syslinux, Debian's
 * i386 kernel and an initrd, an ext4 root partition) and `manifest.json` into `.cache/os/` of the checkout
 * (or `$REFCOW_OS_DIR`). The copy skips the blocks of zeroes, so the result stays sparse: a qcow2 written
 * through the engine allocates only the clusters that hold data; a raw file gets holes.
 */
import { closeSync, existsSync, fstatSync, ftruncateSync, openSync, readFileSync, readSync, unlinkSync, writeSync } from "node:fs";
import path from "node:path";
import { createImagePath, openImagePath } from "../open/open-path.js";
import { repoRoot, runBuildScript } from "./guest-image.js";

export interface OsImagePaths {
  dir: string;
  /** The raw disk build-os.sh made. */
  image: string;
  manifest: string;
}

export interface OsManifest {
  recipe: string;
  built: string;
  kernelRelease: string;
  /** Virtual size of os.img in bytes. */
  size: number;
  partitions: Array<{ number: number; type: string; fs: string; label: string; start: number; size: number; bootable?: boolean }>;
  cmdline: string;
  refcowIo: boolean;
}

export function osImagePaths(dir = process.env.REFCOW_OS_DIR || path.join(repoRoot(), ".cache", "os")): OsImagePaths {
  return { dir, image: path.join(dir, "os.img"), manifest: path.join(dir, "manifest.json") };
}

export function readOsManifest(p = osImagePaths()): OsManifest {
  return JSON.parse(readFileSync(p.manifest, "utf8")) as OsManifest;
}

/**
 * Makes sure the demo OS disk is built and current: runs guest-images/build-os.sh (which builds the test
 * guest first and returns at once when both are up to date). Without the script (an installed package),
 * the disk must already exist. Progress lines of the scripts go to `onProgress`.
 */
export async function ensureOsImage(options: { onProgress?: (line: string) => void; dir?: string } = {}): Promise<OsImagePaths> {
  const paths = osImagePaths(options.dir);
  const script = path.join(repoRoot(), "guest-images", "build-os.sh");
  if (!existsSync(script)) {
    if (existsSync(paths.image) && existsSync(paths.manifest)) return paths;
    throw new Error(`demo OS disk missing in ${paths.dir} and no build script at ${script}`);
  }
  await runBuildScript(script, [], { REFCOW_OS_DIR: paths.dir }, options.onProgress);
  if (!existsSync(paths.image) || !existsSync(paths.manifest)) throw new Error(`guest-images/build-os.sh succeeded but ${paths.dir} is incomplete`);
  return paths;
}

export interface WriteOsImageOptions {
  format: "qcow2" | "raw";
  /** Virtual size in bytes (default: the built disk's); at least the built disk's, a multiple of 512. */
  size?: number;
  /** qcow2 cluster size (default 64 KiB). */
  clusterSize?: number;
  onProgress?: (done: number, total: number) => void;
}

/** Block of the copy: a block of zeroes is not written. */
const BLOCK = 64 * 1024;
const CHUNK = 4 << 20;

/**
 * Copies the raw disk `source` into a new image `dest` (refused when `dest` exists). Returns the bytes of
 * data written.
 */
export function writeOsImage(source: string, dest: string, opts: WriteOsImageOptions): { size: number; dataBytes: number } {
  if (existsSync(dest)) throw new Error(`'${dest}' exists: remove it first (os-image writes a new image)`);
  const src = openSync(source, "r");
  let created = false;
  try {
    const sourceSize = fstatSync(src).size;
    if (sourceSize % 512 !== 0) throw new Error(`${source}: ${sourceSize} bytes, not whole 512-byte sectors`);
    const size = opts.size ?? sourceSize;
    if (size < sourceSize) throw new RangeError(`the size must be at least the OS disk's ${sourceSize} bytes (${sourceSize / 2 ** 20} MiB); got ${size}`);
    if (size % 512 !== 0) throw new RangeError(`the size must be a multiple of 512 bytes, got ${size}`);
    let sink: { write(offset: number, data: Uint8Array): void; close(): void };
    if (opts.format === "qcow2") {
      createImagePath(dest, { size, clusterSize: opts.clusterSize ?? 65536 });
      created = true;
      const img = openImagePath(dest, { format: "qcow2", cache: "unsafe" });
      sink = { write: (off, data) => img.write(off, data), close: () => img.close() };
    } else {
      const fd = openSync(dest, "wx");
      created = true;
      ftruncateSync(fd, size);
      sink = {
        write: (off, data) => {
          let done = 0;
          while (done < data.length) done += writeSync(fd, data, done, data.length - done, off + done);
        },
        close: () => closeSync(fd),
      };
    }
    let dataBytes = 0;
    try {
      const buf = new Uint8Array(CHUNK);
      const words = new Uint32Array(buf.buffer);
      for (let pos = 0; pos < sourceSize; pos += CHUNK) {
        const want = Math.min(CHUNK, sourceSize - pos);
        let got = 0;
        while (got < want) {
          const n = readSync(src, buf, got, want - got, pos + got);
          if (n === 0) throw new Error(`${source}: unexpected end of file at ${pos + got}`);
          got += n;
        }
        // Runs of non-zero blocks, each written as one request.
        let runStart = -1;
        for (let b = 0; b <= want; b += BLOCK) {
          const zero = b === want || isZero(words, b >>> 2, Math.min(b + BLOCK, want) >>> 2);
          if (!zero && runStart < 0) runStart = b;
          if (zero && runStart >= 0) {
            sink.write(pos + runStart, buf.subarray(runStart, b));
            dataBytes += b - runStart;
            runStart = -1;
          }
        }
        opts.onProgress?.(pos + want, sourceSize);
      }
    } finally {
      sink.close();
    }
    return { size, dataBytes };
  } catch (e) {
    if (created) {
      try {
        unlinkSync(dest);
      } catch {
        // already gone
      }
    }
    throw e;
  } finally {
    closeSync(src);
  }
}

/** Words [from, to) all zero. */
function isZero(words: Uint32Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (words[i] !== 0) return false;
  return true;
}
