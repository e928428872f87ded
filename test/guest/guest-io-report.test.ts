/**
 * The guest program's timing report (guest-images/refcow-io.c → src/guest/guest-io-report.ts): the program is
 * built for i386 with the host's compiler, as build.sh builds it, and run on the host against a plain file
 * (an x86-64 Linux runs i386 binaries), so the parser reads what the real program prints. Also the
 * decomposition of a phase and the clock check on constructed inputs.
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { decompose } from "../../src/guest/decomposition.js";
import { checkClock, decodeVarints, parseGuestIoLine, parseGuestIoReports, type GuestIoReport } from "../../src/guest/guest-io-report.js";
import type { DiskRequestRecord } from "../../src/guest/request-recorder.js";
import { formatCuts, parseCuts } from "../../src/guest/latency-cuts.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-io-test-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const source = path.resolve(__dirname, "../../guest-images/refcow-io.c");
const binary = path.join(dir, "refcow-io");

function compile(): boolean {
  const flags = ["-m32", "-Os", "-static", "-nostdlib", "-ffreestanding", "-fno-pic", "-fno-pie", "-no-pie", "-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-o", binary, source];
  return spawnSync("cc", flags, { stdio: "ignore" }).status === 0;
}
/** Runs the program without arguments: it refuses them with its usage line and status 2. */
function runBare(): { runs: boolean; stderr: string } {
  const r = spawnSync(binary, [], { encoding: "utf8" });
  return { runs: r.status === 2 && r.stderr.includes("usage: refcow-io"), stderr: r.stderr ?? "" };
}
/**
 * Why the real program cannot run here, or undefined when it can. Off CI: not an x86-64 Linux, or no C
 * compiler. Anywhere: a kernel that cannot execute i386 programs (built without IA32 emulation), where
 * exec fails with ENOEXEC and libc hands the file to /bin/sh, which reports a syntax error; the guest's
 * tests still run the program, in the guest.
 */
function notRunnable(): string | undefined {
  if (!process.env.CI) {
    if (process.platform !== "linux" || os.arch() !== "x64") return `refcow-io is an i386 Linux program, run here on the host: it needs an x86-64 Linux, not ${process.platform}/${os.arch()}`;
    if (spawnSync("cc", ["--version"], { stdio: "ignore" }).status !== 0) return "no C compiler (cc) on this machine: refcow-io is not built here, and the guest image's workloads use their busybox dd fallback";
  }
  if (!compiled) return undefined; // the test says so
  const bare = runBare();
  if (!bare.runs && /Syntax error|Exec format error|cannot execute binary file/.test(bare.stderr)) {
    return `this host's kernel cannot execute i386 programs (no IA32 emulation: ${bare.stderr.trim().split("\n")[0]}); the guest tests run refcow-io in the guest`;
  }
  return undefined;
}
const compiled = compile();
const unavailable = notRunnable();
const built = unavailable === undefined && compiled && runBare().runs;

/** A write report of `n` requests, each timed inside [before, after] of the host's CLOCK_MONOTONIC. */
function expectWritesTimedWithin(w: GuestIoReport | undefined, n: number, before: number, after: number): void {
  expect(w!.op).toBe("write");
  expect(w!.latenciesNs).toHaveLength(n);
  expect(w!.t0Ns).toBeGreaterThanOrEqual(before);
  for (let i = 0; i < n; i++) {
    expect(w!.latenciesNs[i]!).toBeGreaterThan(0);
    expect(w!.t0Ns + w!.startsNs[i]! + w!.latenciesNs[i]!).toBeLessThanOrEqual(after);
  }
}

