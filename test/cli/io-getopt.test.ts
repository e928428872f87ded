/**
 * The option parser of qemu-io's commands (src/cli/io/getopt.ts) on its own, with a made-up command whose
 * table has every kind of option and rule. The expectations are written out by hand from glibc getopt's
 * behaviour and qemu-io's messages (test/cli/qemu-io-compat.test.ts checks the real commands against
 * qemu-io itself).
 */
import { describe, expect, it } from "vitest";
import type { CliIo } from "../../src/cli/command.js";
import type { IoContext } from "../../src/cli/io/context.js";
import { atMostOne, endsCommand, flag, needs, notWith, oneOfNames, type OptionDecls, type OptionTable, parseCommand, text, value, values } from "../../src/cli/io/getopt.js";

/** A byte in 0..255 (decimal only here), or the complaint on stdout. */
const byte = (ctx: IoContext, arg: string): number | undefined => {
  const n = /^\d+$/.test(arg) ? Number(arg) : NaN;
  if (n >= 0 && n <= 255) return n;
  ctx.io.out(`${arg} is not a valid pattern byte\n`);
  return undefined;
};

const TABLE = {
  options: {
    a: flag(),
    b: flag(),
    c: flag(),
    P: value(byte),
    m: value(oneOfNames(new Set(["off", "full"]), (v) => `Invalid mode '${v}'`)),
    o: values(text),
    r: flag(),
    w: flag(),
    i: endsCommand("injecting invalid request", 0),
  },
  oneOf: { letters: "rw", say: { err: "Only one -r/-w option may be given" } },
  operands: { min: 1, max: 2 },
  rules: [
    notWith("a", "bc", { out: "-a and -b or -c cannot be specified at the same time" }),
    needs("c", "P", { out: "-c requires -P to be specified" }),
    atMostOne("Pm", { out: "Only one of -P and -m can be specified at the same time" }),
  ],
  operandRules: [needs("b", "P", "usage")],
} satisfies OptionTable<OptionDecls>;

const CMD = { name: "demo", args: "[-abcrw] [-P pattern] [-m mode] [-o opt] off [len]", oneline: "a command to parse" };
const USAGE = "demo [-abcrw] [-P pattern] [-m mode] [-o opt] off [len] -- a command to parse\n";

function parse(line: string) {
  let out = "";
  let err = "";
  const io: CliIo = { out: (s) => void (out += s), err: (s) => void (err += s) };
  const ctx = { io } as IoContext;
  const p = parseCommand(ctx, CMD, ["demo", ...line.split(" ").filter((w) => w)], TABLE);
  if (typeof p === "number") return { status: p, out, err };
  return { opts: p.opts, given: p.given.map((g) => g.letter).join(""), operands: p.operands, out, err };
}

describe("getopt for qemu-io's commands: what is parsed", () => {
  it.each([
    // [words, options, operands]
    ["-a 0", { a: true }, ["0"]],
    ["-rP 7 0", { r: true, P: 7 }, ["0"]],
    ["-rP7 0", { r: true, P: 7 }, ["0"]],
    ["-P 7 -P 9 0", { P: 9 }, ["0"]],
    ["0 1 -r", { r: true }, ["0", "1"]],
    ["0 -r 1", { r: true }, ["0", "1"]],
    ["-- -r", {}, ["-r"]],
    ["-r -- 0 -w", { r: true }, ["0", "-w"]],
    ["- 1", {}, ["-", "1"]],
    ["-o a=1 -o b 0", { o: ["a=1", "b"] }, ["0"]],
    ["-o-r 0", { o: ["-r"] }, ["0"]],
    ["-o -r 0", { o: ["-r"] }, ["0"]],
    ["-o -- 0", { o: ["--"] }, ["0"]],
    ["-m full 0", { m: "full" }, ["0"]],
  ] as const)("%s", (line, opts, operands) => {
    expect(parse(line)).toEqual({ opts, given: expect.any(String), operands, out: "", err: "" });
  });

  it("keeps the options in the order given", () => {
    expect(parse("-w -o x 0 -P 1").given).toBe("woP");
  });
});

