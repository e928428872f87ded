/**
 * fio as an independent check of the load generator: the same request sequence (load.ts's offsets and
 * flush points) written as a fio iolog (version 2) and replayed by fio's `nbd` engine against an NBD
 * export, at a chosen queue depth, with fio's own clock and statistics.
 *
 * iolog version 2, one action per line after the header "fio version 2 iolog":
 *   FILE add | FILE open | FILE write OFFSET LENGTH | FILE sync 0 0 | FILE close
 * (the nbd engine ignores the file name: it talks to the export named by --uri). fio's completion latency
 * (clat) percentiles come from its log-linear histogram: they are exact to a few percent, not to the µs.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import { flushAfter } from "./load.js";

export interface FioResult {
  writes: number;
  syncs: number;
  iops: number;
  clat_p50_us: number;
  clat_p99_us: number;
  clat_mean_us: number;
}

/** The iolog of a phase: the writes at `offsets` and the flushes the load generator sends in this cache mode. */
export function fioIolog(offsets: readonly number[], length: number, cache: string): string {
  const lines = ["fio version 2 iolog", "nbd add", "nbd open"];
  offsets.forEach((o, i) => {
    lines.push(`nbd write ${o} ${length}`);
    if (flushAfter(i, offsets.length, cache)) lines.push("nbd sync 0 0");
  });
  lines.push("nbd close");
  return lines.join("\n") + "\n";
}

/** The fio command line that replays `iolog` against the export on `socket`. */
/** `uri`: another NBD URI than the plain one of `socket` (say nbds+unix://USER@/?socket=...&tls-psk-file=...). */
export function fioArgs(socket: string, iolog: string, iodepth: number, output: string, uri?: string): string[] {
  return [
    "--name=refcow-check",
    "--ioengine=nbd",
    `--uri=${uri ?? `nbd+unix:///?socket=${socket}`}`,
    `--read_iolog=${iolog}`,
    "--replay_no_stall=1",
    `--iodepth=${iodepth}`,
    "--output-format=json",
    `--output=${output}`,
  ];
}

/** Reads fio's JSON output (the first job's writes). */
export function parseFioJson(text: string): FioResult {
  const start = text.indexOf("{");
  const j = JSON.parse(start >= 0 ? text.slice(start) : text) as {
    jobs: Array<{ error: number; write: { total_ios: number; iops: number; clat_ns: { mean: number; percentile?: Record<string, number> } }; sync?: { total_ios: number } }>;
  };
  const job = j.jobs[0];
  if (!job) throw new Error("fio wrote no job");
  if (job.error) throw new Error(`fio's job failed with error ${job.error}`);
  const w = job.write;
  const pct = w.clat_ns.percentile ?? {};
  return {
    writes: w.total_ios,
    syncs: job.sync?.total_ios ?? 0,
    iops: w.iops,
    clat_p50_us: (pct["50.000000"] ?? NaN) / 1000,
    clat_p99_us: (pct["99.000000"] ?? NaN) / 1000,
    clat_mean_us: w.clat_ns.mean / 1000,
  };
}

/**
 * fio's own random writes (no iolog): `writes` writes of `bs` bytes at offsets fio draws over [0, region) with
 * a fixed seed, so every server sees the same sequence; `fsyncEvery` > 0 has fio flush at least that often
 * (fio's --fsync; at depth fio counts more flushes than writes / fsyncEvery); 0: no flush at all.
 */
export interface RandwriteJob {
  region: number;
  bs: number;
  writes: number;
  fsyncEvery: number;
  seed: number;
}

export function fioRandwriteArgs(socket: string, job: RandwriteJob, iodepth: number, output: string, uri?: string): string[] {
  return [
    "--name=refcow-randwrite",
    "--ioengine=nbd",
    `--uri=${uri ?? `nbd+unix:///?socket=${socket}`}`,
    "--rw=randwrite",
    `--bs=${job.bs}`,
    `--size=${job.region}`,
    `--io_size=${job.writes * job.bs}`,
    `--randseed=${job.seed}`,
    "--randrepeat=1",
    ...(job.fsyncEvery > 0 ? [`--fsync=${job.fsyncEvery}`] : []),
    `--iodepth=${iodepth}`,
    "--output-format=json",
    `--output=${output}`,
  ];
}

/** Runs fio with `args` (which write JSON to `output`) and reads its figures. */
async function runFioArgs(args: string[], output: string): Promise<FioResult> {
  await new Promise<void>((resolve, reject) => {
    execFile("fio", args, { timeout: 600000 }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`fio failed: ${stderr.toString().trim().split("\n").pop() || err.message}`));
      else resolve();
    });
  });
  const r = parseFioJson(fs.readFileSync(output, "utf8"));
  fs.rmSync(output, { force: true });
  return r;
}

/** Runs fio on the iolog against the export on `socket`; `work` is a file prefix for its log and output. */
export async function runFio(socket: string, offsets: readonly number[], length: number, cache: string, iodepth: number, work: string, uri?: string): Promise<FioResult> {
  const iolog = `${work}.iolog`;
  const output = `${work}.json`;
  fs.writeFileSync(iolog, fioIolog(offsets, length, cache));
  const r = await runFioArgs(fioArgs(socket, iolog, iodepth, output, uri), output);
  fs.rmSync(iolog, { force: true });
  if (r.writes !== offsets.length) throw new Error(`fio wrote ${r.writes} times, the iolog has ${offsets.length} writes`);
  return r;
}

/** Runs fio's random-write job against the export on `socket`. */
export async function runFioRandwrite(socket: string, job: RandwriteJob, iodepth: number, work: string, uri?: string): Promise<FioResult> {
  const r = await runFioArgs(fioRandwriteArgs(socket, job, iodepth, `${work}.json`, uri), `${work}.json`);
  if (r.writes !== job.writes) throw new Error(`fio wrote ${r.writes} times, the job asked for ${job.writes}`);
  return r;
}
