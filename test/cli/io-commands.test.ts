/**
 * qemu-io's command set against an in-memory target (no engine): output text, streams and status as
 * qemu-io 7.2 prints them.
 */
import { describe, expect, it } from "vitest";
import type { CliIo } from "../../src/cli/command.js";
import { dumpBuffer, printReport, timestr } from "../../src/cli/io/report.js";
import { AioRequests } from "../../src/cli/io/aio-requests.js";
import { parsePattern, parseWholeLong } from "../../src/cli/io/command.js";
import type { IoContext, IoTarget } from "../../src/cli/io/context.js";
import { runIoCommand, splitCommandLine } from "../../src/cli/io/table.js";

/** A disk in memory; a 512-byte sector is "allocated" once written, zeroed or discarded. */
function memoryTarget(size: number, readOnly = false): IoTarget & { bytes: Uint8Array; flushes: number } {
  let bytes = new Uint8Array(size);
  let allocated = new Uint8Array(Math.ceil(size / 512));
  const mark = (o: number, n: number) => allocated.fill(1, Math.floor(o / 512), Math.ceil((o + n) / 512));
  const t = {
    get bytes() {
      return bytes;
    },
    flushes: 0,
    get size() {
      return bytes.length;
    },
    readOnly,
    read: (o: number, n: number) => bytes.slice(o, o + n),
    write: (o: number, d: Uint8Array) => {
      bytes.set(d, o);
      mark(o, d.length);
    },
    writeZeroes: (o: number, n: number) => {
      bytes.fill(0, o, o + n);
      mark(o, n);
    },
    discard: (o: number, n: number) => {
      bytes.fill(0, o, o + n);
      mark(o, n);
    },
    flush: () => {
      t.flushes++;
    },
    allocation: (o: number, n: number) => {
      const runs: { allocated: boolean; length: number }[] = [];
      for (let pos = o; pos < Math.min(o + n, bytes.length); ) {
        const len = Math.min(512 - (pos % 512), o + n - pos, bytes.length - pos);
        const a = allocated[Math.floor(pos / 512)] === 1;
        const last = runs[runs.length - 1];
        if (last && last.allocated === a) last.length += len;
        else runs.push({ allocated: a, length: len });
        pos += len;
      }
      return runs;
    },
    resize: (n: number) => {
      const b = new Uint8Array(n);
      b.set(bytes.subarray(0, Math.min(n, bytes.length)));
      bytes = b;
      const a = new Uint8Array(Math.ceil(n / 512));
      a.set(allocated.subarray(0, a.length));
      allocated = a;
    },
    describe: () => ({ formatName: "qcow2", clusterSize: 65536, vmStateOffset: 536870912, specific: "    compat: 1.1\n" }),
  };
  return t;
}

function session(target: IoTarget) {
  let out = "";
  let err = "";
  const io: CliIo = { out: (s) => void (out += s), err: (s) => void (err += s) };
  const ctx: IoContext = { target, io, quit: false, aio: new AioRequests() };
  return {
    ctx,
    async run(line: string) {
      out = "";
      err = "";
      const rc = await runIoCommand(ctx, line);
      // The rate figures vary from run to run.
      return { rc, out: out.replace(/ops; .*\n/g, "ops; TIME\n"), err };
    },
    /** What the end of a session prints: the aio completions not yet reported. */
    async end() {
      out = "";
      await ctx.aio.drain(io);
      return out.replace(/ops; .*\n/g, "ops; TIME\n");
    },
  };
}

const REPORT = (op: string, n: number, off: number, human: string) => `${op} ${n}/${n} bytes at offset ${off}\n${human}, 1 ops; TIME\n`;

