/**
 * Open-time cost of the `owner` scheme: a fully written image with a few internal snapshots (each taken after
 * rewriting a quarter of the disk), opened writable under `owner` and closed, several times; prints the
 * scheme's own open time (building its owner table) and the whole open, as medians.
 *
 *     npm run build && node bench/owner-open.mjs [--size MiB] [--cluster KiB] [--snapshots N] [--opens N] [--dist DIR]
 *
 * `--dist` runs another build of refcow (its dist/ directory) on the same kind of image, for a before/after.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    size: { type: "string", default: "1024" },
    cluster: { type: "string", default: "64" },
    snapshots: { type: "string", default: "4" },
    opens: { type: "string", default: "5" },
    dist: { type: "string", default: path.join(path.dirname(new URL(import.meta.url).pathname), "..", "dist") },
  },
});
const size = Number(values.size) * 2 ** 20;
const clusterSize = Number(values.cluster) * 1024;
const snapshots = Number(values.snapshots);
const opens = Number(values.opens);
if (!(size > 0) || !(clusterSize >= 512) || !(snapshots >= 0) || !(opens >= 1)) {
  console.error("owner-open: --size, --cluster, --snapshots and --opens take positive numbers");
  process.exit(1);
}
const { spread } = await import(new URL("../dist/stats/latency.js", import.meta.url).href);
const { createImagePath, openImagePath } = await import(pathToFileURL(path.join(path.resolve(values.dist), "index.js")).href);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "owner-open-"));
const file = path.join(dir, "disk.qcow2");
try {
  createImagePath(file, { size, clusterSize });
  const img = openImagePath(file, { scheme: "eager", cache: "unsafe" });
  const chunk = new Uint8Array(4 << 20);
  const fill = (from, to, value) => {
    chunk.fill(value);
    for (let off = from; off < to; off += chunk.length) img.write(off, chunk.subarray(0, Math.min(chunk.length, to - off)));
  };
  fill(0, size, 1);
  for (let i = 0; i < snapshots; i++) {
    img.snapshotCreate(`s${i}`);
    const q = ((i % 4) * size) / 4;
    fill(q, q + size / 4, 2 + i);
  }
  img.close();
  const scheme = [];
  const whole = [];
  for (let i = 0; i <= opens; i++) {
    const t = performance.now();
    const im = openImagePath(file, { scheme: "owner" });
    const ms = performance.now() - t;
    const r = im.scheme.report?.() ?? {};
    im.close();
    // The first open converts from eager's close (and, for a build that persisted its table, writes it).
    if (i === 0) continue;
    scheme.push(r.openMs ?? NaN);
    whole.push(ms);
  }
  // src/stats's median (nearest rank: the lower middle of an even count), from this checkout's build.
  const median = (a) => spread(a).median;
  const clusters = size / clusterSize;
  console.log(
    `owner open, ${values.size} MiB fully written, ${values.cluster} KiB clusters (${clusters} clusters), ${snapshots} snapshots, ` +
      `file ${(fs.statSync(file).size / 2 ** 20).toFixed(0)} MiB, median of ${opens}: scheme ${median(scheme).toFixed(1)} ms, whole open ${median(whole).toFixed(1)} ms`,
  );
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
