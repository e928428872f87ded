/**
 * os.html?image=URL in Debian's Chromium (headless, playwright-core): the demo OS disk, read over HTTP by
 * Range requests from the page's server (synchronous XHR in the engine's worker), boots under an overlay
 * in OPFS made on the first visit; the guest writes a file; after a reload the page reuses the overlay and
 * the file is there. The overlay is downloaded: a small qcow2 naming the URL, which qemu-img checks clean.
 *
 * Two cold boots of the demo OS. The OS disk is built when missing; under CI=true a build failure fails the
 * file, elsewhere it skips it with the reason.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { launchChromium } from "../helpers/chromium.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWebServer, type WebServer } from "../../src/cli/web-server.js";
import { demoOsOrSkip } from "../helpers/demo-os.js";

const BOOT_MS = 300_000;
const PROMPT = /refcow:[^\n]*# $/;
const log = (m: string) => process.stderr.write(m + "\n");

function qemuImg(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile("qemu-img", args, { encoding: "utf8" }, (err, stdout, stderr) => resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr })),
  );
}

declare const refcowOs: { state: string; busy: boolean; file?: string; serialText(): string };

describe("os.html?image=URL: a remote image under an OPFS overlay", () => {
  let server: WebServer | undefined;
  let context: BrowserContext | undefined;
  let page: Page;
  let skipReason: string | undefined;
  const work = mkdtempSync(path.join(tmpdir(), "refcow-os-remote-"));

  beforeAll(async () => {
    ({ skipReason } = await demoOsOrSkip(log));
    if (skipReason) return;
    server = await startWebServer({ port: 0, outDir: path.join(work, "web"), onLog: log });
    ({ context, page } = await launchChromium(path.join(work, "profile")));
    page.on("dialog", (d) => void d.accept());
  }, 20 * 60_000);

  afterAll(async () => {
    await context?.close();
    await server?.close();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  async function waitPrompt(): Promise<void> {
    try {
      await page.waitForFunction((re) => new RegExp(re).test(refcowOs.serialText()), PROMPT.source, { timeout: BOOT_MS, polling: 250 });
    } catch (e) {
      const said = await page.evaluate(() => `state ${refcowOs.state}, status '${document.getElementById("status")?.textContent}', log:\n${document.getElementById("log")?.textContent}`);
      throw new Error(`${(e as Error).message}\n${said}`);
    }
  }

  async function shell(line: string): Promise<string> {
    const from = await page.evaluate(() => refcowOs.serialText().length);
    await page.focus("#serial");
    await page.keyboard.type(line);
    await page.keyboard.press("Enter");
    await page.waitForFunction(([at, re]) => new RegExp(re).test(refcowOs.serialText().slice(at + 1)), [from, PROMPT.source] as const, { timeout: 60_000, polling: 200 });
    return (await page.evaluate(() => refcowOs.serialText())).slice(from);
  }

  it("boots the demo OS from a URL; the guest's writes survive a reload in the OPFS overlay; the overlay downloads", async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    const at = `${server!.url}os.html?disk=virtio&image=os/demo-os.qcow2`;
    let t0 = performance.now();
    await page.goto(at);
    await waitPrompt();
    const first = { ...server!.rangeStats };
    log(`[os-remote] first boot: ${((performance.now() - t0) / 1000).toFixed(1)} s, ${first.requests} range requests, ${(first.bytes / 2 ** 20).toFixed(1)} MiB`);
    expect(await page.evaluate(() => refcowOs.file)).toMatch(/^remote-[0-9a-f]{8}\.qcow2$/);
    expect(await page.textContent("#log")).toMatch(/made the overlay remote-[0-9a-f]{8}\.qcow2 over http/);
    await shell("echo kept-$((6 * 7)) > /root/kept; sync");

    t0 = performance.now();
    await page.reload();
    await waitPrompt();
    const second = { requests: server!.rangeStats.requests - first.requests, bytes: server!.rangeStats.bytes - first.bytes };
    log(`[os-remote] second boot: ${((performance.now() - t0) / 1000).toFixed(1)} s, ${second.requests} range requests, ${(second.bytes / 2 ** 20).toFixed(1)} MiB`);
    expect(await page.textContent("#log")).toMatch(/reusing the overlay remote-/);
    expect(await shell("cat /root/kept")).toContain("kept-42");

    // Download: the overlay as qcow2, closed cleanly first; small, naming the URL.
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download-btn")]);
    const file = path.join(work, "overlay.qcow2");
    await download.saveAs(file);
    // qemu-img opens the backing URL with its curl driver, from this process's server: run it asynchronously.
    const check = await qemuImg(["check", file]);
    expect(check.status, check.stdout + check.stderr).toBe(0);
    const info = await qemuImg(["info", "--output=json", file]);
    expect(JSON.parse(info.stdout)["backing-filename"]).toBe(`${server!.url}os/demo-os.qcow2`);
    expect(statSync(file).size).toBeLessThan(16 * 2 ** 20);
  }, 20 * 60_000);
});
