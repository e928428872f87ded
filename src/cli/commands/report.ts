/**
 * refcow report RESULTS.json [--out DIR] — renders report.html and report.md again from a results.json
 * written by `refcow bench --out` or `refcow experiment` (by default next to it).
 */
import * as path from "node:path";
import { loadResults, writeReport } from "../../report/report.js";
import { CliError, UsageError } from "../errors.js";
import type { CliIo } from "../command.js";

export const REPORT_SUMMARY = "render report.html and report.md again from a results.json";

export const REPORT_USAGE = "report RESULTS.json [--out DIR]";

export const REPORT_HELP = `
Renders report.html and report.md from a results.json written by \`refcow bench --out\` or
\`refcow experiment\`, without running anything again.

  --out DIR   where the report goes (default: the folder of RESULTS.json)
`;

export async function reportCommand(argv: string[], io: CliIo): Promise<number> {
  let out: string | undefined;
  const files: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--help" || argv[i] === "-h") {
      io.out(`usage: refcow ${REPORT_USAGE}\n${REPORT_SUMMARY}\n${REPORT_HELP}`);
      return 0;
    }
    if (argv[i] === "--out") {
      out = argv[++i];
      if (out === undefined) throw new UsageError("--out needs a value");
    } else if (argv[i].startsWith("-")) throw new UsageError(`unknown option '${argv[i]}'`);
    else files.push(argv[i]);
  }
  if (files.length !== 1) throw new UsageError("expecting one results.json");
  let results;
  try {
    results = loadResults(files[0]);
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  const dir = out ?? path.dirname(files[0]);
  await writeReport(dir, results, out !== undefined && path.resolve(dir) !== path.resolve(path.dirname(files[0])));
  io.out(`${path.join(dir, "report.html")}\n${path.join(dir, "report.md")}\n`);
  return 0;
}
