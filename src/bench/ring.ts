/**
 * Ring micro-benchmark (Node): the round trip of an empty request and of a 4 KiB write through the request
 * ring to a worker thread, against calling the engine in-process; plus the CPU an idle open image costs.
 *
 *     npm run build && node dist/bench/ring.js [--requests N] [--idle S] [--cache MODE] [--client-spin US]
 *                                              [--server-spin US] [--fixed-spin] [--sized]
 *                                              [--compare-bin OTHER/dist [--reps N]]
 *
 * `refcow bench --ring` runs it with the defaults.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createImagePath, openImagePath } from "../open/open-path.js";
import type { CacheMode } from "../engine/types.js";
import { percentile } from "../stats/latency.js";
import { ImagePool } from "../worker/pool.js";
import { SizedSpin } from "../worker/ring.js";
import { buildsToCompare, formatPerRepRatios, formatSpread, orderFor, type Build } from "./compare-bin.js";
import { BenchUsageError, integerOption, nonNegativeOption, runProgram } from "./entry.js";
import { qemuCheckVerdict } from "./image-check.js";

export interface RingBenchOptions {
  /** Requests per measurement (default 20000). */
  requests?: number;
  /** Seconds of idleness over which idle CPU is measured (default 3). */
  idleSeconds?: number;
  cache?: CacheMode;
  /** Client spin (µs) and server spin (µs); defaults of DiskClient and serve loop when absent. */
  clientSpinUs?: number;
  serverSpinUs?: number;
  /** false: fixed spins instead of adaptive ones (both sides). */
  adaptiveSpin?: boolean;
  /** Spins sized from observed times (SizedSpin) with these caps, µs: the client's and the server's. */
  sized?: { clientCapUs: number; serverCapUs: number };
  /** Directory for the scratch image (default os.tmpdir()). */
  dir?: string;
}

export interface RingBenchResult {
  requests: number;
  /** Median µs per request. */
  ringNopUs: number;
  inProcessNopUs: number;
  ringWrite4kUs: number;
  inProcessWrite4kUs: number;
  /** 90th percentiles, µs. */
  ringNopP90Us: number;
  ringWrite4kP90Us: number;
  /** Median µs per stage of the ring's empty request: call→submit, submit→worker start, worker, worker end→caller. */
  nopStagesUs: { submit: number; pickup: number; serve: number; complete: number };
  /** Process CPU (all threads) while one image sat open and idle, in % of one core. */
  idleCpuPercent: number;
  idleSeconds: number;
  /** ms the client spun while idle (sized spins only report it). */
  idleClientSpinMs: number;
  sized: boolean;
}

const IMAGE_SIZE = 256 * 1024 * 1024;
const REGION = 64 * 1024 * 1024; // 4 KiB writes cycle over this (pre-allocated) region

