#!/usr/bin/env node
/**
 * refcow nbd against qemu-nbd under fio, repeated and interleaved: the queue-depth benchmark of `refcow bench`
 * (src/bench/matrix.ts fioMatrix: the same file preparation, the same server command lines, the same fio
 * iolog replay of one 4 KiB write per 64 KiB cluster in random order with a flush every 64 writes), run
 * `--reps` times with the servers alternating inside each repetition, so that both see the same machine.
 * Prints, per phase and iodepth, each repetition's IOPS and clat p50/p99 and the ratio refcow / qemu-nbd, then
 * the median (min–max) of each.
 *
 *   node bench/nbd-fio.mjs [--reps 3] [--clusters 2000] [--depths 1,16] [--cache writeback] [--dir DIR]
 *                          [--refcow-args "--serve=ring"]   (extra arguments for refcow nbd)
 *
 * Needs `npm run build`, qemu-nbd and fio with its nbd engine.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runFio } from "../dist/bench/fio.js";
import { writeOffsets, WRITE } from "../dist/bench/load.js";
import { betweenPhases, nbdServerCommand, prepareFile } from "../dist/bench/sources.js";
import { NbdClient } from "../dist/nbd/client.js";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const reps = Number(opt("--reps", "3"));
const n = Number(opt("--clusters", "2000"));
const depths = opt("--depths", "1,16").split(",").map(Number);
const cache = opt("--cache", "writeback");
const refcowExtra = (opt("--refcow-args", "") ?? "").split(" ").filter(Boolean);
const dir = opt("--dir", fs.mkdtempSync(path.join(os.tmpdir(), "nbd-fio-")));

const sources = [
  { label: "refcow nbd", spec: { source: "refcow", scheme: "eager", transport: "nbd" }, extra: refcowExtra },
  { label: "qemu-nbd", spec: { source: "qemu", scheme: "std", transport: "nbd" }, extra: [] },
];

async function start(src, file, socket) {
  fs.rmSync(socket, { force: true });
  const [cmd, a] = nbdServerCommand(src.spec, file, socket, cache);
  const argv = src.extra.length ? [...a.slice(0, -1), ...src.extra, a[a.length - 1]] : a;
  const child = spawn(cmd, argv, { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  const exited = new Promise((r) => child.once("exit", r));
  for (let t0 = Date.now(); ; ) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited: ${err}`);
    if (fs.existsSync(socket)) {
      try {
        await (await NbdClient.connect(socket)).close();
        break;
      } catch {}
    }
    if (Date.now() - t0 > 30000) throw new Error(`${cmd} did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return async () => {
    child.kill("SIGTERM");
    await exited;
    if (child.exitCode !== 0 && child.signalCode !== "SIGTERM") throw new Error(`${cmd} ended with ${child.exitCode ?? child.signalCode}: ${err}`);
  };
}

const results = []; // { rep, depth, phase, source, iops, p50, p99 }
for (let rep = 1; rep <= reps; rep++) {
  for (const depth of depths) {
    const order = rep % 2 ? sources : [...sources].reverse();
    for (const src of order) {
      const file = path.join(dir, `${src.spec.source}.img`);
      const socket = path.join(dir, "fio.sock");
      prepareFile(src.spec, file, n);
      for (const phase of ["in-place", "post-snapshot"]) {
        if (phase === "post-snapshot") betweenPhases(src.spec, file, "snapshot");
        const stop = await start(src, file, socket);
        try {
          const r = await runFio(socket, writeOffsets(n, "rand4k-per-cluster", 1234), WRITE, cache, depth, path.join(dir, "fio"));
          results.push({ rep, depth, phase, source: src.label, iops: r.iops, p50: r.clat_p50_us, p99: r.clat_p99_us });
          process.stderr.write(`rep ${rep} qd${depth} ${phase} ${src.label}: ${Math.round(r.iops)} IOPS, clat p50 ${r.clat_p50_us.toFixed(1)} µs p99 ${r.clat_p99_us.toFixed(1)} µs\n`);
        } finally {
          await stop();
        }
      }
      fs.rmSync(file, { force: true });
    }
  }
}

const med = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const k = (x) => (x >= 1000 ? `${(x / 1000).toFixed(1)}k` : x.toFixed(0));
console.log(`fio randwrite 4k (iolog, one write per 64 KiB cluster, flush every 64), ${cache}, ${n} writes per phase, ${reps} interleaved repetitions${refcowExtra.length ? `, refcow nbd ${refcowExtra.join(" ")}` : ""}`);
console.log("| phase | iodepth | rep | refcow IOPS | p50/p99 µs | qemu-nbd IOPS | p50/p99 µs | ratio |");
console.log("|---|---|---|---|---|---|---|---|");
for (const phase of ["in-place", "post-snapshot"]) {
  for (const depth of depths) {
    const ratios = [];
    const rf = [];
    const qm = [];
    for (let rep = 1; rep <= reps; rep++) {
      const r = results.find((x) => x.rep === rep && x.depth === depth && x.phase === phase && x.source === "refcow nbd");
      const q = results.find((x) => x.rep === rep && x.depth === depth && x.phase === phase && x.source === "qemu-nbd");
      ratios.push(r.iops / q.iops);
      rf.push(r.iops);
      qm.push(q.iops);
      console.log(`| ${phase} | ${depth} | ${rep} | ${k(r.iops)} | ${r.p50.toFixed(0)}/${r.p99.toFixed(0)} | ${k(q.iops)} | ${q.p50.toFixed(0)}/${q.p99.toFixed(0)} | ${(r.iops / q.iops).toFixed(2)} |`);
    }
    const mm = (xs, f) => `${f(med(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`;
    console.log(`| ${phase} | ${depth} | median | ${mm(rf, k)} | | ${mm(qm, k)} | | ${mm(ratios, (x) => x.toFixed(2))} |`);
  }
}
fs.rmSync(dir, { recursive: true, force: true });