describe("read / write / discard", () => {
  it("writes a pattern and verifies it", async () => {
    const s = session(memoryTarget(1 << 20));
    expect(await s.run("write -P 0xaa 0 64k")).toEqual({ rc: 0, out: REPORT("wrote", 65536, 0, "64 KiB"), err: "" });
    expect(await s.run("read -P 0xaa 0 64k")).toEqual({ rc: 0, out: REPORT("read", 65536, 0, "64 KiB"), err: "" });
    expect(await s.run("write 1k 1.5k")).toEqual({ rc: 0, out: REPORT("wrote", 1536, 1024, "1.500 KiB"), err: "" });
    expect(await s.run("read -P 0xcd 1024 1536")).toMatchObject({ rc: 0 });
  });
  it("a pattern mismatch fails the command (status non-zero) but still reports the read", async () => {
    const s = session(memoryTarget(1 << 20));
    expect(await s.run("read -P 0xab 0 4k")).toEqual({
      rc: -22,
      out: "Pattern verification failed at offset 0, 4096 bytes\n" + REPORT("read", 4096, 0, "4 KiB"),
      err: "",
    });
    expect((await s.run("read -P 1 -s 512 -l 100 0 4k")).out).toMatch(/^Pattern verification failed at offset 512, 100 bytes\n/);
  });
  it("-q, -C, -v", async () => {
    const t = memoryTarget(1 << 20);
    t.bytes.set([0x41, 0x42, 0x00, 0xff], 16);
    const s = session(t);
    expect(await s.run("read -q 0 4k")).toEqual({ rc: 0, out: "", err: "" });
    expect((await s.run("read -C 0 4k")).out).toMatch(/^4096,1,0:00:\d\d\.\d\d,[0-9.]+,[0-9.]+\n$/);
    expect((await s.run("read -v 0 20")).out).toBe(
      "00000000:  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................\n" +
        "00000010:  41 42 00 ff  AB..\n" +
        REPORT("read", 20, 0, "20 bytes"),
    );
  });
  it("write -z and discard zero the range; write -f flushes", async () => {
    const t = memoryTarget(1 << 20);
    t.bytes.fill(7);
    const s = session(t);
    expect(await s.run("write -z 0 4k")).toMatchObject({ rc: 0, out: REPORT("wrote", 4096, 0, "4 KiB") });
    expect(await s.run("discard 4k 4k")).toMatchObject({ rc: 0, out: REPORT("discard", 4096, 4096, "4 KiB") });
    expect(t.bytes.subarray(0, 8192).every((b) => b === 0)).toBe(true);
    expect(t.bytes[8192]).toBe(7);
    await s.run("write -f 0 512");
    expect(t.flushes).toBe(1);
  });
  it("requests past the end fail with EIO, zero-length ones at the end succeed", async () => {
    const s = session(memoryTarget(65536));
    expect(await s.run("read 64k 1")).toEqual({ rc: -5, out: "read failed: Input/output error\n", err: "" });
    expect(await s.run("write 0 1M")).toEqual({ rc: -5, out: "write failed: Input/output error\n", err: "" });
    expect(await s.run("discard 60k 8k")).toEqual({ rc: -5, out: "discard failed: Input/output error\n", err: "" });
    expect(await s.run("write 64k 0")).toEqual({ rc: 0, out: REPORT("wrote", 0, 65536, "0 bytes"), err: "" });
  });
});

const READ_USAGE = "read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset\n";

describe("errors, worded as qemu-io's", () => {
  it.each([
    ["foo", "", 'command "foo" not found\n'],
    ["read", "", "bad argument count 0 to read, expected at least 2 arguments\n"],
    ["read -P", "", "bad argument count 1 to read, expected at least 2 arguments\n"],
    ["flush x", "", "bad argument count 1 to flush, expected 0 arguments\n"],
    ["read x 1", "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- x\n", ""],
    ["read -P 0xaa 0 4k extra", READ_USAGE, ""],
    ["read -P 300 0 4k", "300 is not a valid pattern byte\n", ""],
    ["read -P x 0 4k", "x is not a valid pattern byte\n", ""],
    ["read 0 -1", READ_USAGE, "read: invalid option -- '1'\n"],
    ["read -Z 0 4k", READ_USAGE, "read: invalid option -- 'Z'\n"],
    ["write -P 1 0 1000000000000000000000", "Parsing error: argument too large -- 1000000000000000000000\n", ""],
    ["write -z -P 1 0 4k", "Only one of -z, -P, and -s can be specified at the same time\n", ""],
    ["read -l 512 0 4k", READ_USAGE, ""],
    ["read -s 512 0 4k", READ_USAGE, ""],
    ["write -u 0 4k", "-u requires -z to be specified\n", ""],
    ["write -n 0 4k", "-n requires -z to be specified\n", ""],
    ["write 0 3G", "length cannot exceed 2147483136 without -n, given 3G\n", ""],
    ["read 0 3G", "length cannot exceed 2147483136, given 3G\n", ""],
    ["discard 0 3G", "length cannot exceed 2147483136, given 3G\n", ""],
    ["read -P 1 -s 8k 0 4k", "pattern verification range exceeds end of read data\n", ""],
    ["read -P 1 -s 1k -l 4k 0 4k", "pattern verification range exceeds end of read data\n", ""],
    ["write -c 1 4k", "1 is not a sector-aligned value for 'offset'\n", ""],
    ["write 1.5 1", "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- 1.5\n", ""],
    ["help nosuch", "command nosuch not found\n", ""],
  ])("%s", async (line, out, err) => {
    const s = session(memoryTarget(1 << 20));
    const r = await s.run(line);
    expect(r.rc).not.toBe(0);
    expect(r.out).toBe(out);
    expect(r.err).toBe(err);
  });
  it("write on a read-only image", async () => {
    const s = session(memoryTarget(4096, true));
    expect(await s.run("write 0 1")).toEqual({ rc: -1, out: "", err: "refcow: Block node is read-only\n" });
    expect((await s.run("read 0 1")).rc).toBe(0);
  });
});

