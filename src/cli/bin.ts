#!/usr/bin/env node
// The refcow command (package.json "bin"): runs the CLI with the process's arguments and exit code.
import { main } from "./main.js";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`refcow: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
