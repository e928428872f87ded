#!/usr/bin/env node
/**
 * refcow nbd against qemu-nbd under fio, repeated and interleaved: the queue-depth benchmark of `refcow bench`
 * (src/bench/matrix.ts fioMatrix: the same file preparation, the same server command lines, the same fio
 * iolog replay of one 4 KiB write per 64 KiB cluster in random order with a flush every 64 writes), run
 * `--reps` times with the servers alternating inside each repetition, so that both see the same machine.
 * Prints, per phase and iodepth, each repetition's IOPS and clat p50/p99 and the ratio refcow / qemu-nbd, then
 * the median (min–max) of each (of clat: the median p50 and the median p99), and the CPU time each server spent
 * per request.
 *
 * CPU per request: the whole server process (every thread: the socket's, the engine's, V8's and libuv's), read
 * just before fio starts and just after it ends, divided by the requests fio completed (writes + flushes). Two
 * readings of the same quantity: the sum over the process's threads of the scheduler's run time
 * (/proc/PID/task/TID/schedstat, nanoseconds; the column), and user + system time from /proc/PID/stat
 * (clock ticks, so 10 ms steps: about 5 µs per request at 2000 requests; the per-run line on stderr). Time
 * on a CPU does not grow when the machine is busy the way wall-clock latency does, so it compares the two
 * servers like for like under load.
 *
 *   node bench/nbd-fio.mjs [--reps 3] [--clusters 2000] [--depths 1,16] [--cache writeback] [--dir DIR]
 *                          [--refcow-args "--serve=ring"]   (extra arguments for refcow nbd)
 *                          [--compare-bin OTHER/dist/cli/bin.js [--compare-args "..."]]
 *   --compare-bin: a second refcow nbd (another build, say the commit before a change) in the same
 *                  repetitions, interleaved with the others; its tables follow (vs qemu-nbd, and refcow / it).
 *   --cache writeback | writethrough | unsafe   the servers' --cache (writeback: a flush every 64 writes;
 *                                               otherwise none)
 *
 * Every image is checked with qemu-img check after each phase, once its server has closed it; a run stops at
 * the first that is not clean. Needs `npm run build`, qemu-img, qemu-nbd and fio with its nbd engine.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runFio } from "../dist/bench/fio.js";
import { writeOffsets, WRITE } from "../dist/bench/load.js";
import { qemuCheckVerdict } from "../dist/bench/matrix.js";
import { betweenPhases, nbdServerCommand, prepareFile } from "../dist/bench/sources.js";
import { NbdClient } from "../dist/nbd/client.js";
import { spread } from "../dist/stats/latency.js";

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

const compareBin = opt("--compare-bin", undefined);
const compareExtra = (opt("--compare-args", "") ?? "").split(" ").filter(Boolean);

const sources = [
  { label: "refcow nbd", spec: { source: "refcow", scheme: "eager", transport: "nbd" }, extra: refcowExtra },
  { label: "qemu-nbd", spec: { source: "qemu", scheme: "std", transport: "nbd" }, extra: [] },
];
if (compareBin) sources.push({ label: "refcow nbd (compare)", spec: sources[0].spec, extra: compareExtra, bin: path.resolve(compareBin) });

/** CPU time of process `pid` so far: scheduler run time summed over its threads (ns), and user/system ticks. */
function cpuOf(pid) {
  let runNs = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      runNs += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {} // a thread that has just ended
  }
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { runNs, utime: Number(f[11]), stime: Number(f[12]) };
}
const TICK_MS = 1000 / 100; // sysconf(_SC_CLK_TCK) is 100 on Linux

async function start(src, file, socket) {
  fs.rmSync(socket, { force: true });
  const [cmd, a0] = nbdServerCommand(src.spec, file, socket, cache);
  const a = src.bin ? [src.bin, ...a0.slice(1)] : a0; // refcow's command line starts with its bin.js
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
  const stop = async () => {
    child.kill("SIGTERM");
    await exited;
    if (child.exitCode !== 0 && child.signalCode !== "SIGTERM") throw new Error(`${cmd} ended with ${child.exitCode ?? child.signalCode}: ${err}`);
  };
  return { stop, pid: child.pid };
}