describe("other commands", () => {
  it("length, info, flush, aliases, help, quit, empty line", async () => {
    const t = memoryTarget(64 << 20);
    const s = session(t);
    expect(await s.run("length")).toEqual({ rc: 0, out: "64 MiB\n", err: "" });
    expect(await s.run("l")).toEqual({ rc: 0, out: "64 MiB\n", err: "" });
    expect((await s.run("info")).out).toBe(
      "format name: qcow2\ncluster size: 64 KiB\nvm state offset: 512 MiB\nFormat specific information:\n    compat: 1.1\n",
    );
    expect(await s.run("f")).toEqual({ rc: 0, out: "", err: "" });
    expect(t.flushes).toBe(1);
    expect((await s.run("r 0 1")).out).toBe(REPORT("read", 1, 0, "1 bytes"));
    expect((await s.run("help flush")).out).toBe("flush -- flush all in-core file state to disk\n");
    expect((await s.run("help read")).out.startsWith(`${READ_USAGE}\n reads a range of bytes from the given offset\n`)).toBe(true);
    expect((await s.run("help")).out.endsWith("\nUse 'help commandname' for extended help.\n")).toBe(true);
    expect(await s.run("")).toEqual({ rc: 0, out: "", err: "" });
    await s.run("quit");
    expect(s.ctx.quit).toBe(true);
  });
  it("splits command lines on spaces only", () => {
    expect(splitCommandLine("  read  0   512 ")).toEqual(["read", "0", "512"]);
  });
  it("parses pattern bytes like strtol(…, 0)", () => {
    expect(parsePattern("0xaa")).toBe(0xaa);
    expect(parsePattern("010")).toBe(8);
    expect(parsePattern("255")).toBe(255);
    expect(parsePattern("")).toBe(0);
    expect(parsePattern("256")).toBeUndefined();
    expect(parsePattern("-1")).toBeUndefined();
    expect(parsePattern("0x")).toBeUndefined();
  });
});

describe("report formatting", () => {
  it("timestr", () => {
    expect(timestr({ sec: 0, nsec: 1_234_567 }, false)).toBe("00.00 sec");
    expect(timestr({ sec: 0, nsec: 456_000_000 }, false)).toBe("00.46 sec");
    expect(timestr({ sec: 7, nsec: 960_000_000 }, false)).toBe("0:00:07.96");
    expect(timestr({ sec: 3725, nsec: 0 }, false)).toBe("1:02:05.00");
    expect(timestr({ sec: 0, nsec: 170_000_000 }, true)).toBe("0:00:00.17");
  });
  it("printReport", () => {
    expect(printReport("wrote", { sec: 0, nsec: 1_000_000 }, 0, 4096, 4096, 1, false)).toBe(
      "wrote 4096/4096 bytes at offset 0\n4 KiB, 1 ops; 00.00 sec (3.906 MiB/sec and 1000.0000 ops/sec)\n",
    );
    expect(printReport("read", { sec: 2, nsec: 0 }, 0, 4096, 4096, 1, true)).toBe("4096,1,0:00:02.00,2048.000,0.500\n");
  });
  it("dumpBuffer", () => {
    expect(dumpBuffer(new Uint8Array([0x61, 0x20, 0x7a]), 0x100)).toBe("00000100:  61 20 7a  a.z\n");
  });
});

