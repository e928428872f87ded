/**
 * Where a 4 KiB in-place write through the request ring spends its time (writeback), against what it cannot
 * avoid: the engine's own time and the disk's (a raw pwrite).
 *
 * Sources, all writing the same 4 KiB blocks at the same offsets over a 64 MiB region written in full before
 * the clock, one request at a time, each awaited (an await per request for every source, as a caller makes):
 *   raw pwrite             fs.writeSync on a raw file in this thread: the floor
 *   engine in-process      the engine's write on the qcow2 image in this thread, no ring
 *   raw in-process         the raw-file disk (RawDisk) in this thread, no ring
 *   qcow2 via ring         the qcow2 image served by a worker through the ring (DiskClient.write)
 *   raw via ring           the raw file served by a worker through the same ring
 *   nop via ring           an empty request: the ring's own round trip
 * With --compare-bin, the ring sources of another build too. The sources run in every repetition, in an
 * order that alternates between repetitions; figures are the median over the requests of one run; the
 * tables give the median (min–max) over the repetitions and per-repetition ratios.
 *
 * Stages of a ring request (the ring's timestamps, one clock): encode = called → published (the copy into
 * the slot, the slot's fields); pick-up = published → the server began (its wake-up or spin); serve = the
 * server's time on the request (the engine, or the raw write); publish+wake = the server finished → the
 * client handed the result over (publication, the client's wake-up or spin, the reap); resume = handed over
 * → the awaiting caller runs again (its promise's continuation).
 *
 * qemu-img check reads the qcow2 image after every run of a ring source that wrote it.
 *
 *   node dist/bench/ring-breakdown.js [--requests N] [--reps N] [--compare-bin OTHER/dist]
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { SyncDisk } from "../disk/sync-disk.js";
import { createImagePath, openImagePath } from "../open/open-path.js";
import { percentile } from "../stats/latency.js";
import type { ImagePool } from "../worker/pool.js";
import type { RequestTiming } from "../worker/ring-client.js";
import { buildsToCompare, formatPerRepRatios, formatSpread, orderFor, type Build } from "./compare-bin.js";
import { integerOption, nonNegativeOption, progress, runProgram } from "./entry.js";
import { qemuCheckVerdict } from "./image-check.js";
import { timeEach } from "./ring.js";

const REGION = 64 * 1024 * 1024;
const BLOCK = 4096;
const WARM_UP = 2000;
/** A stage this short was caught by a spin (a futex wake-up of either thread takes several µs). */
const CAUGHT_US = 2;

/** The stages of a ring request, µs (medians over a run). */
interface Stages {
  encode: number;
  pickup: number;
  serve: number;
  complete: number;
  resume: number;
  /** % of requests the serving thread picked up within 2 µs (its spin caught them: no wake-up). */
  pickupCaught: number;
  /** % of completions that reached the caller within 2 µs of the server's end (the client's spin caught them). */
  completeCaught: number;
}

/** The ring's spins (absent: each side's default). */
export interface Spins {
  clientUs?: number;
  serverUs?: number;
  adaptive?: boolean;
}

/** One source's figures in one repetition. */
interface Run {
  source: string;
  rep: number;
  /** Median µs per request. */
  us: number;
  stages?: Stages;
}

const median = (xs: number[]) => percentile(xs, 50);

/** Writes the first 64 MiB of `disk` in full (both files are prepared the same way). */
function fillRegion(disk: SyncDisk): void {
  const mb = new Uint8Array(1 << 20).fill(0x5a);
  for (let off = 0; off < REGION; off += mb.length) disk.write(off, mb);
  disk.flush();
}

