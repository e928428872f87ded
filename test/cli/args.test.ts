import { describe, expect, it } from "vitest";
import { parseArgs } from "../../src/cli/args.js";
import { UsageError } from "../../src/cli/errors.js";

const spec = {
  short: "hf:o:qu",
  long: [
    { name: "help", arg: false, key: "h" },
    { name: "output", arg: true },
    { name: "backing-chain", arg: false },
  ],
};

describe("parseArgs (getopt_long)", () => {
  it("takes short option arguments attached or separate, and clusters flags", () => {
    expect(parseArgs(["-fqcow2", "-qu", "-o", "a=1", "x"], spec)).toEqual({
      options: [{ key: "f", value: "qcow2" }, { key: "q" }, { key: "u" }, { key: "o", value: "a=1" }],
      operands: ["x"],
    });
    expect(parseArgs(["-qf", "raw", "x"], spec).options).toEqual([{ key: "q" }, { key: "f", value: "raw" }]);
  });
  it("permutes operands and options, and stops at --", () => {
    expect(parseArgs(["a", "--output=json", "b", "--", "-q"], spec)).toEqual({
      options: [{ key: "output", value: "json" }],
      operands: ["a", "b", "-q"],
    });
  });
  it("accepts --opt value and unique prefixes", () => {
    expect(parseArgs(["--output", "json", "--back", "x"], spec).options).toEqual([
      { key: "output", value: "json" },
      { key: "backing-chain" },
    ]);
  });
  it("treats a lone - as an operand", () => {
    expect(parseArgs(["-"], spec).operands).toEqual(["-"]);
  });
  it("reports errors in qemu-img's words", () => {
    expect(() => parseArgs(["-z"], spec)).toThrow(new UsageError("unrecognized option '-z'"));
    expect(() => parseArgs(["x", "-5"], spec)).toThrow("unrecognized option '-5'");
    expect(() => parseArgs(["--bogus"], spec)).toThrow("unrecognized option '--bogus'");
    expect(() => parseArgs(["--backing-chain=1"], spec)).toThrow("unrecognized option '--backing-chain=1'");
    expect(() => parseArgs(["x", "-f"], spec)).toThrow("missing argument for option '-f'");
    expect(() => parseArgs(["--output"], spec)).toThrow("missing argument for option '--output'");
  });
  it("stops at the first operand in stopAtOperand mode", () => {
    expect(parseArgs(["-q", "x", "-u"], { ...spec, stopAtOperand: true })).toEqual({ options: [{ key: "q" }], operands: ["x", "-u"] });
  });
});
