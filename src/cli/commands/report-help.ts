/** The text of `refcow report --help` and its line in `refcow --help`, kept apart so that the CLI loads the command only when it runs. */

export const REPORT_SUMMARY = "render a report from a results.json, or merge the results of a matrix's shards";

export const REPORT_USAGE = "report RESULTS.json|DIR... [--out DIR]";

export const REPORT_HELP = `
With one results.json (or the folder holding it) written by \`refcow bench --out\` or \`refcow experiment\`:
renders report.html and report.md from it again, without running anything.

With the folders of shards (\`refcow bench --shard i/N --out DIR\`, one per shard, e.g. from a CI matrix or
a Slurm array): merges them into one results.json, report.md and report.html whose rows are the union of
the shards'. Refused when they come from different refcow versions or configurations, or repeat a shard;
the cells of shards not given are named as not measured.

  --out DIR   where the report goes (default: the folder of the one RESULTS.json; required to merge)
`;
