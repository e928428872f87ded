/**
 * The browser case of the remote boot benchmark (remote-boot.ts --browser): the demo OS booted in headless
 * Chromium's page (os.html: the same v86 build, RAM, IDE, prompt) from the paced server, whose own counters
 * give the requests and bytes. The page reaches the server through the bench's front (browser-server.ts:
 * one origin, nothing kept in Chromium's HTTP cache).
 *
 *   refcow-url-cold   os.html?image=URL of os.qcow2 (compressed): the page probes the chain, makes a new
 *                     overlay in OPFS and boots it; a new profile, so the OPFS chunk cache is empty
 *   refcow-url-warm   the same profile again, in a new browser process, its overlay removed first (a new
 *                     overlay, as in Node): the chunk cache as the cold boot left it
 *   refcow-local      os.qcow2 put into OPFS beforehand (unpaced, uncounted) and booted as it is: the
 *                     "local file" of the browser (the page opens no local backing file, so no overlay)
 *   v86-xhr           os.html?v86=xhr: v86's AsyncXHRBuffer on os.img, fixed_chunk_size as given
 *
 * Time to the prompt on the page's clock: from the start of the page's boot operation (before the probe
 * and the overlay, or before v86 is built) to the prompt's bytes arriving. After a refcow URL run the page
 * stops the machine (closed cleanly) and downloads the overlay (refcow-local: the image), which `checkOverlay`
 * judges.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Page } from "playwright-core";
import { PROMPT } from "./boot-os-run.js";
import { openOsPage, pageTimes, putInOpfs, removeFromOpfs, stopAndDownload, waitSerial, type SerialSeen } from "./browser-page.js";
import { launchBenchChromium, startBrowserFront, type BrowserFront } from "./browser-server.js";
import { progress } from "./entry.js";
import type { RemoteBootResult, RemoteBootRun } from "./remote-boot-run.js";
import type { SlowHttpServer } from "./slow-http-server.js";

export const BROWSER_REMOTE_CASES = ["refcow-url-cold", "refcow-url-warm", "refcow-local", "v86-xhr"] as const;
export type BrowserRemoteCase = (typeof BROWSER_REMOTE_CASES)[number];

export interface BrowserRemoteOptions {
  cases: readonly BrowserRemoteCase[];
  reps: number;
  dir: string;
  /** The served folder (os.qcow2, os.img) and the paced server on it. */
  srv: string;
  server: SlowHttpServer;
  memoryMiB: number;
  chunkBytes: number;
  /** The verdict on an overlay the page handed back. */
  checkOverlay(file: string): string;
  /** Give up on a boot after this many ms. */
  timeoutMs: number;
}

export type BrowserRemoteResult = RemoteBootResult<BrowserRemoteCase>;

export async function runRemoteBootInBrowser(o: BrowserRemoteOptions): Promise<BrowserRemoteResult[]> {
  const front = await startBrowserFront({ benchDir: o.srv, webDir: path.join(o.dir, "web"), remote: o.server, memoryMiB: o.memoryMiB, onLog: progress });
  try {
    const units = [["refcow-url-cold", "refcow-url-warm"], ["refcow-local"], ["v86-xhr"]].map((u) => u.filter((n) => o.cases.includes(n as BrowserRemoteCase)) as BrowserRemoteCase[]).filter((u) => u.length > 0);
    const results: BrowserRemoteResult[] = [];
    for (let rep = 0; rep < o.reps; rep++) {
      for (let i = 0; i < units.length; i++) {
        const unit = units[(i + rep) % units.length]!;
        // One profile per unit: the warm boot finds the cold boot's OPFS (its chunk cache), nothing else does.
        const profile = path.join(o.dir, `profile-${unit[0]}-${rep}`);
        fs.rmSync(profile, { recursive: true, force: true });
        for (const name of unit) {
          progress(`repetition ${rep + 1}/${o.reps}: ${name} in Chromium (load ${os.loadavg()[0]!.toFixed(2)})`);
          results.push(await runCase(o, front, name, rep, profile));
        }
        fs.rmSync(profile, { recursive: true, force: true });
      }
    }
    return results;
  } finally {
    await front.close();
  }
}

async function runCase(o: BrowserRemoteOptions, front: BrowserFront, name: BrowserRemoteCase, rep: number, profile: string): Promise<BrowserRemoteResult> {
  const { context, page } = await launchBenchChromium(profile);
  try {
    const mem = `mem=${o.memoryMiB}`;
    if (name === "refcow-local") {
      await putInOpfs(page, front.url, "os.qcow2", `${front.url}bench/os.qcow2`);
      await openOsPage(page, `${front.url}os.html?disk=ide&${mem}`);
      await page.selectOption("#image-select", "os.qcow2");
      o.server.stats(true);
      const prompt = waitSerial(page, PROMPT, o.timeoutMs);
      await page.click("#boot-btn");
      const result = await measure(o, page, name, prompt);
      return { case: name, rep, ...result, check: await handBack(o, page, "os.qcow2", name) };
    }
    if (name === "refcow-url-warm") await removeFromOpfs(page, front.url, /^remote-[0-9a-f]{8}\.qcow2$/, ["refcow-remote-pins"]);
    const url =
      name === "v86-xhr"
        ? `${front.url}os.html?v86=xhr&image=remote/os.img&size=${fs.statSync(path.join(o.srv, "os.img")).size}&chunk=${o.chunkBytes}&${mem}`
        : `${front.url}os.html?disk=ide&image=remote/os.qcow2&${mem}`;
    o.server.stats(true);
    await openOsPage(page, url);
    const result = await measure(o, page, name, waitSerial(page, PROMPT, o.timeoutMs));
    if (name === "v86-xhr") return { case: name, rep, ...result };
    const overlay = await page.evaluate(() => (globalThis as unknown as { refcowOs: { file?: string } }).refcowOs.file);
    if (!overlay) throw new Error("the page booted no overlay");
    return { case: name, rep, ...result, check: await handBack(o, page, overlay, name) };
  } catch (e) {
    const error = (e as Error).message.split("\n").slice(0, 3).join(" / ");
    progress(`  ${name} failed: ${error}`);
    return { case: name, rep, error };
  } finally {
    await context.close().catch(() => undefined);
  }
}

/** Stops the machine, downloads the OPFS image `file` (closed cleanly) and judges it. */
async function handBack(o: BrowserRemoteOptions, page: Page, file: string, name: BrowserRemoteCase): Promise<string> {
  const back = path.join(o.dir, `handed-back-${name}.qcow2`);
  try {
    await stopAndDownload(page, file, back);
    return o.checkOverlay(back);
  } finally {
    fs.rmSync(back, { force: true });
  }
}

/** The boot to the prompt on the page's clock, and the paced server's counts since they were zeroed. */
async function measure(o: BrowserRemoteOptions, page: Page, name: BrowserRemoteCase, prompt: Promise<SerialSeen>): Promise<{ run: RemoteBootRun; requests: number; bytes: number }> {
  const { at: promptAt, instructions } = await prompt;
  const served = o.server.stats(true);
  const t = await pageTimes(page);
  const run: RemoteBootRun = { source: name === "v86-xhr" ? "v86-xhr" : name === "refcow-local" ? "refcow-local" : "refcow-url", prepMs: t.loaded - t.start, boot: { ms: promptAt - t.loaded, instructions } };
  progress(`  ${name}: shell prompt after ${((promptAt - t.start) / 1000).toFixed(1)} s (page clock), ${served.requests} requests, ${(served.bytes / 2 ** 20).toFixed(1)} MiB`);
  return { run, requests: served.requests, bytes: served.bytes };
}
