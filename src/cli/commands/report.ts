/**
 * refcow report — renders report.html and report.md again from a results.json written by `refcow bench --out`
 * or `refcow experiment`; or, given the folders (or results.json files) of the shards of one matrix
 * (`refcow bench --shard i/N --out DIR`), merges them into one results.json, report.md and report.html
 * (src/report/merge.ts: refused for shards of other versions or configurations; missing shards named).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { MergeRefused, mergeShards } from "../../report/merge.js";
import { loadResults, writeReport } from "../../report/report.js";
import type { ResultsFile } from "../../report/results.js";
import { CliError, UsageError } from "../errors.js";
import type { CliIo } from "../command.js";
import { REPORT_SUMMARY, REPORT_USAGE, REPORT_HELP } from "./report-help.js";

/** The results.json a command-line argument names: the file itself, or the one in a folder. */
function resultsPath(arg: string): string {
  return fs.existsSync(arg) && fs.statSync(arg).isDirectory() ? path.join(arg, "results.json") : arg;
}

export async function reportCommand(argv: string[], io: CliIo): Promise<number> {
  let out: string | undefined;
  const inputs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--help" || argv[i] === "-h") {
      io.out(`usage: refcow ${REPORT_USAGE}\n${REPORT_SUMMARY}\n${REPORT_HELP}`);
      return 0;
    }
    if (argv[i] === "--out") {
      out = argv[++i];
      if (out === undefined) throw new UsageError("--out needs a value");
    } else if (argv[i].startsWith("-")) throw new UsageError(`unknown option '${argv[i]}'`);
    else inputs.push(argv[i]);
  }
  if (!inputs.length) throw new UsageError("expecting a results.json, or the folders of the shards to merge");
  const loaded: { from: string; results: ResultsFile }[] = [];
  for (const arg of inputs) {
    try {
      loaded.push({ from: arg, results: loadResults(resultsPath(arg)) });
    } catch (e) {
      throw new CliError((e as Error).message);
    }
  }
  const single = loaded.length === 1 && !loaded[0]!.results.shard;
  let results: ResultsFile;
  if (single) {
    results = loaded[0]!.results;
  } else {
    if (out === undefined) throw new UsageError("merging shards needs --out DIR (where the merged results.json and report go)");
    try {
      results = mergeShards(loaded);
    } catch (e) {
      if (e instanceof MergeRefused) throw new CliError(`cannot merge: ${e.message}`);
      throw e;
    }
  }
  const source = path.dirname(resultsPath(inputs[0]!));
  const dir = out ?? source;
  // A new results.json where the report goes elsewhere than its source, and always for a merge.
  await writeReport(dir, results, !single || (out !== undefined && path.resolve(dir) !== path.resolve(source)));
  if (results.shards?.missingCells.length) io.err(`refcow: ${results.shards.missingCells.length} cells were not run: the shards ${missingShards(results)} were not given\n`);
  io.out(`${path.join(dir, "report.html")}\n${path.join(dir, "report.md")}\n`);
  return 0;
}

function missingShards(r: ResultsFile): string {
  const s = r.shards!;
  return Array.from({ length: s.count }, (_, k) => k + 1)
    .filter((k) => !s.merged.includes(k))
    .map((k) => `${k}/${s.count}`)
    .join(", ");
}
