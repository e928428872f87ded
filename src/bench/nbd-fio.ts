/**
 * refcow nbd against qemu-nbd under fio, repeated and interleaved: the queue-depth benchmark of `refcow bench`
 * (src/bench/fio-matrix.ts: the same file preparation, the same server command lines, the same fio
 * iolog replay of one 4 KiB write per 64 KiB cluster in random order with a flush every 64 writes), run
 * `--reps` times with the servers alternating inside each repetition, so that both see the same machine.
 * `--pattern randwrite` runs fio's own random 4 KiB writes instead (rw=randwrite, a fixed seed, so the same
 * sequence for every server) over the first 64 MiB of the image, which is fully allocated before the clock;
 * `--writes` of them per run (a flush every 64 under writeback).
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
 *   node dist/bench/nbd-fio.js [--reps 3] [--clusters 2000] [--depths 1,16] [--phases in-place,post-snapshot]
 *                              [--cache writeback] [--dir DIR]
 *                              [--refcow-args "--serve=ring"]   (extra arguments for refcow nbd)
 *                              [--compare-bin OTHER/dist/cli/bin.js [--compare-args "..."]]
 *   --compare-bin: a second refcow nbd (another build, say the commit before a change) in the same
 *                  repetitions, interleaved with the others; its tables follow (vs qemu-nbd, and refcow / it).
 *   --pattern iolog | randwrite   the workload (default iolog); --writes N: randwrite's writes per run
 *   --strace   after the repetitions, one more run of each server and depth with strace -f -c attached:
 *              its fdatasync/fsync/pwrite counts per write (an oracle that did not produce the IOPS; the
 *              run's own figures are not in the tables)
 *   --cache writeback | writethrough | unsafe   the servers' --cache (writeback: a flush every 64 writes;
 *                                               otherwise none)
 *   --tls on | both    the servers with TLS: the same --object tls-creds-x509,...,verify-peer=off for both,
 *                      with a CA and a server certificate made by openssl for the run; fio's URI
 *                      nbds+unix:///?socket=...&tls-verify-peer=false (fio's nbd engine does not let libnbd
 *                      read local files, so no tls-psk-file= or tls-certificates=: the client neither shows
 *                      a certificate nor checks the server's, the data is encrypted all the same: both
 *                      servers negotiate TLS 1.3 with AES-256-GCM). both: each server with and without TLS in
 *                      the same repetitions, with tables of refcow vs qemu-nbd over TLS and of each server's
 *                      TLS against its plaintext
 *
 * Every image is checked with qemu-img check after each phase, once its server has closed it; a run stops at
 * the first that is not clean. Needs `npm run build`, qemu-img, qemu-nbd and fio with its nbd engine.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import type { CacheMode } from "../engine/types.js";
import { NbdClient } from "../nbd/client.js";
import type { SourceSpec } from "../report/results.js";
import { spread } from "../stats/latency.js";
import { BenchUsageError, integerOption, progress, runProgram } from "./entry.js";
import { type FioResult, runFio, runFioRandwrite } from "./fio.js";
import { qemuCheckVerdict } from "./image-check.js";
import { CLUSTER, FLUSH_EVERY, WRITE, writeOffsets } from "./load.js";
import { betweenPhases, nbdServerCommand, prepareFile } from "./sources.js";

const USAGE = `usage: node dist/bench/nbd-fio.js [options]

refcow nbd against qemu-nbd under fio (4 KiB random writes, one per 64 KiB cluster, an iolog replay), in place
and after a snapshot, repeated with the servers alternating; IOPS, clat p50/p99 and the servers' CPU time per
request, each repetition and the median (min–max). Every image is checked with qemu-img check after each phase.

  --reps N                 repetitions (default 3)
  --clusters N             writes per phase (default 2000)
  --depths a,b             fio iodepths (default 1,16)
  --pattern P              iolog (the default) or randwrite: fio's rw=randwrite, 4 KiB, fixed seed, over the
                           first 64 MiB of the image, fully allocated before the clock
  --writes N               randwrite's writes per run (default 8192)
  --phases a,b             in-place and/or post-snapshot (default both)
  --strace                 one more run of each server and depth under strace -f -c: syscalls per write
  --cache MODE             the servers' --cache: writeback (a flush every 64 writes), writethrough or unsafe
                           (default writeback)
  --dir DIR                scratch directory (default: a new one under the system's temporary directory)
  --refcow-args "..."      extra arguments for refcow nbd (as --refcow-args "--serve=ring")
  --compare-bin FILE       a second refcow (OTHER/dist/cli/bin.js) in the same repetitions, interleaved
  --compare-args "..."     extra arguments for it
  --tls on|both            serve over TLS (X.509; both: with and without, interleaved)
  -h, --help               this text
`;

const ALL_PHASES = ["in-place", "post-snapshot"] as const;
/** randwrite's region: 64 MiB, all of it allocated before the clock. */
const RANDWRITE_REGION = 64 * 1024 * 1024;

