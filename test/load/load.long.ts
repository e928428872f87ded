/**
 * Load: several images at once, one per scheme, served from worker threads through the request ring, each
 * taking a long random stream of reads, writes, zero writes, discards, flushes and snapshot operations with
 * requests kept in flight. Every read is checked against an in-memory model as it completes, the whole disk
 * periodically; at the end every image must be clean under qemu-img check. Prints requests per second and
 * the peak RSS of the process (its worker threads included).
 *
 *   npm run test:load                       2,000,000 requests in total
 *   LOAD_REQUESTS=500000 LOAD_DISK_MIB=16 LOAD_DEPTH=32 LOAD_CACHE=writethrough LOAD_SEED=7 npm run test:load
 */
import { afterAll, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Qcow2Image } from "../../src/open/qcow2.js";
import type { CacheMode } from "../../src/engine/types.js";
import { NodeFile } from "../../src/io/node-file.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { closeAllWorkers, type DiskClient, openServedImage } from "../../src/worker/index.js";

const env = (name: string, dflt: number) => Number(process.env[name] ?? dflt);
const TOTAL = env("LOAD_REQUESTS", 2_000_000);
const DISK = env("LOAD_DISK_MIB", 32) << 20;
const DEPTH = env("LOAD_DEPTH", 16);
const VERIFY_EVERY = env("LOAD_VERIFY_EVERY", 100_000);
const SEED = env("LOAD_SEED", 1);
const CACHE = (process.env.LOAD_CACHE ?? "writeback") as CacheMode;
const SCHEMES = (process.env.LOAD_SCHEMES ?? SCHEME_NAMES.join(",")).split(",");
const SECTOR = 512;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-load-"));
afterAll(async () => {
  await closeAllWorkers();
  fs.rmSync(dir, { recursive: true, force: true });
});

