/**
 * `refcow run` as the user runs it: the per-phase table and the snapshot line, and Ctrl-C in the middle of a
 * run (the image is closed cleanly, `qemu-img check` passes). The guest resumes the cached warm-start state
 * (guest-session.test.ts uses the same disk size, so at most one of the two files prepares it).
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { ensureGuestImage, repoRoot } from "../../src/guest/guest-image.js";

const dir = mkdtempSync(path.join(tmpdir(), "refcow-run-cli-"));
const log = (m: string) => process.stderr.write(m);

beforeAll(async () => {
  await ensureGuestImage({ onProgress: (m) => log(m + "\n") });
}, 15 * 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function qemuCheckClean(image: string): void {
  const r = spawnSync("qemu-img", ["check", image], { encoding: "utf8" });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toContain("No errors were found on the image.");
}

describe("refcow run", () => {
  it("prints the per-phase table of the four clocks, the snapshot and the engine's I/O, and the same as JSON", async () => {
    const image = path.join(dir, "table.qcow2");
    const json = path.join(dir, "table.json");
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(["run", "--workload", "rand4k", "--clusters", "8", "--size", "64M", "--snapshot-at", "in-place", "--scheme", "lazy", "-t", "writethrough", "--json-out", json, image], {
      out: (t) => out.push(t),
      err: (t) => err.push(t),
    });
    expect(code, err.join("")).toBe(0);
    const text = out.join("");
    expect(text).toMatch(/^rand4k on .*table\.qcow2: scheme lazy, cache writethrough, 64 MiB, 64 KiB clusters \(created\); disk ide, iodepth 1\n/);
    expect(text).toMatch(/\n +app µs +device µs +ring µs +engine µs +app−engine +fdatasync µs\n/);
    expect(text).toMatch(/\nphase +op +count +median +p99 +median +p99 +median +p99 +median +p99 +median µs +app +engine +time s +in flight\n/);
    const n = "-?[0-9.]+";
    for (const ph of ["fill", "in-place", "post-snapshot"]) expect(text).toMatch(new RegExp(`\\n${ph} +write +8(?: +${n}){13}\\n`));
    expect(text).toMatch(/\nIDE transfer: XFER_\S+; \d+ DMA writes, \d+ PIO writes; cuts: all\n/);
    // --output json's form of the same run: per phase the four clocks, each {count, median, p90, p99, max}.
    const r = JSON.parse(readFileSync(json, "utf8")) as { phases: Record<string, Record<string, Record<string, number>>> };
    for (const ph of ["fill", "in-place", "post-snapshot"]) {
      for (const clock of ["app_us", "device_us", "ring_us", "engine_us"]) {
        expect(Object.keys(r.phases[ph]![clock]!).sort(), `${ph} ${clock}`).toEqual(["count", "max", "median", "p90", "p99"]);
        expect(r.phases[ph]![clock]!.count).toBe(8);
      }
      expect(r.phases[ph]!.app_us!.median).toBeGreaterThan(r.phases[ph]!.engine_us!.median);
    }
    expect(text).toMatch(/\nsnapshot 'refcow-run' \(id 1\) before in-place: guest paused [0-9.]+ ms = drain /);
    expect(text).toMatch(/\nengine I\/O per phase:\n {2}fill: .*guest-data 8w/);
    expect(err.join("")).toMatch(/\[run\] phase 3\/3 post-snapshot: done/);
    qemuCheckClean(image);
  }, 5 * 60_000);

  it("says in one line what to run when the guest image cannot be built", () => {
    const bin = path.join(repoRoot(), "dist", "cli", "bin.js");
    const image = path.join(dir, "never.qcow2");
    // A guest image folder that cannot exist (its parent is a file).
    const r = spawnSync(process.execPath, [bin, "run", "--workload", "rand4k", image], { encoding: "utf8", env: { ...process.env, REFCOW_GUEST_DIR: path.join(bin, "guest") } });
    expect(r.status).toBe(1);
    // The build's own progress lines, then one error line saying what to run; no stack, no raw ENOENT.
    expect(r.stderr).toMatch(/(?:^|\n)refcow: run: the guest image could not be built \(run 'bash guest-images\/build.sh' to see why\): [^\n]+\n$/);
    expect(r.stderr).not.toMatch(/ENOENT|    at /);
    expect(existsSync(image)).toBe(false);
  });

  it("closes the image cleanly on Ctrl-C in the middle of a run", async () => {
    const bin = path.join(repoRoot(), "dist", "cli", "bin.js");
    expect(existsSync(path.join(repoRoot(), "dist", "cli", "commands", "run.js")), "dist/ is not built: run 'npm run build'").toBe(true);
    const image = path.join(dir, "interrupted.qcow2");
    const child = spawn(process.execPath, [bin, "run", "--workload", "rand4k", "--clusters", "1024", "--size", "64M", "--scheme", "lazy", image], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    let sent = false;
    child.stderr.on("data", (b: Buffer) => {
      stderr += b.toString();
      // as the in-place phase starts (1024 writes, then the snapshot and 1024 more are still to come); the
      // lazy scheme has its dirty bit set
      if (!sent && /phase 2\/3 in-place: /.test(stderr)) {
        sent = true;
        child.kill("SIGINT");
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
    expect(sent, stderr).toBe(true);
    expect(code, stderr).toBe(130);
    expect(stderr).toContain("refcow: interrupted: closing the image...");
    expect(stderr).toContain("refcow: run: interrupted; the image was closed");
    qemuCheckClean(image);
    const info = spawnSync("qemu-img", ["info", "--output=json", image], { encoding: "utf8" });
    expect((JSON.parse(info.stdout) as { "dirty-flag"?: boolean })["dirty-flag"]).toBe(false);
  }, 5 * 60_000);
});
