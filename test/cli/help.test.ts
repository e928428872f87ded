/**
 * `refcow <command> --help` for every command in the dispatch table: exit status 0 and a first line
 * "usage: refcow <command> ..." that is the command's registered synopsis.
 */
import { describe, expect, it } from "vitest";
import { commands, main } from "../../src/cli/main.js";

async function runCli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

describe("refcow <command> --help", () => {
  const names = Object.keys(commands);

  it("covers every registered command", () => {
    // The table is the source: a command added to it is checked below without touching this file.
    expect(names).toEqual(expect.arrayContaining(["create", "io", "bench", "experiment", "report", "run", "nbd", "crash-test"]));
  });

  for (const name of names) {
    for (const flag of ["--help", "-h"]) {
      it(`${name} ${flag} prints its usage and exits 0`, async () => {
        const r = await runCli([name, flag]);
        expect({ code: r.code, err: r.err }).toEqual({ code: 0, err: "" });
        const [first] = r.out.split("\n");
        expect(first).toBe(`usage: refcow ${commands[name]!.usage}`);
        expect(commands[name]!.usage!.startsWith(`${name} `)).toBe(true);
      });
    }
  }
});