/** Runs the n writes through a ring client of `build` on `file`, timing every stage. */
async function ringRun(build: Build, file: string, format: "qcow2" | "raw", what: "write" | "nop", n: number, offsets: number[], block: Uint8Array, spins: Spins): Promise<{ us: number; stages: Stages }> {
  const { ImagePool: Pool } = await build.load<{ ImagePool: typeof ImagePool }>("worker/pool.js");
  const pool = new Pool();
  try {
    const client = await pool.open(file, {
      cache: "writeback",
      format,
      client: { spinUs: spins.clientUs, adaptiveSpin: spins.adaptive },
      serverSpinUs: spins.serverUs,
      serverAdaptiveSpin: spins.adaptive,
    });
    const call = what === "write" ? (i: number) => client.write(offsets[i]!, block) : () => client.nop();
    for (let i = 0; i < WARM_UP; i++) await call(i);
    const t = new Array<RequestTiming>(n);
    let k = 0;
    client.onTiming = (_op, timing) => {
      // The client's Operation object is the timing: copy the numbers.
      t[k++] = { ...timing };
    };
    const totals = await timeEach(n, call);
    client.onTiming = undefined;
    await client.close();
    const stage = (f: (x: RequestTiming) => number) => median(t.slice(0, k).map((x) => f(x) * 1000));
    const caught = (f: (x: RequestTiming) => number) => (100 * t.slice(0, k).filter((x) => f(x) * 1000 <= CAUGHT_US).length) / Math.max(1, k);
    const handed = median(t.slice(0, k).map((x) => (x.completed - x.called) * 1000));
    const us = median(totals);
    return {
      us,
      stages: {
        encode: stage((x) => x.submitted - x.called),
        pickup: stage((x) => x.workerStart - x.submitted),
        serve: stage((x) => x.workerEnd - x.workerStart),
        complete: stage((x) => x.completed - x.workerEnd),
        resume: Math.max(0, us - handed),
        pickupCaught: caught((x) => x.workerStart - x.submitted),
        completeCaught: caught((x) => x.completed - x.workerEnd),
      },
    };
  } finally {
    await pool.destroy();
  }
}