describe("refcow-io's report, from the real program", () => {
  beforeEach((ctx) => {
    if (unavailable) ctx.skip(unavailable);
    expect(built, "refcow-io built with cc -m32 and ran on this host").toBe(true);
  });
  it("times every write and the fdatasync, and reports them in a form the host decodes", () => {
    const dev = path.join(dir, "dev");
    fs.writeFileSync(dev, Buffer.alloc(1 << 20));
    const blk = path.join(dir, "blk");
    fs.writeFileSync(blk, Buffer.alloc(4096, 0xab));
    const offsets = [0, 4096, 65536, 1 << 19, (1 << 20) - 4096];
    const t0 = process.hrtime.bigint();
    const out = execFileSync(binary, ["write", dev, blk, "sync"], { input: offsets.join("\n") + "\n" }).toString();
    const wall = Number(process.hrtime.bigint() - t0);
    const reports = parseGuestIoReports(out);
    expect(reports.map((r) => [r.op, r.latenciesNs.length])).toEqual([
      ["write", offsets.length],
      ["fdatasync", 1],
    ]);
    const w = reports[0]!;
    expect(w.startsNs[0]).toBe(0);
    for (let i = 1; i < w.startsNs.length; i++) expect(w.startsNs[i]!).toBeGreaterThanOrEqual(w.startsNs[i - 1]! + w.latenciesNs[i - 1]!);
    // The same clock as the host's CLOCK_MONOTONIC (TSC ticks at the rate learnt against it): t0 lies within
    // the run, every time inside its wall time.
    const lastEnd = w.startsNs.at(-1)! + w.latenciesNs.at(-1)!;
    expect(lastEnd).toBeLessThanOrEqual(wall);
    expect(reports[1]!.t0Ns).toBeGreaterThanOrEqual(w.t0Ns + lastEnd);
    const data = fs.readFileSync(dev);
    for (const o of offsets) expect(data.subarray(o, o + 4096).every((b) => b === 0xab)).toBe(true);
  });

  it("times requests kept in flight with Linux AIO on the host's CLOCK_MONOTONIC, from the TSC", () => {
    const dev = path.join(dir, "dev3");
    fs.writeFileSync(dev, Buffer.alloc(1 << 20));
    const blk = path.join(dir, "blk3");
    fs.writeFileSync(blk, Buffer.alloc(4096, 0x5a));
    const offsets = Array.from({ length: 64 }, (_, i) => ((i * 37) % 256) * 4096);
    // process.hrtime reads CLOCK_MONOTONIC: the program's times, converted from TSC ticks at the rate it
    // learnt against that clock, lie between the host's readings before and after the run.
    const before = Number(process.hrtime.bigint());
    const out = execFileSync(binary, ["write", dev, blk, "sync", "depth=4"], { input: offsets.join("\n") + "\n" }).toString();
    const after = Number(process.hrtime.bigint());
    const [w, f] = parseGuestIoReports(out);
    expectWritesTimedWithin(w, offsets.length, before, after);
    expect(f!.op).toBe("fdatasync");
    expect(f!.t0Ns).toBeGreaterThanOrEqual(w!.t0Ns + w!.startsNs.at(-1)!);
    expect(f!.t0Ns + f!.latenciesNs[0]!).toBeLessThanOrEqual(after);
    const data = fs.readFileSync(dev);
    for (const o of offsets) expect(data.subarray(o, o + 4096).every((b) => b === 0x5a)).toBe(true);
  });

  it("keeps requests in flight with io_uring (registered buffer and file) and times them the same way", (ctx) => {
    const dev = path.join(dir, "dev4");
    fs.writeFileSync(dev, Buffer.alloc(1 << 20));
    const blk = path.join(dir, "blk4");
    fs.writeFileSync(blk, Buffer.alloc(4096, 0x3c));
    const offsets = Array.from({ length: 100 }, (_, i) => ((i * 53) % 256) * 4096);
    const before = Number(process.hrtime.bigint());
    const r = spawnSync(binary, ["write", dev, blk, "sync", "depth=8", "uring"], { input: offsets.join("\n") + "\n" });
    const after = Number(process.hrtime.bigint());
    // A container's seccomp filter may refuse io_uring (EPERM, ENOSYS): the guest kernel has it.
    if (r.status === 1 && /^refcow-io: io_uring_setup failed at offset 0 \(error (1|38)\)\n$/.test(r.stderr.toString()) && !process.env.CI) {
      ctx.skip("this host's kernel or its seccomp filter refuses io_uring_setup: the guest kernel has io_uring, and the virtio tests run this mode in the guest");
    }
    expect(r.stderr.toString()).toBe("");
    expect(r.status).toBe(0);
    const [w, f] = parseGuestIoReports(r.stdout.toString());
    expectWritesTimedWithin(w, offsets.length, before, after);
    expect(f!.op).toBe("fdatasync");
    const data = fs.readFileSync(dev);
    for (const o of offsets) expect(data.subarray(o, o + 4096).every((b) => b === 0x3c)).toBe(true);
    // Every other block stayed zero.
    const written = new Set(offsets);
    for (let o = 0; o < 1 << 20; o += 4096) if (!written.has(o)) expect(data.subarray(o, o + 4096).every((b) => b === 0), `block at ${o}`).toBe(true);
    const bad = spawnSync(binary, ["write", dev, blk, "depth=4", "uring"], { input: "4096\n100\n" });
    expect(bad.status).toBe(1);
    expect(bad.stderr.toString()).toMatch(/^refcow-io: write failed at offset 100 \(error 22\)\n$/);
  });

  it("reads report as reads, and failures are one line on stderr with nothing reported", () => {
    const dev = path.join(dir, "dev2");
    fs.writeFileSync(dev, Buffer.alloc(65536));
    const blk = path.join(dir, "blk2");
    fs.writeFileSync(blk, Buffer.alloc(512));
    const out = execFileSync(binary, ["read", dev, blk], { input: "0\n512\n1024\n" }).toString();
    expect(parseGuestIoReports(out).map((r) => [r.op, r.latenciesNs.length])).toEqual([["read", 3]]);
    const bad = spawnSync(binary, ["write", dev, blk], { input: "100\n" });
    expect(bad.status).toBe(1);
    expect(bad.stderr.toString()).toMatch(/^refcow-io: write failed at offset 100 \(error 22\)\n$/);
    expect(bad.stdout.toString()).toBe("");
  });
});