describe("getopt for qemu-io's commands: what is refused, and how", () => {
  const invalid = (c: string) => ({ status: -22, out: USAGE, err: `demo: invalid option -- '${c}'\n` });
  const missing = (c: string) => ({ status: -22, out: USAGE, err: `demo: option requires an argument -- '${c}'\n` });
  it.each([
    ["-x 0", invalid("x")],
    ["-rx 0", invalid("x")],
    ["0 -ax", invalid("x")],
    ["--all 0", invalid("-")],
    ["0 -P", missing("P")],
    ["0 -rP", missing("P")],
    // Options act in order: the first problem met is the one reported.
    ["-P 300 -x 0", { status: -22, out: "300 is not a valid pattern byte\n", err: "" }],
    ["-x -P 300 0", invalid("x")],
    ["-P -r 0", { status: -22, out: "-r is not a valid pattern byte\n", err: "" }],
    ["-m bogus 0", { status: -22, out: "", err: "refcow: Invalid mode 'bogus'\n" }],
    ["-i -x 0", { status: 0, out: "injecting invalid request\n", err: "" }],
    ["-x -i 0", invalid("x")],
    ["-P 300 -i 0", { status: -22, out: "300 is not a valid pattern byte\n", err: "" }],
    ["-ri", { status: 0, out: "injecting invalid request\n", err: "" }],
    // -r / -w: refused when the second is met, before anything after it.
    ["-r -w -x 0", { status: -22, out: "", err: "refcow: Only one -r/-w option may be given\n" }],
    ["-rr 0", { status: -22, out: "", err: "refcow: Only one -r/-w option may be given\n" }],
    // Operand count: the usage line, before the rules.
    ["-ab", { status: -22, out: USAGE, err: "" }],
    ["-ab 0 1 2", { status: -22, out: USAGE, err: "" }],
    ["-r --", { status: -22, out: USAGE, err: "" }],
    // Rules, in the table's order.
    ["-ab 0", { status: -22, out: "-a and -b or -c cannot be specified at the same time\n", err: "" }],
    ["-ac 0", { status: -22, out: "-a and -b or -c cannot be specified at the same time\n", err: "" }],
    ["-c 0", { status: -22, out: "-c requires -P to be specified\n", err: "" }],
    ["-c -m off 0", { status: -22, out: "-c requires -P to be specified\n", err: "" }],
    ["-P 1 -m off 0", { status: -22, out: "Only one of -P and -m can be specified at the same time\n", err: "" }],
  ] as const)("%s", (line, want) => {
    expect(parse(line)).toEqual(want);
  });

  it("checks the operand rules only when the command asks, once it has read its operands", () => {
    let out = "";
    const ctx = { io: { out: (s: string) => void (out += s), err: () => {} } } as unknown as IoContext;
    const p = parseCommand(ctx, CMD, ["demo", "-b", "0"], TABLE);
    if (typeof p === "number") throw new Error("refused");
    expect(out).toBe("");
    expect(p.refused()).toBe(-22);
    expect(out).toBe(USAGE);
    const q = parseCommand(ctx, CMD, ["demo", "-b", "-P", "1", "0"], TABLE);
    if (typeof q === "number") throw new Error("refused");
    expect(q.refused()).toBeUndefined();
  });

  it("prints the usage line on request", () => {
    let out = "";
    const ctx = { io: { out: (s: string) => void (out += s), err: () => {} } } as unknown as IoContext;
    const p = parseCommand(ctx, CMD, ["demo", "0"], TABLE);
    if (typeof p === "number") throw new Error("refused");
    expect(p.usage()).toBe(-22);
    expect(out).toBe(USAGE);
  });
});