export async function runRingBench(opts: RingBenchOptions = {}): Promise<RingBenchResult> {
  const n = opts.requests ?? 20000;
  const idleSeconds = opts.idleSeconds ?? 3;
  const cache = opts.cache ?? "writeback";
  const dir = fs.mkdtempSync(path.join(opts.dir ?? os.tmpdir(), "refcow-ring-bench-"));
  const file = path.join(dir, "bench.qcow2");
  try {
    createImagePath(file, { size: IMAGE_SIZE });
    const block = new Uint8Array(4096).fill(0xa5);
    const offsets = new Array<number>(n);
    for (let i = 0; i < n; i++) offsets[i] = ((i * 4099) % (REGION / 4096)) * 4096;

    // Pre-allocate the region so that both sides measure in-place writes.
    {
      const disk = openImagePath(file, { cache });
      const mb = new Uint8Array(1 << 20);
      for (let off = 0; off < REGION; off += mb.length) disk.write(off, mb);
      disk.close();
    }

    // In-process: the same requests, made synchronously on this thread (an await per request, as a caller would).
    const inProc = openImagePath(file, { cache });
    const empty = new Uint8Array(0);
    const inNop = await timeEach(n, async () => {
      inProc.readInto(empty, 0);
    });
    const inWrite = await timeEach(n, async (i) => {
      inProc.write(offsets[i], block);
    });
    inProc.close();

    const pool = new ImagePool();
    try {
      const client = await pool.open(file, {
        cache,
        client: { spinUs: opts.clientSpinUs, adaptiveSpin: opts.adaptiveSpin, sizedSpinCapUs: opts.sized?.clientCapUs },
        serverSpinUs: opts.serverSpinUs,
        serverAdaptiveSpin: opts.adaptiveSpin,
        serverSizedSpinCapUs: opts.sized?.serverCapUs,
      });
      // Warm up (JIT, page cache).
      for (let i = 0; i < 2000; i++) await client.nop();
      for (let i = 0; i < 2000; i++) await client.write(offsets[i], block);
      const stages = { submit: [] as number[], pickup: [] as number[], serve: [] as number[], complete: [] as number[] };
      client.onTiming = (_op, t) => {
        stages.submit.push(t.submitted - t.called);
        stages.pickup.push(t.workerStart - t.submitted);
        stages.serve.push(t.workerEnd - t.workerStart);
        stages.complete.push(t.completed - t.workerEnd);
      };
      const ringNop = await timeEach(n, () => client.nop());
      client.onTiming = undefined;
      const ringWrite = await timeEach(n, async (i) => {
        await client.write(offsets[i], block);
      });

      // Idle: the image stays open; nothing is asked of it.
      await new Promise((r) => setTimeout(r, 1000)); // let both sides' bounded spins and the GC after the loops end
      const cpu0 = process.cpuUsage();
      const spun0 = client.ring.spunMs;
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, idleSeconds * 1000));
      const cpu = process.cpuUsage(cpu0);
      const elapsedMs = performance.now() - t0;
      const idleClientSpinMs = client.ring.spunMs - spun0;
      await client.close();
      return {
        requests: n,
        ringNopUs: median(ringNop),
        inProcessNopUs: median(inNop),
        ringWrite4kUs: median(ringWrite),
        inProcessWrite4kUs: median(inWrite),
        ringNopP90Us: percentile(ringNop, 90),
        ringWrite4kP90Us: percentile(ringWrite, 90),
        nopStagesUs: {
          submit: median(stages.submit.map((x) => x * 1000)),
          pickup: median(stages.pickup.map((x) => x * 1000)),
          serve: median(stages.serve.map((x) => x * 1000)),
          complete: median(stages.complete.map((x) => x * 1000)),
        },
        idleCpuPercent: ((cpu.user + cpu.system) / 1000 / elapsedMs) * 100,
        idleSeconds,
        idleClientSpinMs,
        sized: opts.sized !== undefined,
      };
    } finally {
      await pool.destroy();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** One build's figures in one repetition of the comparison. */
export interface RingCompareRun {
  build: string;
  rep: number;
  /** Median µs per request. */
  nopUs: number;
  write4kUs: number;
  /** qemu-img check of the image after the build's run. */
  check: string;
}

/**
 * This build against another (`--compare-bin`): in each repetition both open the same pre-allocated image
 * in a worker of their own, in alternating order, and make the same requests — `requests` empty requests,
 * then `requests` 4 KiB in-place writes, each awaited — after the same warm-up. qemu-img check then reads
 * the image the build closed.
 */
export async function runRingCompare(opts: RingBenchOptions & { reps: number; builds: Build[] }): Promise<RingCompareRun[]> {
  const n = opts.requests ?? 20000;
  const cache = opts.cache ?? "writeback";
  const dir = fs.mkdtempSync(path.join(opts.dir ?? os.tmpdir(), "refcow-ring-compare-"));
  const file = path.join(dir, "bench.qcow2");
  const runs: RingCompareRun[] = [];
  try {
    createImagePath(file, { size: IMAGE_SIZE });
    const block = new Uint8Array(4096).fill(0xa5);
    const offsets = Array.from({ length: n }, (_, i) => ((i * 4099) % (REGION / 4096)) * 4096);
    {
      const disk = openImagePath(file, { cache });
      const mb = new Uint8Array(1 << 20);
      for (let off = 0; off < REGION; off += mb.length) disk.write(off, mb);
      disk.close();
    }
    for (let rep = 0; rep < opts.reps; rep++) {
      for (const build of orderFor(opts.builds, rep)) {
        const { ImagePool: Pool } = await build.load<{ ImagePool: typeof ImagePool }>("worker/pool.js");
        const pool = new Pool();
        try {
          const client = await pool.open(file, { cache, client: { spinUs: opts.clientSpinUs }, serverSpinUs: opts.serverSpinUs });
          for (let i = 0; i < 2000; i++) await client.nop();
          for (let i = 0; i < 2000; i++) await client.write(offsets[i]!, block);
          const nop = await timeEach(n, () => client.nop());
          const write = await timeEach(n, (i) => client.write(offsets[i]!, block));
          await client.close();
          runs.push({ build: build.label, rep, nopUs: median(nop), write4kUs: median(write), check: qemuCheckVerdict(file) });
        } finally {
          await pool.destroy();
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return runs;
}

export function formatRingCompare(runs: RingCompareRun[], builds: Build[]): string {
  const of = (label: string, k: "nopUs" | "write4kUs") => runs.filter((r) => r.build === label).sort((a, b) => a.rep - b.rep).map((r) => r[k]);
  const lines = ["| figure | this build µs | other build µs | this/other | per repetition |", "|---|---|---|---|---|"];
  for (const [k, name] of [["nopUs", "ring round trip (empty request)"], ["write4kUs", "4 KiB in-place write"]] as const) {
    const a = of("this", k);
    const b = of("other", k);
    lines.push(`| ${name} | ${formatSpread(a)} | ${formatSpread(b)} | ${formatPerRepRatios(a, b)} |`);
  }
  const checks = [...new Set(runs.map((r) => r.check))];
  return [
    `this: ${builds[0]!.dist}`,
    `other: ${builds[1]!.dist}`,
    ...lines,
    `(median µs per request of each repetition, then the median (min–max) over ${Math.max(...runs.map((r) => r.rep)) + 1} repetitions; ` +
      `ratios per repetition, builds alternating first; qemu-img check after every run: ${checks.join(", ")}; host load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")})`,
  ].join("\n");
}

/** µs per call of `f(i)`, each awaited (every source pays the same await, whether its call is synchronous or not). */
export async function timeEach(n: number, f: (i: number) => unknown): Promise<number[]> {
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await f(i);
    out[i] = (performance.now() - t) * 1000;
  }
  return out;
}

const median = (xs: number[]) => percentile(xs, 50);

export function formatRingBench(r: RingBenchResult): string {
  const f = (x: number) => x.toFixed(1);
  return [
    `ring round trip: ${f(r.ringNopUs)} us (in-process call: ${f(r.inProcessNopUs)} us)  [p90 ${f(r.ringNopP90Us)} us]`,
    `ring 4 KiB write: ${f(r.ringWrite4kUs)} us (in-process: ${f(r.inProcessWrite4kUs)} us)  [p90 ${f(r.ringWrite4kP90Us)} us]`,
    `  empty request stages (median us): submit ${f(r.nopStagesUs.submit)}, worker pick-up ${f(r.nopStagesUs.pickup)}, ` +
      `serve ${f(r.nopStagesUs.serve)}, completion to caller ${f(r.nopStagesUs.complete)}`,
    `idle image CPU: ${r.idleCpuPercent.toFixed(2)} % of one core over ${r.idleSeconds} s (whole process)${r.sized ? `; the client spun ${r.idleClientSpinMs.toFixed(3)} ms of it` : ""}`,
    `spins: ${r.sized ? "sized from observed times (SizedSpin)" : "fixed adaptive"}; host load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
    `(${r.requests} requests per measurement, median per request)`,
  ].join("\n");
}

const USAGE = `usage: node dist/bench/ring.js [options]

The round trip of an empty request and of a 4 KiB write through the request ring to a worker thread, against
calling the engine in-process; then the CPU an open, idle image costs.

  --requests N        requests per measurement (default 20000)
  --idle S            seconds over which idle CPU is measured (default 3)
  --cache MODE        writeback, writethrough or unsafe (default writeback)
  --client-spin US    the client's spin before it sleeps, µs
  --server-spin US    the serve loop's spin before it sleeps, µs
  --fixed-spin        fixed spins instead of adaptive ones (both sides)
  --sized             spins sized from observed times, capped at SizedSpin's caps, as the guest runs them
  --compare-bin DIR   also run another build (its dist/), repetitions interleaved: round trip and 4 KiB
                      write, this/other per repetition (no idle or in-process figures)
  --reps N            repetitions of the comparison (default 3)
  -h, --help          this text
`;

runProgram(
  import.meta.url,
  {
    name: "ring bench",
    usage: USAGE,
    options: {
      requests: { type: "string" },
      idle: { type: "string" },
      cache: { type: "string" },
      "client-spin": { type: "string" },
      "server-spin": { type: "string" },
      "fixed-spin": { type: "boolean" },
      sized: { type: "boolean" },
      "compare-bin": { type: "string" },
      reps: { type: "string" },
    },
  },
  async (v) => {
    const cache = v.cache;
    if (cache !== undefined && cache !== "writeback" && cache !== "writethrough" && cache !== "unsafe") throw new BenchUsageError("--cache must be writeback, writethrough or unsafe");
    const requests = nonNegativeOption("requests", v.requests);
    const opts: RingBenchOptions = {
      requests: requests === undefined ? undefined : Math.max(1, Math.floor(requests)),
      idleSeconds: nonNegativeOption("idle", v.idle),
      cache,
      clientSpinUs: nonNegativeOption("client-spin", v["client-spin"]),
      serverSpinUs: nonNegativeOption("server-spin", v["server-spin"]),
      adaptiveSpin: v["fixed-spin"] ? false : undefined,
      sized: v.sized ? { clientCapUs: SizedSpin.CLIENT_CAP_US, serverCapUs: SizedSpin.SERVER_CAP_US } : undefined,
    };
    if (v["compare-bin"] !== undefined) {
      const builds = buildsToCompare(v["compare-bin"]);
      const runs = await runRingCompare({ ...opts, reps: integerOption("reps", v.reps) ?? 3, builds });
      process.stdout.write(formatRingCompare(runs, builds) + "\n");
      return;
    }
    process.stdout.write(formatRingBench(await runRingBench(opts)) + "\n");
  },
);