const results = []; // { rep, depth, phase, source, iops, p50, p99 }
const checks = []; // qemu-img check of each image after each phase
for (let rep = 1; rep <= reps; rep++) {
  for (const depth of depths) {
    const order = rep % 2 ? sources : [...sources].reverse();
    for (const src of order) {
      const file = path.join(dir, `${src.spec.source}.img`);
      const socket = path.join(dir, "fio.sock");
      prepareFile(src.spec, file, n);
      for (const phase of ["in-place", "post-snapshot"]) {
        if (phase === "post-snapshot") betweenPhases(src.spec, file, "snapshot");
        const { stop, pid } = await start(src, file, socket);
        try {
          const offsets = writeOffsets(n, "rand4k-per-cluster", 1234);
          const c0 = cpuOf(pid);
          const r = await runFio(socket, offsets, WRITE, cache, depth, path.join(dir, "fio"));
          const c1 = cpuOf(pid);
          const reqs = r.writes + r.syncs;
          const cpu = (c1.runNs - c0.runNs) / 1000 / reqs;
          const user = (c1.utime - c0.utime) * TICK_MS;
          const sys = (c1.stime - c0.stime) * TICK_MS;
          results.push({ rep, depth, phase, source: src.label, iops: r.iops, p50: r.clat_p50_us, p99: r.clat_p99_us, cpu });
          process.stderr.write(
            `rep ${rep} qd${depth} ${phase} ${src.label}: ${Math.round(r.iops)} IOPS, clat p50 ${r.clat_p50_us.toFixed(1)} µs p99 ${r.clat_p99_us.toFixed(1)} µs, ` +
              `CPU ${cpu.toFixed(1)} µs/request (run time; user ${user} ms + sys ${sys} ms = ${(((user + sys) * 1000) / reqs).toFixed(1)} µs/request over ${reqs} requests)\n`,
          );
        } finally {
          await stop();
        }
        // The figures count only from an image qemu-img finds clean once its server has closed it.
        const verdict = qemuCheckVerdict(file);
        checks.push(`${src.label} rep ${rep} qd${depth} ${phase}: ${verdict}`);
        if (verdict !== "clean") throw new Error(`qemu-img check of ${src.label}'s image after rep ${rep} qd${depth} ${phase}: ${verdict}`);
      }
      fs.rmSync(file, { force: true });
    }
  }
}

// Over the repetitions: src/stats's median (nearest rank: the lower middle of an even count).
const med = (xs) => spread(xs).median;
const k = (x) => (x >= 1000 ? `${(x / 1000).toFixed(1)}k` : x.toFixed(0));
console.log(`fio randwrite 4k (iolog, one write per 64 KiB cluster${cache === "writeback" ? ", flush every 64" : ""}), ${cache}, ${n} writes per phase, ${reps} interleaved repetitions${refcowExtra.length ? `, refcow nbd ${refcowExtra.join(" ")}` : ""}; load average at the end ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
console.log("CPU: the server process's run time over all its threads during the fio run, per request (writes + flushes)");
table("refcow nbd", "qemu-nbd");
if (compareBin) {
  console.log(`\nrefcow nbd (compare): ${compareBin}${compareExtra.length ? ` ${compareExtra.join(" ")}` : ""}`);
  table("refcow nbd (compare)", "qemu-nbd");
  console.log("");
  table("refcow nbd", "refcow nbd (compare)");
}

function table(a, b) {
  console.log(`| phase | iodepth | rep | ${a} IOPS | p50/p99 µs | CPU µs/req | ${b} IOPS | p50/p99 µs | CPU µs/req | IOPS ratio | CPU ratio |`);
  console.log("|---|---|---|---|---|---|---|---|---|---|---|");
  for (const phase of ["in-place", "post-snapshot"]) {
    for (const depth of depths) {
      const ratios = [];
      const rf = [];
      const qm = [];
      const rc = [];
      const qc = [];
      const cr = [];
      const lat = { r50: [], r99: [], q50: [], q99: [] };
      for (let rep = 1; rep <= reps; rep++) {
        const r = results.find((x) => x.rep === rep && x.depth === depth && x.phase === phase && x.source === a);
        const q = results.find((x) => x.rep === rep && x.depth === depth && x.phase === phase && x.source === b);
        ratios.push(r.iops / q.iops);
        rf.push(r.iops);
        qm.push(q.iops);
        rc.push(r.cpu);
        qc.push(q.cpu);
        cr.push(r.cpu / q.cpu);
        lat.r50.push(r.p50);
        lat.r99.push(r.p99);
        lat.q50.push(q.p50);
        lat.q99.push(q.p99);
        console.log(
          `| ${phase} | ${depth} | ${rep} | ${k(r.iops)} | ${r.p50.toFixed(0)}/${r.p99.toFixed(0)} | ${r.cpu.toFixed(1)} | ${k(q.iops)} | ${q.p50.toFixed(0)}/${q.p99.toFixed(0)} | ${q.cpu.toFixed(1)} | ${(r.iops / q.iops).toFixed(2)} | ${(r.cpu / q.cpu).toFixed(2)} |`,
        );
      }
      const mm = (xs, f) => {
        const s = spread(xs);
        return `${f(s.median)} (${f(s.min)}–${f(s.max)})`;
      };
      const f1 = (x) => x.toFixed(1);
      const f2 = (x) => x.toFixed(2);
      console.log(
        `| ${phase} | ${depth} | median (min–max) | ${mm(rf, k)} | ${med(lat.r50).toFixed(0)}/${med(lat.r99).toFixed(0)} | ${mm(rc, f1)} | ${mm(qm, k)} | ${med(lat.q50).toFixed(0)}/${med(lat.q99).toFixed(0)} | ${mm(qc, f1)} | ${mm(ratios, f2)} | ${mm(cr, f2)} |`,
      );
    }
  }
}
console.log(`\nqemu-img check after every phase: ${checks.length} images, all clean`);
fs.rmSync(dir, { recursive: true, force: true });
