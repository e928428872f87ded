/**
 * The demo OS bench's parsing of what the guest printed and its report (src/bench/boot-os*.ts), on
 * figures made up here: a failed run is a row with its reason, ratios are per repetition, the targets are
 * judged on their medians. No machine is booted.
 */
import { describe, expect, it } from "vitest";
import { formatReport } from "../../src/bench/boot-os.js";
import { parseDdReport, type OsBenchRun } from "../../src/bench/boot-os-run.js";

function run(source: OsBenchRun["source"], bootMs: number, writeMs: number, readMs: number, rssMiB: number): OsBenchRun {
  return {
    source,
    image: "x",
    prepMs: 300,
    boot: { ms: bootMs, cpuMs: bootMs, instructions: 2.8e9 },
    write: { ms: writeMs, cpuMs: writeMs, instructions: 1e7, guestSeconds: writeMs / 1000, bytes: 64 * 2 ** 20 },
    read: { ms: readMs, cpuMs: readMs, instructions: 1e7, guestSeconds: readMs / 1000, bytes: 64 * 2 ** 20 },
    peakRssBytes: rssMiB * 2 ** 20,
  };
}

describe("parseDdReport", () => {
  it("takes busybox dd's record count and the guest's uptime around it", () => {
    const text = "dd if=/dev/zero of=/dev/sda ...\r\n64+0 records in\r\n64+0 records out\r\nGUEST-UPTIME 31.52 33.90\r\n";
    const r = parseDdReport(text, "write");
    expect(r.bytes).toBe(64 * 2 ** 20);
    expect(r.guestSeconds).toBeCloseTo(2.38, 5);
  });

  it("leaves out what the guest did not print, and makes a dd error an error", () => {
    expect(parseDdReport("nothing here", "read")).toEqual({ bytes: undefined, guestSeconds: undefined });
    expect(() => parseDdReport("dd: can't open '/dev/sdb': No such device or address\n", "read")).toThrow(/dd \(read\) failed in the guest/);
  });
});

describe("formatReport", () => {
  const results = [
    { case: "refcow-ide", rep: 0, run: run("refcow-ide", 20_000, 1000, 500, 300), check: "clean" },
    { case: "v86-buffer", rep: 0, run: run("v86-buffer", 20_000, 900, 400, 1400) },
    { case: "refcow-ide", rep: 1, run: run("refcow-ide", 22_000, 1200, 500, 310), check: "clean" },
    { case: "v86-buffer", rep: 1, run: run("v86-buffer", 20_000, 1000, 500, 1400) },
    { case: "refcow-ide-4g", rep: 0, run: run("refcow-ide", 20_000, 1000, 500, 300), check: "clean" },
    { case: "refcow-ide-16g", rep: 0, run: run("refcow-ide", 20_000, 1000, 500, 360), check: "clean" },
    { case: "refcow-ide-4g", rep: 1, run: run("refcow-ide", 20_000, 1000, 500, 300), check: "clean" },
    { case: "refcow-ide-16g", rep: 1, error: "the run exited with status 1: boom" },
  ];
  const text = formatReport(["refcow-ide", "v86-buffer", "refcow-virtio", "refcow-ide-4g", "refcow-ide-16g"], results, 2, 128);

  it("prints medians with their range, and a case that never ran or failed as a row with its reason", () => {
    const row = (name: string) => text.split("\n").find((l) => l.startsWith(name + " "))!;
    // boot 20.0 and 22.0 s: the lower middle of two (src/stats's nearest rank) with the range
    expect(row("refcow-ide")).toMatch(/^refcow-ide +0\.3 \(0\.3–0\.3\) +20\.0 \(20\.0–22\.0\) +20\.0 \(20\.0–22\.0\) +2\.80 /);
    expect(row("refcow-virtio")).toMatch(/failed: not run/);
    expect(row("refcow-ide-16g")).toMatch(/1 failed: rep 2: the run exited with status 1: boom/);
  });

  it("gives each repetition's ratio and judges the targets on the median", () => {
    // boot: 20/20 = 1.00, 22/20 = 1.10
    expect(text).toMatch(/boot time, refcow-ide \/ v86-buffer: .*\[per repetition: 1\.00, 1\.10\]  target <= 1\.1: met/);
    // write throughput: (64/1.0)/(64/0.9) = 0.90, (64/1.2)/(64/1.0) = 0.83
    expect(text).toMatch(/write throughput, refcow-ide \/ v86-buffer: .*\[per repetition: 0\.90, 0\.83\]  target >= 0\.9: MISSED/);
    // peak RSS: one repetition only (the other failed): 360/300 = 1.20
    expect(text).toMatch(/peak RSS, 16 GiB \/ 4 GiB virtual: 1\.20× +\[per repetition: 1\.20, -\]  target within 10%: MISSED/);
  });

  it("sets our WebAssembly compiler choice against V8's default compilers per repetition, and says how each process compiled", () => {
    const liftoff = (r: OsBenchRun): OsBenchRun => ({ ...r, wasm: "core-optimized-jit-liftoff" });
    const tierUp = (r: OsBenchRun): OsBenchRun => ({ ...r, wasm: "v8-default" });
    const rs = [
      { case: "refcow-ide", rep: 0, run: liftoff(run("refcow-ide", 10_000, 500, 400, 300)), check: "clean" },
      { case: "refcow-ide-tierup", rep: 0, run: tierUp(run("refcow-ide", 12_500, 1000, 800, 300)), check: "clean" },
      { case: "v86-buffer", rep: 0, run: liftoff(run("v86-buffer", 9_000, 400, 300, 1400)) },
      { case: "v86-buffer-tierup", rep: 0, run: tierUp(run("v86-buffer", 10_000, 800, 400, 1400)) },
    ];
    const t = formatReport(["refcow-ide", "refcow-ide-tierup", "v86-buffer", "v86-buffer-tierup"], rs, 1, 128);
    expect(t).toContain("its JIT's modules by Liftoff only");
    expect(t).toContain("WebAssembly: V8's default");
    // boot 10.0 / 12.5 s; write throughput (64/0.5)/(64/1.0) = 2.00
    expect(t).toMatch(/boot time, refcow-ide \/ refcow-ide-tierup \(ours \/ V8's default\): 0\.80×/);
    expect(t).toMatch(/write throughput, refcow-ide \/ refcow-ide-tierup: 2\.00×/);
    expect(t).toMatch(/read throughput, v86-buffer \/ v86-buffer-tierup: 1\.33×/);
    // both under V8's default: 12.5 / 10.0 s
    expect(t).toMatch(/boot time, refcow-ide-tierup \/ v86-buffer-tierup \(both V8's default\): 1\.25×/);
  });
});
