import { describe, expect, it } from "vitest";
import { imgNumber, ioNumber, parseSize } from "../../src/cli/sizes.js";

// QEMU 7.2 qemu_strtosz semantics (checked against qemu-img create / qemu-io).
describe("parseSize", () => {
  const ok: [string, bigint][] = [
    ["0", 0n],
    ["512", 512n],
    ["1b", 1n],
    ["1B", 1n],
    ["1k", 1024n],
    ["1K", 1024n],
    ["64M", 64n << 20n],
    ["1G", 1n << 30n],
    ["1T", 1n << 40n],
    ["1P", 1n << 50n],
    ["1E", 1n << 60n],
    ["1.5G", 1610612736n],
    ["1.5k", 1536n],
    ["1.k", 1024n],
    ["0x1000", 4096n],
    ["0X10", 16n],
    ["010", 10n],
    ["+5", 5n],
    ["0.5k", 512n],
    ["1.0009765625k", 1025n],
  ];
  it.each(ok)("%s = %s", (s, v) => expect(parseSize(s)).toEqual({ ok: true, value: v }));

  const bad: [string, "EINVAL" | "ERANGE"][] = [
    ["", "EINVAL"],
    ["x", "EINVAL"],
    ["1x", "EINVAL"],
    ["-1", "EINVAL"],
    ["-0", "EINVAL"],
    ["1.5", "EINVAL"],
    ["1.5b", "EINVAL"],
    ["0x1.8", "EINVAL"],
    ["1.5e3k", "EINVAL"],
    ["1kk", "EINVAL"],
    ["16E", "ERANGE"],
    ["18446744073709551616", "ERANGE"],
    ["'0'", "EINVAL"],
  ];
  it("accepts a hex number with a suffix, flagged for QEMU's deprecation warning", () => {
    expect(parseSize("0x10k")).toEqual({ ok: true, value: 16384n, hexSuffix: true });
    expect(ioNumber("0x10k")).toEqual({
      ok: true,
      value: 16384,
      warning: "warning: Using a multiplier suffix on hex numbers is deprecated: 0x10k",
    });
  });
  it.each(bad)("%s fails with %s", (s, e) => expect(parseSize(s)).toEqual({ ok: false, error: e }));
});

describe("ioNumber (qemu-io cvtnum)", () => {
  it("reports qemu-io's parsing errors", () => {
    expect(ioNumber("4k")).toEqual({ ok: true, value: 4096 });
    expect(ioNumber("x")).toEqual({
      ok: false,
      message: "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- x",
    });
    expect(ioNumber("1000000000000000000000")).toEqual({ ok: false, message: "Parsing error: argument too large -- 1000000000000000000000" });
    expect(ioNumber("8E")).toEqual({ ok: false, message: "Parsing error: argument too large -- 8E" });
  });
});

describe("imgNumber (qemu-img cvtnum)", () => {
  it("reports qemu-img's messages on one line", () => {
    expect(imgNumber("image size", "1x")).toEqual({
      ok: false,
      message:
        "Invalid image size specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.",
    });
    expect(imgNumber("image size", "9E")).toEqual({
      ok: false,
      message: "Invalid image size specified. Must be between 0 and 9223372036854775807.",
    });
    expect(imgNumber("image size", "1E")).toEqual({ ok: true, value: 1n << 60n });
  });
});
