import { describe, expect, it } from "vitest";
import { cvtstr, sizeToStr } from "../../src/cli/human-size.js";
import { fixed, fixedZeroPad, general, hexAlt } from "../../src/cli/printf.js";

// Expected strings are what C's printf (glibc; Python's % operator gives the same) prints.
describe("fixed (%.Nf)", () => {
  const cases: [number, string, string, string][] = [
    [0.125, "0.12", "0.125", "0.1250"],
    [0.375, "0.38", "0.375", "0.3750"],
    [2.675, "2.67", "2.675", "2.6750"],
    [1.005, "1.00", "1.005", "1.0050"],
    [12.5, "12.50", "12.500", "12.5000"],
    [99.995, "100.00", "99.995", "99.9950"],
    [0, "0.00", "0.000", "0.0000"],
    [100, "100.00", "100.000", "100.0000"],
    [(1 / 3) * 100, "33.33", "33.333", "33.3333"],
    [1.66015625, "1.66", "1.660", "1.6602"],
    [0.1953125, "0.20", "0.195", "0.1953"],
    [33.335, "33.34", "33.335", "33.3350"],
    [1e-7, "0.00", "0.000", "0.0000"],
    [123456.785, "123456.79", "123456.785", "123456.7850"],
  ];
  it.each(cases)("%d", (x, two, three, four) => {
    expect(fixed(x, 2)).toBe(two);
    expect(fixed(x, 3)).toBe(three);
    expect(fixed(x, 4)).toBe(four);
  });
  it("rounds ties to even on the exact binary value, unlike toFixed", () => {
    expect((0.125).toFixed(2)).toBe("0.13");
    expect(fixed(0.125, 2)).toBe("0.12");
  });
  it("zero-pads like %05.2f", () => {
    expect(fixedZeroPad(0.004, 5, 2)).toBe("00.00");
    expect(fixedZeroPad(7.96, 5, 2)).toBe("07.96");
    expect(fixedZeroPad(59.999, 5, 2)).toBe("60.00");
  });
});

describe("general (%.Ng)", () => {
  const cases: [number, string, string][] = [
    [0, "0", "0"],
    [1, "1", "1"],
    [999.5, "1e+03", "999.5"],
    [999.4, "999", "999.4"],
    [1000, "1e+03", "1000"],
    [999.0234375, "999", "999.023"],
    [1.5, "1.5", "1.5"],
    [196, "196", "196"],
    [0.000123456, "0.000123", "0.000123456"],
    [1.23456e-5, "1.23e-05", "1.23456e-05"],
    [123456789, "1.23e+08", "1.23457e+08"],
    [1e15, "1e+15", "1e+15"],
    [2.5, "2.5", "2.5"],
    [3.14159, "3.14", "3.14159"],
    [999.99, "1e+03", "999.99"],
    [12.345, "12.3", "12.345"],
    [0.0001, "0.0001", "0.0001"],
  ];
  it.each(cases)("%d", (x, g3, g6) => {
    expect(general(x, 3)).toBe(g3);
    expect(general(x, 6)).toBe(g6);
  });
});

describe("hexAlt (%#x)", () => {
  it("prints 0 without a prefix", () => {
    expect(hexAlt(0)).toBe("0");
    expect(hexAlt(0x10000)).toBe("0x10000");
    expect(hexAlt(2n ** 60n)).toBe("0x1000000000000000");
  });
});

describe("sizeToStr (qemu-img's size_to_str)", () => {
  const cases: [number, string][] = [
    [0, "0 B"],
    [512, "512 B"],
    [999, "999 B"],
    [1000, "0.977 KiB"],
    [1023, "0.999 KiB"],
    [1024, "1 KiB"],
    [200704, "196 KiB"],
    [544768, "532 KiB"],
    [1134592, "1.08 MiB"],
    [1380352, "1.32 MiB"],
    [67108864, "64 MiB"],
    [1610612736, "1.5 GiB"],
    [1099511627776, "1 TiB"],
    [2 ** 50, "1 PiB"],
  ];
  it.each(cases)("%d → %s", (n, s) => expect(sizeToStr(n)).toBe(s));
});

describe("cvtstr (qemu-io)", () => {
  const cases: [number, string][] = [
    [0, "0 bytes"],
    [1, "1 bytes"],
    [512, "512 bytes"],
    [1536, "1.500 KiB"],
    [4096, "4 KiB"],
    [65536, "64 KiB"],
    [67108864, "64 MiB"],
    [2146435072, "1.999 GiB"],
    [536870912, "512 MiB"],
    [183483.5, "179.183 KiB"],
  ];
  it.each(cases)("%d → %s", (n, s) => expect(cvtstr(n)).toBe(s));
});
