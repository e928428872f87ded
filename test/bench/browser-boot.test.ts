/**
 * The boot benchmarks' browser runners (boot-os.js --browser, remote-boot.js --browser) run to their end
 * in headless Chromium and print a table with every case as a row. Each case gets one second to reach the
 * shell prompt, which no boot does: every row is then a failure with its reason — which shows that each
 * case got as far as a booting page (its image in OPFS, the page in the case's mode: the page's own status
 * is in the reason) and that a failed case is a row, not a crash. Nothing is timed.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../../src/guest/guest-image.js";
import { CHROMIUM } from "../../src/bench/browser-server.js";
import { demoOsOrSkip } from "../helpers/demo-os.js";

const log = (m: string) => process.stderr.write(m + "\n");

function runBench(script: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(repoRoot(), "dist", "bench", script), ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

/** The table's row of `name` (the line starting with it). */
const row = (text: string, name: string) => text.split("\n").find((l) => l.startsWith(`${name} `)) ?? "";

describe("the boot benchmarks' browser runners", () => {
  let skipReason: string | undefined;
  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run 'bash test/setup/ensure-chromium.sh' (npm test does it as root)`);
    ({ skipReason } = await demoOsOrSkip(log));
  }, 20 * 60_000);

  it("boot-os.js --browser: a row per case, each with the page's reason", async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    const r = await runBench("boot-os.js", ["--browser", "--reps", "1", "--timeout", "1", "--cases", "refcow-ide,v86-file"]);
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    expect(r.stdout).toMatch(/^demo OS in Chromium, 128 MiB RAM/);
    expect(row(r.stdout, "refcow-ide")).toMatch(/failed: rep 1: no 'refcow.*' on the serial console in 1000 ms \(page: (booting|running) bench\.qcow2/);
    expect(row(r.stdout, "v86-file")).toMatch(/failed: rep 1: no 'refcow.*' on the serial console in 1000 ms \(page: (booting|running) bench\.img .*v86's own file buffer/);
    expect(r.stdout).toContain("boot time, refcow-ide / v86-file: -");
  }, 120_000);

  it("remote-boot.js --browser: a row per case, each with the page's reason", async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    const r = await runBench("remote-boot.js", ["--browser", "--reps", "1", "--timeout", "1", "--delay-ms", "1", "--bandwidth", "0"]);
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    expect(r.stdout).toMatch(/^demo OS to the shell prompt in Chromium/);
    for (const name of ["refcow-url-cold", "refcow-url-warm", "refcow-local", "v86-xhr"]) expect(row(r.stdout, name)).toMatch(/failed: rep 1: no 'refcow.*' on the serial console in 1000 ms \(page: /);
    expect(row(r.stdout, "v86-xhr")).toMatch(/v86's own xhr buffer/);
  }, 120_000);
});