describe("readv / writev", () => {
  it("several iovec lengths make one request over their sum", async () => {
    const s = session(memoryTarget(1 << 20));
    expect(await s.run("writev -P 0x44 0 1 2 3")).toEqual({ rc: 0, out: REPORT("wrote", 6, 0, "6 bytes"), err: "" });
    expect(await s.run("writev -P 0x55 4k 4k 60k")).toEqual({ rc: 0, out: REPORT("wrote", 65536, 4096, "64 KiB"), err: "" });
    expect(await s.run("readv -P 0x55 4k 512 4k 1.5k 58k")).toEqual({ rc: 0, out: REPORT("read", 65536, 4096, "64 KiB"), err: "" });
    expect((await s.run("readv -v 0 4 4")).out).toBe("00000000:  44 44 44 44 44 44 00 00  DDDDDD..\n" + REPORT("read", 8, 0, "8 bytes"));
    expect(await s.run("readv -q 0 4k")).toEqual({ rc: 0, out: "", err: "" });
    expect((await s.run("readv -C 0 4k")).out).toMatch(/^4096,1,0:00:\d\d\.\d\d,[0-9.]+,[0-9.]+\n$/);
    expect(await s.run("writev -q -f 0 512")).toEqual({ rc: 0, out: "", err: "" });
  });
  it("a pattern mismatch fails readv, and the report follows", async () => {
    const s = session(memoryTarget(1 << 20));
    expect(await s.run("readv -P 0x12 0 4k")).toEqual({ rc: -22, out: "Pattern verification failed at offset 0, 4096 bytes\n" + REPORT("read", 4096, 0, "4 KiB"), err: "" });
  });
  it.each([
    ["readv 0 3G", "Argument '3G' exceeds maximum size 2147483136\n", ""],
    ["readv 0 2G 2G", "Argument '2G' exceeds maximum size 2147483136\n", ""],
    ["readv 0 1G 1G", "The total number of bytes exceed the maximum size 2147483136\n", ""],
    ["readv 1M 512", "readv failed: Input/output error\n", ""],
    ["writev 1M 512", "writev failed: Input/output error\n", ""],
    ["readv x 512", "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- x\n", ""],
    ["writev -z 0 4k", "writev [-Cfq] [-P pattern] off len [len..] -- writes a number of bytes at a specified offset\n", "writev: invalid option -- 'z'\n"],
    ["readv 0", "", "bad argument count 1 to readv, expected at least 2 arguments\n"],
  ])("%s", async (line, out, err) => {
    const r = await session(memoryTarget(1 << 20)).run(line);
    expect(r).toEqual({ rc: expect.not.stringMatching(/^0$/) as unknown as number, out, err });
  });
});

