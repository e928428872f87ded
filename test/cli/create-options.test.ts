import { describe, expect, it } from "vitest";
import {
  CreateOptionSet,
  formattingLine,
  isValidOptionList,
  optionsHelp,
  qcow2CreateOptions,
  splitOptionList,
} from "../../src/cli/create-options.js";

function set(format: "qcow2" | "raw", ...lists: string[]): CreateOptionSet {
  const s = new CreateOptionSet(format);
  for (const l of lists) s.addList(l);
  return s;
}

describe("option lists", () => {
  it("validates like qemu-img's is_valid_option_list", () => {
    expect(isValidOptionList("a=1")).toBe(true);
    expect(isValidOptionList("a=x,,")).toBe(true);
    expect(isValidOptionList("")).toBe(false);
    expect(isValidOptionList(",a=1")).toBe(false);
    expect(isValidOptionList("a=1,")).toBe(false);
  });
  it("splits with ',,' as a literal comma", () => {
    expect(splitOptionList("backing_file=a,,b.qcow2,lazy_refcounts")).toEqual([
      ["backing_file", "a,b.qcow2"],
      ["lazy_refcounts", undefined],
    ]);
  });
});

describe("Formatting line (qemu-img 7.2 text)", () => {
  const q = (...lists: string[]) => {
    const s = set("qcow2", ...lists);
    if (!s.has("size")) s.set("size", "67108864");
    return formattingLine("a.qcow2", s);
  };
  it("defaults", () => {
    expect(q()).toBe(
      "Formatting 'a.qcow2', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=67108864 lazy_refcounts=off refcount_bits=16\n",
    );
  });
  it("everything given, in qemu-img's order, values as typed (sizes and numbers as parsed)", () => {
    expect(q("refcount_bits=0x8,lazy_refcounts=yes,compat=v3,compression_type=zstd,extended_l2=on,cluster_size=32k", "backing_file=a,,b", "backing_fmt=raw")).toBe(
      "Formatting 'a.qcow2', fmt=qcow2 cluster_size=32768 extended_l2=on compression_type=zstd size=67108864 compat=v3 " +
        "backing_file=a,,b backing_fmt=raw lazy_refcounts=yes refcount_bits=8\n",
    );
  });
  it("short boolean forms", () => {
    expect(q("lazy_refcounts")).toContain(" lazy_refcounts=on ");
    expect(q("nolazy_refcounts")).toContain(" lazy_refcounts=off ");
  });
  it("raw", () => {
    const s = set("raw", "preallocation=off");
    s.set("size", "1048576");
    expect(formattingLine("n.raw", s)).toBe("Formatting 'n.raw', fmt=raw size=1048576 preallocation=off\n");
  });
});

describe("parse-time errors (before the Formatting line)", () => {
  it.each([
    ["foo=bar", "Invalid parameter 'foo'"],
    ["lazy_refcounts=1", "Parameter 'lazy_refcounts' expects 'on' or 'off'"],
    ["extended_l2=maybe", "Parameter 'extended_l2' expects 'on' or 'off'"],
    ["refcount_bits=abc", "Parameter 'refcount_bits' expects a number"],
    [
      "cluster_size=abc",
      "Parameter 'cluster_size' expects a non-negative number below 2^64 Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta- and exabytes, respectively.",
    ],
  ])("%s", (list, msg) => {
    expect(() => set("qcow2", list)).toThrow(msg);
  });
  it("raw has no qcow2 options", () => {
    expect(() => set("raw", "cluster_size=4k")).toThrow("Invalid parameter 'cluster_size'");
  });
});

describe("qcow2 validation (after the Formatting line), in qcow2_co_create's order", () => {
  const v = (list: string) => () => qcow2CreateOptions(set("qcow2", list), 1048576);
  it.each([
    ["compat=2,cluster_size=1000", "Parameter 'version' does not accept value '2'"],
    ["compression_type=lz4,cluster_size=1000", "Parameter 'compression-type' does not accept value 'lz4'"],
    ["compat=0.10,extended_l2=on,cluster_size=1000", "Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)"],
    ["cluster_size=1000", "Cluster size must be a power of two between 512 and 2048k"],
    ["cluster_size=4M", "Cluster size must be a power of two between 512 and 2048k"],
    ["cluster_size=4k,extended_l2=on", "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes"],
    ["compat=0.10,lazy_refcounts=on,refcount_bits=8", "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)"],
    ["refcount_bits=3", "Refcount width must be a power of two and may not exceed 64 bits"],
    ["refcount_bits=128", "Refcount width must be a power of two and may not exceed 64 bits"],
    ["compat=0.10,compression_type=zstd,refcount_bits=8", "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)"],
    ["compat=0.10,compression_type=zstd", "Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)"],
  ])("%s", (list, msg) => expect(v(list)).toThrow(msg));

  it("rejects sizes beyond the largest L1 table", () => {
    expect(() => qcow2CreateOptions(set("qcow2"), 2 ** 60)).toThrow(
      "The image size is too large for file format 'qcow2' (try using a larger cluster size)",
    );
    expect(qcow2CreateOptions(set("qcow2"), 2 ** 50).size).toBe(2 ** 50);
  });
  it("maps onto the engine's CreateOptions", () => {
    expect(qcow2CreateOptions(set("qcow2", "compat=v2,cluster_size=4k,backing_file=b.img,backing_fmt=raw"), 512)).toEqual({
      size: 512,
      clusterSize: 4096,
      compat: "0.10",
      lazyRefcounts: false,
      refcountBits: 16,
      extendedL2: false,
      compressionType: "zlib",
      backingFile: "b.img",
      backingFormat: "raw",
    });
  });
});

describe("-o help", () => {
  it("lists the supported options in qemu-img's layout", () => {
    const text = optionsHelp("qcow2");
    expect(text.startsWith("Supported qcow2 options:\n")).toBe(true);
    expect(text).toContain("  backing_file=<str>     - File name of a base image\n");
    expect(text).toContain("  compression_type=<str> - Compression method used for image cluster compression\n");
    expect(text).toContain("  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n");
  });
});