/** A server under test: how it is labelled, what it serves, its extra arguments and another build's bin.js. */
interface Server {
  label: string;
  spec: SourceSpec;
  extra: string[];
  bin?: string;
  /** Served over TLS: the x509 credentials directory. */
  tlsDir?: string;
}

/** A credentials directory for tls-creds-x509,endpoint=server: a CA and a server certificate it signed. */
function x509Dir(dir: string): string {
  const d = path.join(dir, "tls");
  fs.mkdirSync(d, { recursive: true });
  const openssl = (args: string[]): void => {
    execFileSync("openssl", args, { cwd: d, stdio: ["ignore", "ignore", "pipe"] });
  };
  openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca-cert.pem", "-days", "2", "-subj", "/CN=bench CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
  openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server-key.pem", "-out", "server.csr", "-subj", "/CN=localhost"]);
  fs.writeFileSync(path.join(d, "server.ext"), "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n");
  openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-out", "server-cert.pem", "-days", "2", "-extfile", "server.ext"]);
  return d;
}

function tlsServerArgs(tlsDir: string): string[] {
  return ["--object", `tls-creds-x509,id=tls0,dir=${tlsDir},endpoint=server,verify-peer=off`, "--tls-creds=tls0"];
}

function fioUri(socket: string, tlsDir?: string): string | undefined {
  return tlsDir ? `nbds+unix:///?socket=${socket}&tls-verify-peer=false` : undefined;
}

/** Whether a Unix socket accepts a connection (closed at once: a TLS server would refuse a plaintext client). */
function accepts(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.createConnection(socket, () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

/** One fio run of one server. */
interface FioFigures {
  rep: number;
  depth: number;
  phase: string;
  source: string;
  iops: number;
  p50: number;
  p99: number;
  /** The server's CPU time per request, µs. */
  cpu: number;
}

/** CPU time of process `pid` so far: scheduler run time summed over its threads (ns), and user/system ticks. */
function cpuOf(pid: number): { runNs: number; utime: number; stime: number } {
  let runNs = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      runNs += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // a thread that has just ended
    }
  }
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { runNs, utime: Number(f[11]), stime: Number(f[12]) };
}
const TICK_MS = 1000 / 100; // sysconf(_SC_CLK_TCK) is 100 on Linux