describe("aio_read / aio_write / aio_flush", () => {
  it("completions print at the next wait for I/O, not before; aio_flush waits for all", async () => {
    const t = memoryTarget(1 << 20);
    const s = session(t);
    expect(await s.run("aio_write -P 0x55 0 4k 4k")).toEqual({ rc: 0, out: "", err: "" });
    expect(await s.run("aio_write -P 0x66 64k 64k")).toEqual({ rc: 0, out: "", err: "" });
    // length does not wait for I/O (qemu-io's does not run its event loop).
    expect(await s.run("length")).toEqual({ rc: 0, out: "1 MiB\n", err: "" });
    expect(await s.run("aio_flush")).toEqual({ rc: 0, out: REPORT("wrote", 8192, 0, "8 KiB") + REPORT("wrote", 65536, 65536, "64 KiB"), err: "" });
    expect(t.bytes[8191]).toBe(0x55);
    await s.run("aio_read -P 0x55 0 8k");
    // A synchronous request waits for I/O: the aio completion comes first.
    expect((await s.run("read -q 0 1")).out).toBe(REPORT("read", 8192, 0, "8 KiB"));
    await s.run("aio_read -v 64k 16");
    await s.run("aio_read -P 0x12 0 512");
    await s.run("aio_read -q 0 512");
    expect((await s.run("aio_flush")).out).toBe(
      "00010000:  66 66 66 66 66 66 66 66 66 66 66 66 66 66 66 66  ffffffffffffffff\n" +
        REPORT("read", 16, 65536, "16 bytes") +
        "Pattern verification failed at offset 0, 512 bytes\n" +
        REPORT("read", 512, 0, "512 bytes"),
    );
    // Failures complete like any other request and leave the status alone.
    expect(await s.run("aio_read 1M 512")).toEqual({ rc: 0, out: "", err: "" });
    expect(await s.run("aio_write -z 1M 512")).toEqual({ rc: 0, out: "", err: "" });
    await s.run("aio_write -z -u 0 4k");
    expect(await s.end()).toBe("readv failed: Input/output error\naio_write failed: Input/output error\n" + REPORT("wrote", 4096, 0, "4 KiB"));
    expect(t.bytes.subarray(0, 4096).every((b) => b === 0)).toBe(true);
  });
  it("-i, -z with -P (qemu-io 7.2 writes zeroes), -f", async () => {
    const t = memoryTarget(1 << 20);
    t.bytes.fill(9);
    const s = session(t);
    expect(await s.run("aio_read -i 0 4k")).toEqual({ rc: 0, out: "injecting invalid read request\n", err: "" });
    expect(await s.run("aio_write -i -Z 0 4k")).toEqual({ rc: 0, out: "injecting invalid write request\n", err: "" });
    await s.run("aio_write -z -P 1 0 4k");
    await s.run("aio_write -f -q 8k 512");
    expect(await s.run("aio_flush")).toEqual({ rc: 0, out: REPORT("wrote", 4096, 0, "4 KiB"), err: "" });
    expect(t.bytes[0]).toBe(0);
    expect(t.bytes[8192]).toBe(0xcd);
    expect(t.flushes).toBe(1);
  });
  it.each([
    ["aio_write -z 0 4k 4k", "-z supports only a single length parameter\n", ""],
    ["aio_write -u 0 4k", "-u requires -z to be specified\n", ""],
    ["aio_write 0 3G", "Argument '3G' exceeds maximum size 2147483136\n", ""],
    ["aio_write -P x 0 4k", "x is not a valid pattern byte\n", ""],
    ["aio_read -Z 0 4k", "aio_read [-Ciqv] [-P pattern] off len [len..] -- asynchronously reads a number of bytes\n", "aio_read: invalid option -- 'Z'\n"],
    ["aio_flush x", "", "bad argument count 1 to aio_flush, expected 0 arguments\n"],
  ])("%s", async (line, out, err) => {
    const r = await session(memoryTarget(1 << 20)).run(line);
    expect(r.rc).not.toBe(0);
    expect({ out: r.out, err: r.err }).toEqual({ out, err });
  });
});

describe("alloc / map / truncate / sleep", () => {
  it("qemu-io's wording", async () => {
    const t = memoryTarget(4 << 20);
    const s = session(t);
    await s.run("write 0 4k");
    await s.run("write -z 1M 64k");
    expect((await s.run("map")).out).toBe(
      "4 KiB (0x1000) bytes     allocated at offset 0 bytes (0x0)\n" +
        "1020 KiB (0xff000) bytes not allocated at offset 4 KiB (0x1000)\n" +
        "64 KiB (0x10000) bytes     allocated at offset 1 MiB (0x100000)\n" +
        "2.938 MiB (0x2f0000) bytes not allocated at offset 1.062 MiB (0x110000)\n",
    );
    expect((await s.run("alloc 0")).out).toBe("512/512 bytes allocated at offset 0 bytes\n");
    expect((await s.run("a 1")).out).toBe("512/512 bytes allocated at offset 1 bytes\n");
    expect((await s.run("alloc 0 2M")).out).toBe("69632/2097152 bytes allocated at offset 0 bytes\n");
    // Past the end the count shrinks to the disk's end.
    expect((await s.run("alloc 3M 2M")).out).toBe("0/1048576 bytes allocated at offset 3 MiB\n");
    expect((await s.run("alloc 100M")).out).toBe("0/0 bytes allocated at offset 100 MiB\n");
    expect((await s.run("alloc x")).out).toBe("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- x\n");
    expect(await s.run("truncate 8M")).toEqual({ rc: 0, out: "", err: "" });
    expect((await s.run("length")).out).toBe("8 MiB\n");
    expect(await s.run("t 1M")).toEqual({ rc: 0, out: "", err: "" });
    expect((await s.run("map")).out).toBe("4 KiB (0x1000) bytes     allocated at offset 0 bytes (0x0)\n1020 KiB (0xff000) bytes not allocated at offset 4 KiB (0x1000)\n");
    expect(await s.run("truncate -m bogus 2M")).toMatchObject({ err: "refcow: Invalid preallocation mode 'bogus'\n" });
    expect(await s.run("truncate -m full 2M")).toMatchObject({ err: 'refcow: qemu-io command "truncate -m full" is not supported by refcow\n' });
    expect(await s.run("truncate 2M 1")).toMatchObject({ rc: 0 });
    expect(t.size).toBe(2 << 20);
    expect(await s.run("sleep 1")).toEqual({ rc: 0, out: "", err: "" });
    expect(await s.run("sleep 0x1")).toEqual({ rc: 0, out: "", err: "" });
    expect(await s.run("sleep 1x")).toEqual({ rc: -22, out: "1x is not a valid number\n", err: "" });
    expect(await s.run("sleep -1")).toEqual({ rc: -22, out: "-1 is not a valid number\n", err: "" });
  });
  it("read-only images refuse truncate", async () => {
    const s = session(memoryTarget(4096, true));
    expect(await s.run("truncate 8k")).toEqual({ rc: -1, out: "", err: "refcow: Block node is read-only\n" });
  });
  it("strtol(..., 0) on a whole argument", () => {
    expect(parseWholeLong("+5")).toBe(5);
    expect(parseWholeLong("-010")).toBe(-8);
    expect(parseWholeLong("0x")).toBeUndefined();
  });
});

