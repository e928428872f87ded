/**
 * refcow bench — the write-after-snapshot matrix (every scheme, both cache modes, QEMU and a raw file in the
 * same run), or with --ring the request ring's round trip against an in-process call.
 */
import * as fs from "node:fs";
import type { CacheMode } from "../../engine/types.js";
import { machine, refcowVersion } from "../../bench/machine.js";
import { benchExitStatus, runMatrix } from "../../bench/matrix.js";
import { defaultOptions, parseAllocList } from "../../bench/options.js";
import { parseShard, ShardPlan } from "../../bench/shard.js";
import { formatRingBench, runRingBench } from "../../bench/ring.js";
import { fullAnswer, table, writeOutputs } from "../../report/report.js";
import { type CliIo, processIo } from "../command.js";
import { UsageError } from "../errors.js";
import { BENCH_HELP } from "./bench-help.js";

/** A positive integer option value, or a usage error naming the option. */
function positive(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} needs a positive integer, not '${v}'`);
  return n;
}

export async function benchCommand(argv: string[], io: CliIo = processIo): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    io.out(BENCH_HELP);
    return 0;
  }
  if (argv.includes("--ring")) {
    io.out(formatRingBench(await runRingBench({ requests: argv.includes("--quick") ? 5000 : 20000 })) + "\n");
    return 0;
  }
  const opts = defaultOptions(argv.includes("--quick"));
  let out: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new UsageError(`${a} needs a value`);
      return x;
    };
    if (a === "--quick") continue;
    else if (a === "--out") out = v();
    else if (a === "--schemes") opts.schemes = v().split(",");
    else if (a === "--alloc") {
      try {
        opts.allocs = parseAllocList(v());
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
    } else if (a === "--cache") opts.caches = v().split(",") as CacheMode[];
    else if (a === "--workloads") opts.workloads = v().split(",") as typeof opts.workloads;
    else if (a === "--trace") {
      opts.traceFile = v();
      if (!opts.workloads.includes("trace")) opts.workloads.push("trace");
    }
    else if (a === "--clusters") opts.clusters = positive(a, v());
    else if (a === "--reps") opts.reps = positive(a, v());
    else if (a === "--no-fio") {
      opts.fio = false;
      opts.fioDepths = [];
    } else if (a === "--fio-depths") opts.fioDepths = v().split(",").filter(Boolean).map((d) => positive(a, d));
    else if (a === "--no-order-qemu") opts.qemuOrder = false;
    else if (a === "--dir") opts.dir = v();
    else if (a === "--no-qemu") opts.qemu = false;
    else if (a === "--no-ops") opts.opSizes = [];
    else if (a === "--in-process") opts.inProcess = true;
    else if (a === "--no-reflink") opts.noReflink = true;
    else if (a === "--shard") {
      try {
        opts.shard = new ShardPlan(parseShard(v()));
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
    }
    else throw new UsageError(`unknown option '${a}'`);
  }
  for (const w of opts.workloads) {
    if (!["rand4k-per-cluster", "seq", "trace"].includes(w)) throw new UsageError(`unknown workload '${w}' (rand4k-per-cluster, seq, trace)`);
  }
  if (opts.workloads.includes("trace") && !opts.traceFile) throw new UsageError("the trace workload needs --trace FILE (written by `refcow run --trace FILE`)");
  const started = Date.now();
  opts.progress = (m) => io.err(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${m}\n`);
  const results = await runMatrix(opts);
  results.shard = opts.shard?.record();
  io.out(table(results.rows, results.fio, results.missing, results.failed));
  io.out(`\n${fullAnswer({ ...results, options: { schemes: opts.schemes } })}\n`);
  if (out) {
    // The options as shards must share them to merge: not the scratch folder, not the shard itself.
    await writeOutputs(out, results, machine(opts.dir), { ...opts, progress: undefined, dir: undefined, shard: undefined }, [], refcowVersion());
    io.err(`results written to ${out}/results.json, ${out}/report.md and ${out}/report.html\n`);
  }
  fs.rmSync(opts.dir, { recursive: true, force: true });
  return benchExitStatus(results, (m) => io.err(m));
}
