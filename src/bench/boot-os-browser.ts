/**
 * The browser case of the demo OS benchmark (boot-os.ts --browser): the same disks, guest commands and
 * report, the PC in headless Chromium's page (os.html, the same v86 build and RAM) instead of Node.
 *
 *   refcow-ide, refcow-virtio   the qcow2 image in OPFS, served by refcow's Web Worker (the page's Boot)
 *   v86-file                    the raw image in OPFS as a File, v86's AsyncFileBuffer (os.html?v86=file)
 *   v86-buffer                  the same File as v86's SyncFileBuffer, read whole into memory before the
 *                               CPU starts (os.html?v86=buffer)
 *
 * Each run: a new Chromium profile (an empty OPFS), the image put into OPFS before any clock starts (the raw
 * one sparse: its data extents, as `qemu-img map` lists them, in a file of its size), then the page boots
 * it. Clocks are the page's: prep = the boot's start → v86 loaded, boot = → the shell prompt's bytes
 * arriving, each dd = the keys typed → the marker the shell prints after it; the guest's uptime around each
 * dd is beside (its own clock). After a refcow run the page stops the machine (image closed cleanly) and
 * downloads the image, which `checkImage` judges (qemu-img check and map, boot-os.ts).
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ddCommands, ddStepLine, parseDdReport, PROMPT, type OsBenchRun, type OsBenchSource } from "./boot-os-run.js";
import { launchBenchChromium, startBrowserFront, type BrowserFront } from "./browser-server.js";
import { openOsPage, pageTimes, putInOpfs, stopAndDownload, timedSerialLine, waitSerial, type SerialSeen } from "./browser-page.js";
import { progress } from "./entry.js";

export interface BrowserOsCase {
  name: string;
  source: OsBenchSource;
  /** The image the case boots (qcow2 for refcow's sources, raw for v86's). */
  template: string;
}

export interface BrowserOsBenchOptions {
  cases: readonly BrowserOsCase[];
  reps: number;
  /** Work folder (profiles, served links, downloads). */
  dir: string;
  memoryMiB: number;
  ddOffsetMiB: number;
  ddMiB: number;
  /** The verdict on a qcow2 image the page handed back after a refcow run. */
  checkImage(file: string): string;
  /** Give up on a boot, or on a copy, after this many ms. */
  timeoutMs: number;
}

export interface BrowserOsResult {
  case: string;
  rep: number;
  run?: OsBenchRun;
  check?: string;
  error?: string;
}

export async function runOsBenchInBrowser(o: BrowserOsBenchOptions): Promise<BrowserOsResult[]> {
  const srv = path.join(o.dir, "browser-srv");
  fs.mkdirSync(srv, { recursive: true });
  for (const c of o.cases) {
    const link = path.join(srv, path.basename(c.template));
    if (!fs.existsSync(link)) fs.symlinkSync(path.resolve(c.template), link);
  }
  const front = await startBrowserFront({ benchDir: srv, webDir: path.join(o.dir, "web"), memoryMiB: o.memoryMiB, onLog: progress });
  try {
    const results: BrowserOsResult[] = [];
    for (let rep = 0; rep < o.reps; rep++) {
      for (let i = 0; i < o.cases.length; i++) {
        const c = o.cases[(i + rep) % o.cases.length]!;
        progress(`repetition ${rep + 1}/${o.reps}: ${c.name} in Chromium (load ${os.loadavg()[0]!.toFixed(2)})`);
        results.push(await runBrowserCase(o, front, c, rep));
      }
    }
    return results;
  } finally {
    await front.close();
  }
}

async function runBrowserCase(o: BrowserOsBenchOptions, front: BrowserFront, c: BrowserOsCase, rep: number): Promise<BrowserOsResult> {
  const profile = path.join(o.dir, `profile-${c.name}-${rep}`);
  fs.rmSync(profile, { recursive: true, force: true });
  const { context, page } = await launchBenchChromium(profile);
  try {
    const refcow = c.source === "refcow-ide" || c.source === "refcow-virtio";
    const name = refcow ? "bench.qcow2" : "bench.img";
    const served = new URL(`bench/${encodeURIComponent(path.basename(c.template))}`, front.url).href;
    await putInOpfs(page, front.url, name, served, refcow ? undefined : { size: fs.statSync(c.template).size, extents: dataExtents(c.template) });
    const mem = `mem=${o.memoryMiB}`;
    if (refcow) {
      await openOsPage(page, `${front.url}os.html?disk=${c.source === "refcow-ide" ? "ide" : "virtio"}&${mem}`);
      await page.selectOption("#image-select", name);
      const prompt = waitSerial(page, PROMPT, o.timeoutMs);
      await page.click("#boot-btn");
      return { case: c.name, rep, ...(await measure(o, page, c, prompt, profile)) };
    }
    await openOsPage(page, `${front.url}os.html?v86=${c.source === "v86-file" ? "file" : "buffer"}&file=${name}&${mem}`);
    return { case: c.name, rep, ...(await measure(o, page, c, waitSerial(page, PROMPT, o.timeoutMs), profile)) };
  } catch (e) {
    const error = (e as Error).message.split("\n").slice(0, 3).join(" / ");
    progress(`  ${c.name} failed: ${error}`);
    return { case: c.name, rep, error };
  } finally {
    await context.close().catch(() => undefined);
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

/** The boot to the prompt, the two copies, and for refcow the check of the image handed back. */
async function measure(o: BrowserOsBenchOptions, page: import("playwright-core").Page, c: BrowserOsCase, prompt: Promise<SerialSeen>, profile: string): Promise<{ run: OsBenchRun; check?: string }> {
  const seen = await prompt;
  const t = await pageTimes(page);
  const boot = { ms: seen.at - t.loaded, instructions: seen.instructions };
  progress(`  ${c.name}: shell prompt after ${(boot.ms / 1000).toFixed(1)} s (page clock)`);
  const commands = ddCommands(c.source === "refcow-virtio" ? "/dev/vda" : "/dev/sda", o.ddOffsetMiB, o.ddMiB);
  const step = async (stepName: string, command: string) => {
    const typed = ddStepLine(stepName, command, o.ddMiB);
    const done = await timedSerialLine(page, typed.line, typed.marker, PROMPT, o.timeoutMs);
    return { ms: done.ms, instructions: done.instructions, ...parseDdReport(done.text, stepName) };
  };
  const write = await step("W", commands.write);
  progress(`  ${c.name}: wrote ${o.ddMiB} MiB in ${(write.ms / 1000).toFixed(2)} s`);
  const read = await step("R", commands.read);
  progress(`  ${c.name}: read ${o.ddMiB} MiB in ${(read.ms / 1000).toFixed(2)} s`);
  const run: OsBenchRun = { source: c.source, image: c.template, prepMs: t.loaded - t.start, boot, write, read };
  if (c.source !== "refcow-ide" && c.source !== "refcow-virtio") return { run };
  const back = path.join(profile, "..", `handed-back-${c.name}.qcow2`);
  try {
    await stopAndDownload(page, "bench.qcow2", back);
    return { run, check: o.checkImage(back) };
  } finally {
    fs.rmSync(back, { force: true });
  }
}

/** The data extents of a raw file, [start, length], as `qemu-img map` sees them (holes and zeroes left out). */
export function dataExtents(file: string): Array<[number, number]> {
  const map = JSON.parse(execFileSync("qemu-img", ["map", "-f", "raw", "--output=json", file]).toString()) as Array<{ start: number; length: number; data: boolean }>;
  return map.filter((e) => e.data).map((e) => [e.start, e.length]);
}