describe("what refcow lacks", () => {
  it.each(["break a b", "remove_break t", "resume t", "wait_break t", "help resume", "write -c 0 4k"])(
    "%s fails with one line naming it",
    async (line) => {
      const r = await session(memoryTarget(1 << 20)).run(line);
      const name = line.startsWith("help ") ? line.slice(5) : line.split(" ").slice(0, /^(write|read) -/.test(line) ? 2 : 1).join(" ");
      expect(r).toEqual({ rc: -95, out: "", err: `refcow: qemu-io command "${name}" is not supported by refcow\n` });
    },
  );
});

describe("read -b / write -b on a target without a VM-state area (raw)", () => {
  it("fail as qemu-io's do on raw", async () => {
    const s = session(memoryTarget(1 << 20));
    expect(await s.run("read -b 0 512")).toEqual({ rc: -95, out: "read failed: Operation not supported\n", err: "" });
    expect(await s.run("write -b 0 512")).toEqual({ rc: -95, out: "write failed: Operation not supported\n", err: "" });
    expect(await s.run("write -b 0 1")).toEqual({ rc: -22, out: "1 is not a sector-aligned value for 'count'\n", err: "" });
    expect(await s.run("write -f -c 0 512")).toEqual({ rc: -22, out: "-f and -b or -c cannot be specified at the same time\n", err: "" });
    // -z comes before -c, as in qemu-io.
    expect((await s.run("write -c -z 0 512")).rc).toBe(0);
  });
});

describe("open / close", () => {
  it("what open refuses, and commands without an image", async () => {
    const t = memoryTarget(1 << 20);
    const s = session(t);
    const opened: string[] = [];
    s.ctx.files = {
      open: async (p) => {
        opened.push(p);
        return memoryTarget(2 << 20);
      },
      close: async () => {},
      reopen: async () => memoryTarget(2 << 20),
      isOpen: () => true,
    };
    expect(await s.run("open x")).toEqual({ rc: -22, out: "", err: "refcow: file open already, try 'help close'\n" });
    expect(await s.run("close")).toEqual({ rc: 0, out: "", err: "" });
    expect(await s.run("length")).toEqual({ rc: -22, out: "", err: "no file open, try 'help open'\n" });
    expect(await s.run("open -C x")).toEqual({ rc: -95, out: "", err: 'refcow: qemu-io command "open -C" is not supported by refcow\n' });
    expect(await s.run("open -o driver=qcow2,foo=bar x")).toEqual({ rc: -95, out: "", err: 'refcow: qemu-io command "open -o foo=bar" is not supported by refcow\n' });
    expect(await s.run("open -U x")).toMatchObject({ rc: -22, err: "refcow: can't open device x: force-share=on can only be used with read-only images\n" });
    expect(opened).toEqual([]);
    expect(await s.run("open -r -o driver=raw y")).toEqual({ rc: 0, out: "", err: "" });
    expect(opened).toEqual(["y"]);
    expect(await s.run("length")).toEqual({ rc: 0, out: "2 MiB\n", err: "" });
  });
});