describe("REFCOW-IO parsing", () => {
  it("decodes base-64 varints, least significant digit first", () => {
    // 0 → "0"; 31 → "V" (index 31, no more); 32 → "W" (0, more follows) then "1"
    expect(decodeVarints("0VW1")).toEqual([0, 31, 32]);
    let v = 1_000_000;
    let text = "";
    const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._";
    do {
      const d = v % 32;
      v = Math.floor(v / 32);
      text += digits[d + (v ? 32 : 0)];
    } while (v);
    expect(decodeVarints(text)).toEqual([1_000_000]);
    expect(() => decodeVarints("W")).toThrow(/cut short/);
    expect(() => decodeVarints("0 1")).toThrow(/not a base-64 digit/);
  });

  it("refuses a report whose count does not match its pairs, and ignores other lines", () => {
    expect(parseGuestIoLine("REFCOW-DONE 0")).toBeUndefined();
    expect(() => parseGuestIoLine("REFCOW-IO write 2 100 00")).toThrow(/2 requests announced, 1 reported/);
    expect(parseGuestIoLine("REFCOW-IO write 1 100 0F\r")).toEqual({ op: "write", t0Ns: 100, startsNs: [0], latenciesNs: [15] });
  });
});

/** n requests 1 ms apart on the host, the guest's clock running `ppm` fast, each with a way to the device. */
function run(n: number, ppm: number, way: (i: number) => number): { report: GuestIoReport; records: DiskRequestRecord[] } {
  const records: DiskRequestRecord[] = [];
  const startsNs: number[] = [];
  const latenciesNs: number[] = [];
  for (let i = 0; i < n; i++) {
    const hostStartMs = 1000 + i;
    startsNs.push(Math.round((hostStartMs - 1000) * 1e6 * (1 + ppm / 1e6)));
    latenciesNs.push(300_000 + i);
    records.push({ op: "write", offset: i * 4096, length: 4096, phase: "p", submitted: hostStartMs + way(i) / 1000, queuedMs: 0, latencyMs: 0.2, serviceMs: 0.05, ringMs: 0.1 });
  }
  return { report: { op: "write", t0Ns: 5e9, startsNs, latenciesNs }, records };
}

describe("the clock check and the decomposition", () => {
  it("finds the guest clock's rate error through a varying way to the device and a few outliers", () => {
    const { report, records } = run(400, 100, (i) => 200 + (i % 7) * 10 + (i % 50 === 3 ? 5000 : 0));
    const c = checkClock(report, records.map((r) => r.submitted))!;
    expect(c.driftPpm).toBeGreaterThan(60);
    expect(c.driftPpm).toBeLessThan(140);
    expect(checkClock(report, records.slice(1).map((r) => r.submitted))).toBeUndefined();
  });

  it("gives the four columns and the emulator's share of a phase", () => {
    const { report, records } = run(100, 0, () => 150);
    const d = decompose(records, [report, { op: "fdatasync", t0Ns: 0, startsNs: [0], latenciesNs: [2_000_000] }], "write")!;
    expect(d.app_us!.count).toBe(100);
    expect(d.app_us!.median).toBeCloseTo(300.05, 1);
    expect(d.device_us.median).toBeCloseTo(200, 6);
    expect(d.ring_us!.median).toBeCloseTo(100, 6);
    expect(d.engine_us!.median).toBeCloseTo(50, 6);
    expect(d.emulator_us).toBeCloseTo(d.app_us!.median - 50, 6);
    expect(d.emulator_paired_us!.count).toBe(100);
    expect(Math.abs(d.clock!.driftPpm)).toBeLessThan(1);
    const f = decompose(records, [{ op: "fdatasync", t0Ns: 0, startsNs: [0], latenciesNs: [2_000_000] }], "flush")!;
    expect(f.app_us!.median).toBe(2000);
    expect(f.device_us.count).toBe(0);
  });

  it("parses the cuts option", () => {
    expect(parseCuts("all")).toEqual({ spin: true, wake: true, nocopy: true });
    expect(formatCuts(parseCuts("spin,nocopy"))).toBe("spin,nocopy");
    expect(formatCuts(parseCuts("none"))).toBe("none");
    expect(() => parseCuts("fast")).toThrow(/unknown cut 'fast' \(all, none, or a list of: spin, wake, nocopy\)/);
  });
});
