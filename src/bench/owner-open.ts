/**
 * Open-time cost of the `owner` scheme: a fully written image with a few internal snapshots (each taken after
 * rewriting a quarter of the disk), opened writable under `owner` and closed, several times; prints the
 * scheme's own open time (building its owner table) and the whole open, as medians.
 *
 *     npm run build && node dist/bench/owner-open.js [--size MiB] [--cluster KiB] [--snapshots N] [--opens N] [--dist DIR]
 *
 * `--dist` runs another build of refcow (its dist/ directory) on the same kind of image, for a before/after.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Qcow2Image } from "../open/qcow2.js";
import { spread } from "../stats/latency.js";
import { BenchUsageError, runProgram } from "./entry.js";

/** What this benchmark needs of a build of refcow: its library entry's path functions. */
type RefcowBuild = Pick<typeof import("../index.js"), "createImagePath" | "openImagePath">;

/** This build's dist/ directory (this module runs from dist/bench/). */
const THIS_DIST = fileURLToPath(new URL("..", import.meta.url));

const USAGE = `usage: node dist/bench/owner-open.js [options]

Open-time cost of the owner scheme: a fully written image with internal snapshots (each after rewriting a
quarter of the disk), opened under owner and closed several times; the medians of the scheme's own open time
and of the whole open.

  --size MiB        virtual size, all of it written (default 1024)
  --cluster KiB     cluster size (default 64)
  --snapshots N     internal snapshots (default 4)
  --opens N         timed opens, after a first one that converts from eager (default 5)
  --dist DIR        another build of refcow (its dist/ directory) to time instead of this one
  -h, --help        this text
`;

runProgram(
  import.meta.url,
  {
    name: "owner-open",
    usage: USAGE,
    options: {
      size: { type: "string", default: "1024" },
      cluster: { type: "string", default: "64" },
      snapshots: { type: "string", default: "4" },
      opens: { type: "string", default: "5" },
      dist: { type: "string", default: THIS_DIST },
    },
  },
  async (values) => {
    const size = Number(values.size) * 2 ** 20;
    const clusterSize = Number(values.cluster) * 1024;
    const snapshots = Number(values.snapshots);
    const opens = Number(values.opens);
    if (!(size > 0) || !(clusterSize >= 512) || !(snapshots >= 0) || !(opens >= 1)) throw new BenchUsageError("--size, --cluster, --snapshots and --opens take positive numbers");
    const { createImagePath, openImagePath } = (await import(pathToFileURL(path.join(path.resolve(values.dist), "index.js")).href)) as RefcowBuild;

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "owner-open-"));
    const file = path.join(dir, "disk.qcow2");
    try {
      createImagePath(file, { size, clusterSize });
      const img = openImagePath(file, { scheme: "eager", cache: "unsafe" });
      const chunk = new Uint8Array(4 << 20);
      const fill = (from: number, to: number, value: number) => {
        chunk.fill(value);
        for (let off = from; off < to; off += chunk.length) img.write(off, chunk.subarray(0, Math.min(chunk.length, to - off)));
      };
      fill(0, size, 1);
      for (let i = 0; i < snapshots; i++) {
        (img as Qcow2Image).snapshotCreate(`s${i}`);
        const q = ((i % 4) * size) / 4;
        fill(q, q + size / 4, 2 + i);
      }
      img.close();
      const scheme: number[] = [];
      const whole: number[] = [];
      for (let i = 0; i <= opens; i++) {
        const t = performance.now();
        const im = openImagePath(file, { scheme: "owner" }) as Qcow2Image;
        const ms = performance.now() - t;
        const r = im.core.scheme.report?.() ?? {};
        im.close();
        // The first open converts from eager's close (and, for a build that persisted its table, writes it).
        if (i === 0) continue;
        scheme.push(r.openMs ?? NaN);
        whole.push(ms);
      }
      // src/stats's median (nearest rank: the lower middle of an even count).
      const median = (a: number[]) => spread(a).median;
      const clusters = size / clusterSize;
      console.log(
        `owner open, ${values.size} MiB fully written, ${values.cluster} KiB clusters (${clusters} clusters), ${snapshots} snapshots, ` +
          `file ${(fs.statSync(file).size / 2 ** 20).toFixed(0)} MiB, median of ${opens}: scheme ${median(scheme).toFixed(1)} ms, whole open ${median(whole).toFixed(1)} ms`,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
);
