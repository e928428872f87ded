// A small benchmark matrix run in one process, for test/bench/oracles.test.ts to watch under strace.
//
//   node test/bench/strace-bench.mjs DIST OUT.json KEEP_DIR
//
// Every Qcow2Image.stats() call (the bench reads the accounting right before and right after each measured
// phase) first stats a path under /refcow-strace-marker/, so the phase's system calls lie between two marker
// lines of the trace. Images the bench deletes are moved into KEEP_DIR instead, for qemu-img check.
import fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import path from "node:path";

const [dist, out, keep] = process.argv.slice(2);
const { Qcow2Image } = await import(path.resolve(dist, "engine/qcow2-image.js"));
const { runMatrix } = await import(path.resolve(dist, "bench/matrix.js"));
const { defaultOptions } = await import(path.resolve(dist, "bench/options.js"));

let marks = 0;
const stats = Qcow2Image.prototype.stats;
Qcow2Image.prototype.stats = function (...args) {
  try {
    fs.statSync(`/refcow-strace-marker/${marks++}`);
  } catch {}
  return stats.apply(this, args);
};

let kept = 0;
const rmSync = fs.rmSync;
fs.rmSync = (p, o) => {
  if (typeof p === "string" && /\.(qcow2|img)(\.crashed)?$/.test(p) && fs.existsSync(p)) fs.renameSync(p, path.join(keep, `${kept++}-${path.basename(p)}`));
  else rmSync(p, o);
};
syncBuiltinESMExports();

const opts = {
  ...defaultOptions(true),
  clusters: 12,
  reps: 1,
  allocs: ["first-fit", "append"],
  inProcess: true,
  workloads: ["rand4k-per-cluster"],
  qemu: false,
  qemuOrder: false,
  fio: false,
  opSizes: [4 << 20],
  dir: path.join(keep, "work"),
};
const { rows } = await runMatrix(opts);
fs.writeFileSync(out, JSON.stringify({ clusters: opts.clusters, rows, marks }));
