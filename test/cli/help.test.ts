/**
 * `refcow <command> --help` for every command in the dispatch table: exit status 0 and a first line
 * "usage: refcow <command> ..." that is the command's registered synopsis.
 */
import { describe, expect, it } from "vitest";
import { commands, main } from "../../src/cli/main.js";
import { COMMANDS } from "../../src/cli/io/table.js";

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

describe("refcow io --help", () => {
  it("lists every command the qemu-io command table implements", async () => {
    const r = await runCli(["io", "--help"]);
    expect(r.code).toBe(0);
    const listed = r.out.slice(r.out.indexOf("\nCommands"));
    expect(listed.length).toBeGreaterThan(0);
    // Every name, as a whole word in the command list (aio_read must not pass on "read" alone).
    const words = new Set(listed.split(/[^A-Za-z0-9_]+/));
    const names = COMMANDS.map((c) => c.name);
    expect(names.length).toBeGreaterThan(20);
    expect(names.filter((n) => !words.has(n))).toEqual([]);
  });

  it("says what the code does: a worker thread serves the image unless --in-process", async () => {
    const { out } = await runCli(["io", "--help"]);
    const line = out.slice(out.indexOf("--in-process   "));
    expect(line).toMatch(/^--in-process +serve the image in this thread; by default a worker thread serves it/);
    expect(out).not.toMatch(/in-process[^\n]*the default/);
    expect(out).toMatch(/\n  -s +snapshot mode/);
  });
});
