/**
 * os.html?image=URL in Debian's Chromium (headless, playwright-core): the demo OS disk, read over HTTP by
 * Range requests from the page's server (synchronous XHR in the engine's worker), boots under an overlay
 * in OPFS made on the first visit; the guest writes a file; after a reload the page reuses the overlay and
 * the file is there. The overlay is downloaded: a small qcow2 naming the URL, which qemu-img checks clean.
 *
 * The persistent chunk cache in OPFS (io/opfs-chunk-cache.ts), judged by the bytes the test's own server
 * sent (an oracle the page does not control): the second boot fetches a small fraction of the first's.
 * Then every cached chunk is damaged in OPFS (one byte flipped in each): the next boot must fetch them all
 * again (a damaged chunk is never served) and the guest reads the same file contents as before. Last, the
 * overlay's record of the remote version is forged: the page refuses the overlay, offers Reset, and Reset
 * boots the image afresh.
 *
 * Five boots of the demo OS, the first and the third cold. The OS disk is built when missing; under CI=true a build failure fails the
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

  /** Runs `fn` on a same-origin page without the worker (OPFS files free), retrying while a lock lingers. */
  async function inOpfs<T>(fn: (arg: string) => Promise<T>, arg: string): Promise<T> {
    await page.goto(`${server!.url}guest/config.json`);
    for (let attempt = 0; ; attempt++) {
      try {
        return await page.evaluate(fn, arg);
      } catch (e) {
        if (attempt >= 40 || !/NoModificationAllowed|lock|InvalidState/i.test(String(e))) throw e;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  const SAMPLE = "md5sum $(ls -d /usr/bin/* | head -40) | md5sum";

  it("boots the demo OS from a URL; the guest's writes survive a reload in the OPFS overlay; the chunk cache serves the second boot; the overlay downloads", async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    const at = `${server!.url}os.html?disk=virtio&image=os/demo-os.qcow2`;
    const since = (from: { requests: number; bytes: number }) => ({ requests: server!.rangeStats.requests - from.requests, bytes: server!.rangeStats.bytes - from.bytes });
    const mb = (n: number) => (n / 2 ** 20).toFixed(1);
    let t0 = performance.now();
    await page.goto(at);
    await waitPrompt();
    const first = { ...server!.rangeStats };
    log(`[os-remote] first boot: ${((performance.now() - t0) / 1000).toFixed(1)} s, ${first.requests} range requests, ${mb(first.bytes)} MiB`);
    expect(await page.evaluate(() => refcowOs.file)).toMatch(/^remote-[0-9a-f]{8}\.qcow2$/);
    const overlay = (await page.evaluate(() => refcowOs.file))!;
    expect(await page.textContent("#log")).toMatch(/made the overlay remote-[0-9a-f]{8}\.qcow2 over http/);
    await shell("echo kept-$((6 * 7)) > /root/kept; sync");
    const sample = /[0-9a-f]{32}/.exec(await shell(SAMPLE))?.[0];
    expect(sample).toBeDefined();

    let mark = { ...server!.rangeStats };
    t0 = performance.now();
    await page.reload();
    await waitPrompt();
    const second = since(mark);
    const fraction = second.bytes / first.bytes;
    log(`[os-remote] second boot: ${((performance.now() - t0) / 1000).toFixed(1)} s, ${second.requests} range requests, ${second.bytes} bytes (${(100 * fraction).toFixed(4)}% of the first boot's ${first.bytes} bytes)`);
    expect(fraction).toBeLessThan(0.25);
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

    // Every cached chunk damaged in OPFS (the index format: io/slot-chunk-cache.ts).
    const planted = await inOpfs(async () => {
      const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("refcow-http-cache");
      const index = new DataView(await (await (await dir.getFileHandle("chunks.index")).getFile()).arrayBuffer());
      const slotSize = index.getUint32(8);
      const data = await (await dir.getFileHandle("chunks.data")).getFile();
      const w = await (await dir.getFileHandle("chunks.data")).createWritable({ keepExistingData: true });
      let chunks = 0;
      let bytes = 0;
      for (let at = 64; at + 64 <= index.byteLength; at += 64) {
        if (index.getUint32(at) !== 1) continue;
        const length = index.getUint32(at + 4);
        const pos = ((at - 64) / 64) * slotSize + (length >> 1);
        const b = new Uint8Array(await data.slice(pos, pos + 1).arrayBuffer());
        b[0] ^= 0xff;
        await w.write({ type: "write", position: pos, data: b });
        chunks++;
        bytes += length;
      }
      await w.close();
      return { chunks, bytes };
    }, "");
    log(`[os-remote] damaged ${planted.chunks} cached chunks (${mb(planted.bytes)} MiB) in OPFS`);
    expect(planted.chunks).toBeGreaterThan(0);
    mark = { ...server!.rangeStats };
    await page.goto(at);
    await waitPrompt();
    expect(await shell("cat /root/kept")).toContain("kept-42");
    expect(/[0-9a-f]{32}/.exec(await shell(SAMPLE))?.[0]).toBe(sample);
    const third = since(mark);
    log(`[os-remote] boot over the damaged cache: ${third.requests} range requests, ${mb(third.bytes)} MiB`);
    // Each damaged chunk the boot needed came from the server again: as much as a cold boot, near enough.
    expect(third.bytes).toBeGreaterThan(0.75 * first.bytes);

    // The record of the remote version forged: the page refuses the overlay and offers Reset.
    const pinName = `${overlay}.json`;
    await inOpfs(async (name) => {
      const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("refcow-remote-pins");
      const fh = await dir.getFileHandle(name);
      const pin = JSON.parse(await (await fh.getFile()).text());
      pin.etag = '"another-version"';
      const w = await fh.createWritable();
      await w.write(JSON.stringify(pin));
      await w.close();
    }, pinName);
    await page.goto(at);
    await page.waitForFunction(() => refcowOs.state === "error", undefined, { timeout: 60_000 });
    expect(await page.textContent("#status")).toMatch(/demo-os\.qcow2 changed since the overlay remote-[0-9a-f]{8}\.qcow2 was made over it \(ETag "another-version" -> .*\): refusing .*\. Reset drops the overlay/);
    expect(await page.getAttribute("#reset-btn", "class")).toContain("offer");
    await page.click("#reset-btn");
    await waitPrompt();
    expect(await page.textContent("#log")).toMatch(/reset: the overlay over .* is dropped/);
    expect(await shell("cat /root/kept 2>&1")).toMatch(/No such file/);
  }, 30 * 60_000);
});