/** strace -f -c's summary of process `pid` (every thread) while `run` runs: calls of each syscall. */
async function straceCounts(pid: number, run: () => Promise<FioResult>, out: string): Promise<{ writes: number; perWrite: number; calls(name: string): number }> {
  const tracer = spawn("strace", ["-f", "-c", "-o", out, "-p", String(pid)], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  tracer.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const ended = new Promise((r) => tracer.once("exit", r));
  // strace says "Process N attached" on stderr once it traces the process.
  for (let t0 = Date.now(); !err.includes("attached"); ) {
    if (tracer.exitCode !== null || Date.now() - t0 > 10000) throw new Error(`strace did not attach: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  let r: FioResult;
  try {
    r = await run();
  } finally {
    tracer.kill("SIGINT");
    await ended;
  }
  const calls = new Map<string, number>();
  let total = 0;
  for (const line of fs.readFileSync(out, "utf8").split("\n")) {
    // % time, seconds, usecs/call, calls, [errors,] syscall
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || !/^\d/.test(f[0]!)) continue;
    const name = f[f.length - 1]!;
    const count = Number(f[3]);
    if (name === "total") total = count;
    else calls.set(name, count);
  }
  return { writes: r.writes, perWrite: total / r.writes, calls: (name) => calls.get(name) ?? 0 };
}

/** Starts `src`'s server on `file` and waits until it accepts a connection. */
async function start(src: Server, file: string, socket: string, cache: CacheMode): Promise<{ stop: () => Promise<void>; pid: number }> {
  fs.rmSync(socket, { force: true });
  const [cmd, a0] = nbdServerCommand(src.spec, file, socket, cache);
  const a = src.bin ? [src.bin, ...a0.slice(1)] : a0; // refcow's command line starts with its bin.js
  const extra = [...src.extra, ...(src.tlsDir ? tlsServerArgs(src.tlsDir) : [])];
  const argv = extra.length ? [...a.slice(0, -1), ...extra, a[a.length - 1]!] : a;
  const child: ChildProcess = spawn(cmd, argv, { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise((r) => child.once("exit", r));
  for (let t0 = Date.now(); ; ) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited: ${err}`);
    if (fs.existsSync(socket)) {
      if (src.tlsDir) {
        if (await accepts(socket)) break;
      } else {
        try {
          await (await NbdClient.connect(socket)).close();
          break;
        } catch {
          // not listening yet
        }
      }
    }
    if (Date.now() - t0 > 30000) throw new Error(`${cmd} did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const stop = async () => {
    child.kill("SIGTERM");
    await exited;
    if (child.exitCode !== 0 && child.signalCode !== "SIGTERM") throw new Error(`${cmd} ended with ${child.exitCode ?? child.signalCode}: ${err}`);
  };
  return { stop, pid: child.pid! };
}

runProgram(
  import.meta.url,
  {
    name: "nbd-fio",
    usage: USAGE,
    options: {
      reps: { type: "string" },
      clusters: { type: "string" },
      depths: { type: "string" },
      phases: { type: "string" },
      cache: { type: "string" },
      dir: { type: "string" },
      "refcow-args": { type: "string" },
      "compare-bin": { type: "string" },
      "compare-args": { type: "string" },
      tls: { type: "string" },
      pattern: { type: "string" },
      writes: { type: "string" },
      strace: { type: "boolean" },
    },
  },
  async (values) => {
    const reps = integerOption("reps", values.reps) ?? 3;
    const n = integerOption("clusters", values.clusters) ?? 2000;
    const pattern = values.pattern ?? "iolog";
    if (pattern !== "iolog" && pattern !== "randwrite") throw new BenchUsageError("--pattern takes iolog or randwrite");
    const writes = integerOption("writes", values.writes) ?? 8192;
    const PHASES = (values.phases ?? ALL_PHASES.join(",")).split(",");
    for (const ph of PHASES) if (!(ALL_PHASES as readonly string[]).includes(ph)) throw new BenchUsageError(`--phases takes ${ALL_PHASES.join(", ")}`);
    const depths = (values.depths ?? "1,16").split(",").map((d) => integerOption("depths", d)!);
    const cache = values.cache ?? "writeback";
    if (cache !== "writeback" && cache !== "writethrough" && cache !== "unsafe") throw new BenchUsageError("--cache takes writeback, writethrough or unsafe");
    const refcowExtra = (values["refcow-args"] ?? "").split(" ").filter(Boolean);
    const dir = values.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "nbd-fio-"));
    const compareBin = values["compare-bin"];
    const compareExtra = (values["compare-args"] ?? "").split(" ").filter(Boolean);

    const tlsMode = values.tls;
    if (tlsMode !== undefined && tlsMode !== "on" && tlsMode !== "both") throw new BenchUsageError("--tls takes on or both");
    const tlsDir = tlsMode ? x509Dir(dir) : undefined;

    const refcow: Server = { label: "refcow nbd", spec: { source: "refcow", scheme: "eager", transport: "nbd" }, extra: refcowExtra };
    const qemu: Server = { label: "qemu-nbd", spec: { source: "qemu", scheme: "std", transport: "nbd" }, extra: [] };
    const sources: Server[] = tlsMode === "on" ? [] : [refcow, qemu];
    if (tlsDir) sources.push({ ...refcow, label: "refcow nbd TLS", tlsDir }, { ...qemu, label: "qemu-nbd TLS", tlsDir });
    if (compareBin) sources.push({ label: "refcow nbd (compare)", spec: refcow.spec, extra: compareExtra, bin: path.resolve(compareBin), tlsDir: tlsMode === "on" ? tlsDir : undefined });

    const results: FioFigures[] = [];
    const checks: string[] = []; // qemu-img check of each image after each phase
    const straced: string[] = []; // the --strace run's counts
    const runOne = (socket: string, depth: number, uri: string | undefined): Promise<FioResult> =>
      pattern === "randwrite"
        ? runFioRandwrite(socket, { region: RANDWRITE_REGION, bs: WRITE, writes, fsyncEvery: cache === "writeback" ? FLUSH_EVERY : 0, seed: 1234 }, depth, path.join(dir, "fio"), uri)
        : runFio(socket, writeOffsets(n, "rand4k-per-cluster", 1234), WRITE, cache, depth, path.join(dir, "fio"), uri);
    // randwrite: the 64 MiB region is written in full before the clock (prepareFile writes the first n clusters).
    const prepared = pattern === "randwrite" ? RANDWRITE_REGION / CLUSTER : n;
    for (let rep = 1; rep <= reps + (values.strace ? 1 : 0); rep++) {
      const underStrace = rep > reps;
      for (const depth of depths) {
        const order = rep % 2 ? sources : [...sources].reverse();
        for (const src of order) {
          const file = path.join(dir, `${src.spec.source}.img`);
          const socket = path.join(dir, "fio.sock");
          prepareFile(src.spec, file, prepared);
          for (const phase of PHASES) {
            if (phase === "post-snapshot") betweenPhases(src.spec, file, "snapshot");
            const { stop, pid } = await start(src, file, socket, cache);
            try {
              if (underStrace) {
                const counts = await straceCounts(pid, () => runOne(socket, depth, fioUri(socket, src.tlsDir)), path.join(dir, "strace.txt"));
                const syncs = counts.calls("fdatasync") + counts.calls("fsync");
                const pwrites = counts.calls("pwrite64") + counts.calls("pwritev") + counts.calls("pwritev2");
                straced.push(`| ${phase} | ${depth} | ${src.label} | ${counts.writes} | ${counts.calls("fdatasync")} | ${counts.calls("fsync")} | ${(syncs / counts.writes).toFixed(3)} | ${(pwrites / counts.writes).toFixed(2)} | ${counts.perWrite.toFixed(1)} |`);
              } else {
                const c0 = cpuOf(pid);
                const r = await runOne(socket, depth, fioUri(socket, src.tlsDir));
                const c1 = cpuOf(pid);
                const reqs = r.writes + r.syncs;
                const cpu = (c1.runNs - c0.runNs) / 1000 / reqs;
                const user = (c1.utime - c0.utime) * TICK_MS;
                const sys = (c1.stime - c0.stime) * TICK_MS;
                results.push({ rep, depth, phase, source: src.label, iops: r.iops, p50: r.clat_p50_us, p99: r.clat_p99_us, cpu });
                progress(
                  `rep ${rep} qd${depth} ${phase} ${src.label}: ${Math.round(r.iops)} IOPS, clat p50 ${r.clat_p50_us.toFixed(1)} µs p99 ${r.clat_p99_us.toFixed(1)} µs, ` +
                    `CPU ${cpu.toFixed(1)} µs/request (run time; user ${user} ms + sys ${sys} ms = ${(((user + sys) * 1000) / reqs).toFixed(1)} µs/request over ${reqs} requests)`,
                );
              }
            } finally {
              await stop();
            }
            // The figures count only from an image qemu-img finds clean once its server has closed it.
            const verdict = qemuCheckVerdict(file);
            checks.push(`${src.label} rep ${underStrace ? "strace" : rep} qd${depth} ${phase}: ${verdict}`);
            if (verdict !== "clean") throw new Error(`qemu-img check of ${src.label}'s image after rep ${rep} qd${depth} ${phase}: ${verdict}`);
          }
          fs.rmSync(file, { force: true });
        }
      }
    }

    // Over the repetitions: src/stats's median (nearest rank: the lower middle of an even count).
    const med = (xs: number[]) => spread(xs).median;
    const k = (x: number) => (x >= 1000 ? `${(x / 1000).toFixed(1)}k` : x.toFixed(0));
    const table = (a: string, b: string) => {
      console.log(`| phase | iodepth | rep | ${a} IOPS | p50/p99 µs | CPU µs/req | ${b} IOPS | p50/p99 µs | CPU µs/req | IOPS ratio | CPU ratio |`);
      console.log("|---|---|---|---|---|---|---|---|---|---|---|");
      for (const phase of PHASES) {
        for (const depth of depths) {
          const ratios: number[] = [];
          const rf: number[] = [];
          const qm: number[] = [];
          const rc: number[] = [];
          const qc: number[] = [];
          const cr: number[] = [];
          const lat = { r50: [] as number[], r99: [] as number[], q50: [] as number[], q99: [] as number[] };
          for (let rep = 1; rep <= reps; rep++) {
            const r = results.find((x) => x.rep === rep && x.depth === depth && x.phase === phase && x.source === a)!;
            const q = results.find((x) => x.rep === rep && x.depth === depth && x.phase === phase && x.source === b)!;
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
          const mm = (xs: number[], f: (x: number) => string) => {
            const s = spread(xs);
            return `${f(s.median)} (${f(s.min)}–${f(s.max)})`;
          };
          const f1 = (x: number) => x.toFixed(1);
          const f2 = (x: number) => x.toFixed(2);
          console.log(
            `| ${phase} | ${depth} | median (min–max) | ${mm(rf, k)} | ${med(lat.r50).toFixed(0)}/${med(lat.r99).toFixed(0)} | ${mm(rc, f1)} | ${mm(qm, k)} | ${med(lat.q50).toFixed(0)}/${med(lat.q99).toFixed(0)} | ${mm(qc, f1)} | ${mm(ratios, f2)} | ${mm(cr, f2)} |`,
          );
        }
      }
    };
    const workload =
      pattern === "randwrite"
        ? `fio rw=randwrite bs=4k over a fully allocated 64 MiB, fixed seed${cache === "writeback" ? ", fsync every 64" : ""}), ${cache}, ${writes} writes per phase`
        : `fio randwrite 4k (iolog, one write per 64 KiB cluster${cache === "writeback" ? ", flush every 64" : ""}), ${cache}, ${n} writes per phase`;
    console.log(`${workload}, ${reps} interleaved repetitions${refcowExtra.length ? `, refcow nbd ${refcowExtra.join(" ")}` : ""}; load average at the end ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
    console.log("CPU: the server process's run time over all its threads during the fio run, per request (writes + flushes)");
    if (tlsMode !== "on") table("refcow nbd", "qemu-nbd");
    if (tlsMode) {
      console.log(`\nOver TLS (X.509, TLS 1.3 AES-256-GCM as fio's libnbd negotiates it with each server):`);
      table("refcow nbd TLS", "qemu-nbd TLS");
    }
    if (tlsMode === "both") {
      console.log("\nThe cost of TLS, refcow nbd (ratio: with TLS / without):");
      table("refcow nbd TLS", "refcow nbd");
      console.log("\nThe cost of TLS, qemu-nbd (ratio: with TLS / without):");
      table("qemu-nbd TLS", "qemu-nbd");
    }
    if (compareBin) {
      const base = tlsMode === "on" ? "refcow nbd TLS" : "refcow nbd";
      const other = tlsMode === "on" ? "qemu-nbd TLS" : "qemu-nbd";
      console.log(`\nrefcow nbd (compare): ${compareBin}${compareExtra.length ? ` ${compareExtra.join(" ")}` : ""}`);
      table("refcow nbd (compare)", other);
      console.log("");
      table(base, "refcow nbd (compare)");
    }
    if (straced.length) {
      console.log("\nstrace -f -c attached to each server for one more run (not in the tables above), calls per fio write:");
      console.log("| phase | iodepth | server | writes | fdatasync | fsync | syncs per write | pwrite per write | syscalls per write |");
      console.log("|---|---|---|---|---|---|---|---|---|");
      for (const l of straced) console.log(l);
    }
    console.log(`\nqemu-img check after every phase: ${checks.length} images, all clean`);
    fs.rmSync(dir, { recursive: true, force: true });
  },
);