function rng(seed: number) {
  let s = (seed * 2654435761) >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

interface Counts {
  requests: number;
  reads: number;
  writes: number;
  zeroes: number;
  discards: number;
  flushes: number;
  snapshots: number;
  verifications: number;
}

/** One image's stream: `n` requests with at most DEPTH in flight, checked against the model. */
async function drive(scheme: string, index: number, n: number, counts: Counts): Promise<void> {
  const file = path.join(dir, `${scheme}.qcow2`);
  const f = NodeFile.open(file, { create: true });
  Qcow2Image.create(f, { size: DISK, clusterSize: 65536 });
  f.close();
  const disk: DiskClient = await openServedImage(file, { scheme, cache: CACHE });
  const cs = 65536;
  const random = rng(SEED * 1000 + index);
  let model = new Uint8Array(DISK);
  const snaps = new Map<string, Uint8Array>();
  let names = 0;
  const inflight: Promise<unknown>[] = [];
  const submit = async (p: Promise<unknown>) => {
    inflight.push(p);
    if (inflight.length >= DEPTH) await inflight.shift();
  };
  const drain = async () => {
    while (inflight.length) await inflight.shift();
  };
  const fail = (what: string) => {
    throw new Error(`${scheme}: ${what}`);
  };
  const verifyAll = async () => {
    await drain();
    for (let off = 0; off < DISK; off += 1 << 20) {
      const got = await disk.read(off, 1 << 20);
      if (!Buffer.from(got).equals(Buffer.from(model.buffer, off, 1 << 20))) fail(`whole-disk verification: MiB at ${off} differs from the model`);
    }
    counts.verifications++;
  };
  try {
    for (let i = 0; i < n; i++) {
      const r = random();
      const off = Math.floor(random() * (DISK / SECTOR)) * SECTOR;
      const len = Math.min(DISK - off, (1 + Math.floor(random() * 128)) * SECTOR);
      counts.requests++;
      if (r < 0.55) {
        counts.reads++;
        const want = model.slice(off, off + len);
        await submit(
          disk.read(off, len).then((got) => {
            if (!Buffer.from(got).equals(Buffer.from(want))) fail(`read of ${len} bytes at ${off} differs from what was written`);
          }),
        );
      } else if (r < 0.85) {
        counts.writes++;
        const data = new Uint8Array(len).fill(1 + (i % 251));
        model.set(data, off);
        await submit(disk.write(off, data));
      } else if (r < 0.9) {
        counts.zeroes++;
        model.fill(0, off, off + len);
        await submit(disk.writeZeroes(off, len, { unmap: random() < 0.5 }));
      } else if (r < 0.93) {
        counts.discards++;
        const a = Math.ceil(off / cs) * cs;
        const b = Math.floor((off + len) / cs) * cs;
        if (a < b) model.fill(0, a, b);
        await submit(disk.discard(off, len));
      } else if (r < 0.999) {
        counts.flushes++;
        await submit(disk.flush());
      } else {
        counts.snapshots++;
        // Few snapshots at a time: each holds the model's copy, and the owner scheme merges on delete.
        if (snaps.size < 2) {
          const name = `s${names++}`;
          snaps.set(name, model.slice());
          await submit(disk.snapshotCreate(name));
        } else {
          const all = [...snaps.keys()];
          const name = all[Math.floor(random() * all.length)];
          if (random() < 0.5) {
            model = snaps.get(name)!.slice();
            await submit(disk.snapshotApply(name));
          } else {
            await drain();
            try {
              await disk.snapshotDelete(name);
              snaps.delete(name);
            } catch (e) {
              // The owner scheme refuses to delete a snapshot with several children.
              if (!/children/.test((e as Error).message)) throw e;
            }
          }
        }
      }
      if ((i + 1) % VERIFY_EVERY === 0) await verifyAll();
    }
    await verifyAll();
  } finally {
    await drain().catch(() => {});
    await disk.close();
  }
  const check = spawnSync("qemu-img", ["check", file], { encoding: "utf8" });
  if (check.status !== 0) fail(`qemu-img check after the run exited ${check.status}:\n${check.stdout}${check.stderr}`);
}

it(`load: ${TOTAL} requests over ${SCHEMES.length} images (${SCHEMES.join(", ")}), ${CACHE}, depth ${DEPTH}`, async () => {
  const counts: Counts = { requests: 0, reads: 0, writes: 0, zeroes: 0, discards: 0, flushes: 0, snapshots: 0, verifications: 0 };
  let peakRss = process.memoryUsage().rss;
  // RSS as the run goes (each tenth of the requests): it must level off, not grow with the request count.
  const byTenth: number[] = [];
  const sampler = setInterval(() => {
    const rss = process.memoryUsage().rss;
    peakRss = Math.max(peakRss, rss);
    const tenth = Math.floor((counts.requests * 10) / TOTAL);
    if (tenth > 0 && byTenth[tenth - 1] === undefined) byTenth[tenth - 1] = rss;
  }, 200);
  const t0 = performance.now();
  try {
    await Promise.all(SCHEMES.map((s, i) => drive(s, i, Math.ceil(TOTAL / SCHEMES.length), counts)));
  } finally {
    clearInterval(sampler);
  }
  const seconds = (performance.now() - t0) / 1000;
  const maxRss = process.resourceUsage().maxRSS * 1024;
  const mem = process.memoryUsage();
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  console.log(
    `load: ${counts.requests} requests in ${seconds.toFixed(1)} s = ${(counts.requests / seconds).toFixed(0)} requests/s ` +
      `(reads ${counts.reads}, writes ${counts.writes}, zero writes ${counts.zeroes}, discards ${counts.discards}, flushes ${counts.flushes}, snapshot ops ${counts.snapshots}; ${counts.verifications} whole-disk verifications)\n` +
      `memory: peak RSS ${mib(maxRss)} (sampled ${mib(peakRss)}), at the end RSS ${mib(mem.rss)}, heap ${mib(mem.heapUsed)}, array buffers ${mib(mem.arrayBuffers)}; ` +
      `the models alone hold ${mib(SCHEMES.length * DISK * 3)} at most (disk + 2 snapshots per image)\n` +
      `RSS after each tenth of the requests: ${byTenth.map((b) => (b === undefined ? "-" : (b / 2 ** 20).toFixed(0))).join(", ")} MiB`,
  );
  // Bounded: the models (disk + two snapshots per image), the engines' caches and the rings, not the request count.
  expect(maxRss).toBeLessThan(SCHEMES.length * DISK * 3 + 1.5 * 2 ** 30);
}, 24 * 3600_000);