export async function runRingBreakdown(opts: { requests: number; reps: number; builds: Build[]; spins?: Spins; dir?: string }): Promise<{ runs: Run[]; checks: string[] }> {
  const n = opts.requests;
  const dir = fs.mkdtempSync(path.join(opts.dir ?? os.tmpdir(), "refcow-ring-breakdown-"));
  const qcow2 = path.join(dir, "bench.qcow2");
  const raw = path.join(dir, "bench.raw");
  const runs: Run[] = [];
  const checks: string[] = [];
  try {
    createImagePath(qcow2, { size: REGION });
    fs.writeFileSync(raw, new Uint8Array(0));
    fs.truncateSync(raw, REGION);
    for (const [file, format] of [[qcow2, "qcow2"], [raw, "raw"]] as const) {
      const d = openImagePath(file, { cache: "writeback", format });
      fillRegion(d);
      d.close();
    }
    const block = new Uint8Array(BLOCK).fill(0xa5);
    // A stride prime to the region's blocks: every request lands on another block, in an order that is not sequential.
    const offsets = Array.from({ length: Math.max(n, WARM_UP) }, (_, i) => ((i * 4099) % (REGION / BLOCK)) * BLOCK);

    type Source = { name: string; run: () => Promise<{ us: number; stages?: Stages }> };
    const inProcess = (file: string, format: "qcow2" | "raw") => async () => {
      const d = openImagePath(file, { cache: "writeback", format });
      try {
        for (let i = 0; i < WARM_UP; i++) d.write(offsets[i]!, block);
        return { us: median(await timeEach(n, (i) => d.write(offsets[i]!, block))) };
      } finally {
        d.close();
      }
    };
    const sources: Source[] = [
      {
        name: "raw pwrite",
        run: async () => {
          const fd = fs.openSync(raw, "r+");
          try {
            for (let i = 0; i < WARM_UP; i++) fs.writeSync(fd, block, 0, BLOCK, offsets[i]!);
            return { us: median(await timeEach(n, (i) => fs.writeSync(fd, block, 0, BLOCK, offsets[i]!))) };
          } finally {
            fs.closeSync(fd);
          }
        },
      },
      { name: "engine in-process", run: inProcess(qcow2, "qcow2") },
      { name: "raw in-process", run: inProcess(raw, "raw") },
    ];
    for (const b of opts.builds) {
      const tag = opts.builds.length > 1 ? ` (${b.label})` : "";
      sources.push(
        { name: `qcow2 via ring${tag}`, run: () => ringRun(b, qcow2, "qcow2", "write", n, offsets, block, opts.spins ?? {}) },
        { name: `raw via ring${tag}`, run: () => ringRun(b, raw, "raw", "write", n, offsets, block, opts.spins ?? {}) },
        { name: `nop via ring${tag}`, run: () => ringRun(b, qcow2, "qcow2", "nop", n, offsets, block, opts.spins ?? {}) },
      );
    }
    for (let rep = 0; rep < opts.reps; rep++) {
      for (const s of orderFor(sources, rep)) {
        const r = await s.run();
        runs.push({ source: s.name, rep, ...r });
        progress(`rep ${rep + 1} ${s.name}: ${r.us.toFixed(2)} µs`);
        if (s.name.startsWith("qcow2 via ring")) checks.push(qemuCheckVerdict(qcow2));
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { runs, checks };
}

export function formatRingBreakdown(runs: Run[], checks: string[], builds: Build[], requests: number): string {
  const sources = [...new Set(runs.map((r) => r.source))];
  const of = (source: string) => runs.filter((r) => r.source === source).sort((a, b) => a.rep - b.rep);
  const reps = Math.max(...runs.map((r) => r.rep)) + 1;
  const f = (xs: number[]) => formatSpread(xs, 2);
  const lines = [
    "| source | µs per request | encode | pick-up | serve | publish+wake | resume | pick-up ≤ 2 µs | publish+wake ≤ 2 µs |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  for (const s of sources) {
    const rs = of(s);
    const st = (k: "encode" | "pickup" | "serve" | "complete" | "resume") => (rs[0]!.stages ? f(rs.map((r) => r.stages![k])) : "");
    const pct = (k: "pickupCaught" | "completeCaught") => (rs[0]!.stages ? `${formatSpread(rs.map((r) => r.stages![k]), 0)} %` : "");
    lines.push(`| ${s} | ${f(rs.map((r) => r.us))} | ${st("encode")} | ${st("pickup")} | ${st("serve")} | ${st("complete")} | ${st("resume")} | ${pct("pickupCaught")} | ${pct("completeCaught")} |`);
  }
  lines.push("", "| ratio | median (min–max) | per repetition |", "|---|---|---|");
  const us = (s: string) => of(s).map((r) => r.us);
  for (const b of builds) {
    const tag = builds.length > 1 ? ` (${b.label})` : "";
    const q = `qcow2 via ring${tag}`;
    lines.push(`| ${q} / raw via ring${tag} | ${formatPerRepRatios(us(q), us(`raw via ring${tag}`))} |`);
    lines.push(`| ${q} / raw pwrite | ${formatPerRepRatios(us(q), us("raw pwrite"))} |`);
    lines.push(`| ${q} / engine in-process | ${formatPerRepRatios(us(q), us("engine in-process"))} |`);
  }
  lines.push(`| engine in-process / raw pwrite | ${formatPerRepRatios(us("engine in-process"), us("raw pwrite"))} |`);
  if (builds.length > 1) {
    for (const s of ["qcow2 via ring", "raw via ring", "nop via ring"]) lines.push(`| ${s}: this / other | ${formatPerRepRatios(us(`${s} (this)`), us(`${s} (other)`))} |`);
  }
  return [
    ...builds.map((b) => `${b.label}: ${b.dist}`),
    `4 KiB in-place writes, writeback, over a fully written 64 MiB region; ${requests} requests per run, each awaited; ${reps} repetitions, sources alternating order`,
    "(µs: the median per request of each run, then the median (min–max) over the repetitions; stages: medians of the ring's timestamps;",
    " ≤ 2 µs: the share of requests whose stage a spin caught, without a wake-up)",
    ...lines,
    `qemu-img check after every ring run on the qcow2 image: ${[...new Set(checks)].join(", ")}; host load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
  ].join("\n");
}

const USAGE = `usage: node dist/bench/ring-breakdown.js [options]

A 4 KiB in-place write (writeback) through the request ring, stage by stage, against the same write through
the same ring to a raw file, the engine called in-process, and a raw pwrite; repetitions interleaved.

  --requests N        requests per run (default 20000)
  --reps N            repetitions (default 3)
  --compare-bin DIR   the ring sources of another build (its dist/) too, in the same repetitions
  --client-spin US    the ring client's spin before it waits, µs (default: the client's own)
  --server-spin US    the serve loop's spin before it sleeps, µs (default: the loop's own)
  --fixed-spin        fixed spins instead of adaptive ones (both sides)
  -h, --help          this text
`;

runProgram(
  import.meta.url,
  {
    name: "ring breakdown",
    usage: USAGE,
    options: {
      requests: { type: "string" },
      reps: { type: "string" },
      "compare-bin": { type: "string" },
      "client-spin": { type: "string" },
      "server-spin": { type: "string" },
      "fixed-spin": { type: "boolean" },
    },
  },
  async (v) => {
    const requests = integerOption("requests", v.requests) ?? 20000;
    const builds = buildsToCompare(v["compare-bin"]);
    const spins: Spins = {
      clientUs: nonNegativeOption("client-spin", v["client-spin"]),
      serverUs: nonNegativeOption("server-spin", v["server-spin"]),
      adaptive: v["fixed-spin"] ? false : undefined,
    };
    const { runs, checks } = await runRingBreakdown({ requests, reps: integerOption("reps", v.reps) ?? 3, builds, spins });
    process.stdout.write(formatRingBreakdown(runs, checks, builds, requests) + "\n");
    if (checks.some((c) => c !== "clean")) return 1;
  },
);
