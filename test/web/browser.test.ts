/**
 * The browser page end to end, in Debian's Chromium (headless, through playwright-core): the dev server
 * (src/cli/web-server.ts) serves the page cross-origin isolated; the page creates a qcow2 image in OPFS,
 * serves it from the engine's Web Worker and boots the guest on it in v86. Then, through the page:
 *
 *   1. the guest writes pattern A with O_DIRECT + fsync; a marker file goes into its RAM;
 *   2. a snapshot is taken with the page's button (disk + VM state);
 *   3. the guest overwrites part of A with B, changes the marker; the smoke workload (src/guest/workloads.ts)
 *      runs from the page, which snapshots before its middle phase; the latency panel counts its writes;
 *   4. the image is downloaded with the page's button (closed cleanly, checked, reopened);
 *   5. on the host, `qemu-img check` is clean, and `qemu-img convert -l snapshot.name=...` of both
 *      snapshots and the active layer hold exactly the expected bytes;
 *   6. the snapshot is applied from the page: the guest reads A back with O_DIRECT and finds its old marker;
 *   7. an uploaded image that does not open is reported with the engine's message.
 *
 * One cold boot. About 1–2 minutes on 2 cores (the boot is most of it).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { CHROMIUM, launchChromium } from "../helpers/chromium.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWebServer, type WebServer } from "../../src/cli/web-server.js";
import { applyContent, buildWorkload } from "../../src/guest/workloads.js";

const MiB = 1024 * 1024;
const DISK_MIB = 64;
const log = (m: string) => process.stderr.write(m + "\n");

/** The bytes `yes <word> | head -c <n>` produces. */
function yesPattern(word: string, n: number): Buffer {
  const line = word + "\n";
  return Buffer.from(line.repeat(Math.ceil(n / line.length)).slice(0, n), "latin1");
}
const md5 = (b: Uint8Array) => createHash("md5").update(b).digest("hex");

interface PageApi {
  state: string;
  error?: string;
  bootMs: number;
  crossOriginIsolated: boolean;
  busy: boolean;
  run(command: string, phase?: string): Promise<{ exitCode: number; output: string }>;
  latency(phase: string): Record<"write" | "flush" | "read", { count: number; medianUs: number; p99Us: number } | undefined>;
  phases(): string[];
}
declare const refcowPage: PageApi;

/** Runs a guest command through the page and returns its output; fails on a non-zero exit. */
async function guest(page: Page, command: string): Promise<string> {
  const r = await page.evaluate((c) => refcowPage.run(c), command);
  expect(r.exitCode, `${command}\n${r.output}`).toBe(0);
  return r.output;
}

describe("the browser page in Chromium", () => {
  let server: WebServer | undefined;
  let context: BrowserContext | undefined;
  let page: Page;
  const work = mkdtempSync(path.join(tmpdir(), "refcow-web-"));
  const image = path.join(work, "e2e.qcow2");
  const A = yesPattern("refcow-pattern-A", 64 * 1024); // at 1 MiB
  const B = yesPattern("refcow-pattern-B", 16 * 1024); // over A, at 1 MiB + 16 KiB
  const pageErrors: string[] = [];
  const smoke = buildWorkload("smoke", { diskSize: DISK_MIB * MiB, clusterSize: 65536 });

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run 'bash test/setup/ensure-chromium.sh' (npm test does it as root)`);
    server = await startWebServer({ port: 0, outDir: path.join(work, "web"), onLog: log });
    // A persistent profile: OPFS on disk (an incognito context keeps it in memory, with a small quota).
    ({ context, page } = await launchChromium(path.join(work, "profile")));
    page.on("pageerror", (e) => pageErrors.push(e.message));
    page.on("console", (m) => {
      if (m.type() === "error" && !m.text().includes("Failed to load resource")) pageErrors.push(m.text());
    });
    const t0 = performance.now();
    await page.goto(`${server.url}?image=e2e.qcow2&fresh=1&scheme=eager&cache=writeback&size=${DISK_MIB}`);
    await page.waitForFunction(() => ["ready", "error"].includes(refcowPage?.state), null, { timeout: 240_000, polling: 250 });
    const st = await page.evaluate(() => ({ state: refcowPage.state, error: refcowPage.error, bootMs: refcowPage.bootMs }));
    expect(st.error).toBeUndefined();
    expect(st.state).toBe("ready");
    log(`[test] Chromium: page load to guest prompt ${((performance.now() - t0) / 1000).toFixed(1)} s (v86 boot ${(st.bootMs / 1000).toFixed(1)} s)`);
  }, 300_000);

  afterAll(async () => {
    await context?.close();
    await server?.close();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it("runs cross-origin isolated, with the guest's disk the 64 MiB image", async () => {
    expect(await page.evaluate(() => refcowPage.crossOriginIsolated)).toBe(true);
    expect(await guest(page, "cat /sys/block/sda/size")).toBe(`${(DISK_MIB * MiB) / 512}\n`);
    expect(await guest(page, "cat /sys/block/sda/queue/write_cache")).toBe("write back\n");
  }, 60_000);

  it("writes, snapshots, overwrites and runs a workload from the page", async () => {
    await guest(page, "yes refcow-pattern-A | head -c 65536 > /tmp/a && echo before > /tmp/marker");
    await guest(page, "dd if=/tmp/a of=/dev/sda bs=4096 count=16 seek=256 oflag=direct conv=fsync");

    await page.fill("#snap-name", "s1");
    await page.click("#snap-take");
    await page.waitForSelector("#snap-table tbody tr:has-text('s1')", { timeout: 120_000 });
    const row = await page.textContent("#snap-table tbody tr");
    expect(row).toMatch(/MiB/); // the VM state column shows a size

    await guest(page, "yes refcow-pattern-B | head -c 16384 > /tmp/b && echo after > /tmp/marker");
    await guest(page, "dd if=/tmp/b of=/dev/sda bs=4096 count=4 seek=260 oflag=direct conv=fsync");

    // The smoke workload, with a snapshot before its middle phase (the page's default).
    await page.selectOption("#workload-select", "smoke");
    await page.check("#wl-snap-middle");
    await page.click("#workload-run");
    await page.waitForFunction(() => refcowPage.phases().some((p) => / verify$/.test(p)) && !refcowPage.busy, null, { timeout: 180_000, polling: 250 });
    expect(await page.textContent("#log")).toMatch(/verify: exit 0/); // the guest read back what it wrote
    const phases = await page.evaluate(() => refcowPage.phases());
    const writePhase = phases.find((p) => /^smoke #\d+ write$/.test(p))!;
    const overwritePhase = phases.find((p) => /^smoke #\d+ overwrite$/.test(p))!;
    expect(writePhase).toBeDefined();
    const lat = await page.evaluate((p) => refcowPage.latency(p), writePhase);
    expect(lat.write?.count).toBe(8); // 8 KiB O_DIRECT at 8 places
    expect(lat.flush?.count).toBeGreaterThanOrEqual(1);
    const post = await page.evaluate((p) => refcowPage.latency(p), overwritePhase);
    expect(post.write?.count).toBe(4);
    expect(lat.write!.p99Us).toBeGreaterThanOrEqual(lat.write!.medianUs);
    log(
      `[test] Chromium, eager/writeback, guest write latency: ${writePhase} median ${(lat.write!.medianUs / 1000).toFixed(2)} ms; ` +
        `${overwritePhase} (after the snapshot) median ${(post.write!.medianUs / 1000).toFixed(2)} ms`,
    );
    // The panel shows the workload's last phase.
    await page.waitForSelector("#latency-table tbody tr[data-op=read]", { timeout: 10_000 });
    expect(await page.inputValue("#phase-select")).toMatch(/^smoke #\d+ verify$/);
  }, 300_000);

  it("downloads an image that qemu-img checks clean and reads as expected, snapshot and active layer", async () => {
    const downloaded = page.waitForEvent("download", { timeout: 120_000 });
    await page.click("#download-btn");
    const dl = await downloaded;
    expect(dl.suggestedFilename()).toBe("e2e.qcow2");
    await dl.saveAs(image);
    expect(await page.textContent("#check-result")).toContain("No errors were found on the image.");

    const check = spawnSync("qemu-img", ["check", image], { encoding: "utf8" });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toContain("No errors were found on the image.");
    const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", image], { encoding: "utf8" })) as {
      "virtual-size": number;
      snapshots?: Array<{ name: string; "vm-state-size": number }>;
    };
    expect(info["virtual-size"]).toBe(DISK_MIB * MiB);
    const names = info.snapshots?.map((s) => s.name) ?? [];
    expect(names).toHaveLength(2);
    expect(names[0]).toBe("s1");
    expect(names[1]).toMatch(/^smoke-\d+-mid$/);
    for (const sn of info.snapshots!) expect(sn["vm-state-size"]).toBeGreaterThan(0);

    const layer = (snapshot?: string): Buffer => {
      const out = path.join(work, `${snapshot ?? "active"}.raw`);
      execFileSync("qemu-img", ["convert", "-O", "raw", ...(snapshot ? ["-l", `snapshot.name=${snapshot}`] : []), image, out]);
      return readFileSync(out);
    };

    const expectedS1 = Buffer.alloc(DISK_MIB * MiB);
    A.copy(expectedS1, MiB);
    expect(md5(layer("s1"))).toBe(md5(expectedS1)); // A, and nothing else

    const expectedMid = Buffer.from(expectedS1);
    B.copy(expectedMid, MiB + 16 * 1024);
    applyContent(expectedMid, smoke.content!, ["write"]);
    expect(md5(layer(names[1]))).toBe(md5(expectedMid)); // + B + the smoke workload's first phase

    const expectedActive = applyContent(Buffer.from(expectedMid), smoke.content!, ["overwrite"]);
    expect(md5(layer())).toBe(md5(expectedActive));
  }, 180_000);

  it("applies the snapshot from the page: disk and guest RAM come back", async () => {
    await page.click("#snap-table tbody tr:has-text('s1') button:has-text('Apply')");
    await page.waitForFunction(() => document.getElementById("log")?.textContent?.includes("applied s1"), null, { timeout: 120_000, polling: 250 });
    expect(await page.textContent("#log")).toContain("disk and VM state restored");
    expect(await guest(page, "cat /tmp/marker")).toBe("before\n");
    const sum = await guest(page, "dd if=/dev/sda bs=4096 count=16 skip=256 iflag=direct 2>/dev/null | md5sum");
    expect(sum.split(" ")[0]).toBe(md5(A));
    expect(pageErrors).toEqual([]);
  }, 180_000);

  it("reports an uploaded image that does not open, with the engine's message, and boots nothing", async () => {
    const broken = Buffer.alloc(4096);
    broken.write("QFI\xfb", 0, "latin1"); // qcow2's magic, then a header of zeroes (version 0)
    await page.setInputFiles("#upload-input", { name: "broken.qcow2", mimeType: "application/octet-stream", buffer: broken });
    await page.waitForFunction(() => refcowPage.state === "error", null, { timeout: 60_000, polling: 250 });
    const status = await page.textContent("#status");
    log(`[test] broken upload: ${status}`);
    expect(status).toContain("broken.qcow2");
    expect(status).toMatch(/version/i);
    // Both images are still in the page's storage.
    const options = await page.$$eval("#image-select option", (os) => os.map((o) => (o as HTMLOptionElement).value));
    expect(options).toEqual(["broken.qcow2", "e2e.qcow2"]);
  }, 120_000);
});

/**
 * The page's disk selector set to virtio-blk (one more boot): the guest sees /dev/vda, writes through it with
 * O_DIRECT + fsync (virtio-blk FLUSH), the downloaded image is clean for `qemu-img check` and holds the bytes.
 * Then, without a boot, the `refcow/v86` entry in Chromium (the dev server's /refcow-v86.js): `openV86DiskOpfs`
 * serves a copy of that image from its own Web Worker as a virtio-blk disk, reads the guest's bytes, writes
 * more, closes; that image is clean and holds both.
 */
describe("the browser page in Chromium, virtio-blk disk", () => {
  let server: WebServer | undefined;
  let context: BrowserContext | undefined;
  let page: Page;
  const work = mkdtempSync(path.join(tmpdir(), "refcow-web-virtio-"));
  const image = path.join(work, "virtio.qcow2");
  const V = yesPattern("refcow-virtio", 64 * 1024); // at 2 MiB
  const W = yesPattern("refcow-embed-api", 8192); // at 3 MiB, by openV86DiskOpfs
  const pageErrors: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run 'bash test/setup/ensure-chromium.sh' (npm test does it as root)`);
    server = await startWebServer({ port: 0, outDir: path.join(work, "web"), onLog: log });
    ({ context, page } = await launchChromium(path.join(work, "profile")));
    page.on("pageerror", (e) => pageErrors.push(e.message));
    page.on("console", (m) => {
      if (m.type() === "error" && !m.text().includes("Failed to load resource")) pageErrors.push(m.text());
    });
    // No autoboot: the disk is chosen in the page's selector, then the image created and booted with its button.
    await page.goto(`${server.url}?image=virtio.qcow2&scheme=lazy&cache=writeback&size=${DISK_MIB}&autoboot=0`);
    await page.waitForFunction(() => refcowPage?.state === "idle", null, { timeout: 60_000, polling: 250 });
    await page.selectOption("#disk-select", "virtio");
    const t0 = performance.now();
    await page.click("#create-btn");
    await page.waitForFunction(() => ["ready", "error"].includes(refcowPage?.state), null, { timeout: 240_000, polling: 250 });
    const st = await page.evaluate(() => ({ state: refcowPage.state, error: refcowPage.error }));
    expect(st.error).toBeUndefined();
    expect(st.state).toBe("ready");
    log(`[test] Chromium, virtio-blk: create + boot ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }, 300_000);

  afterAll(async () => {
    await context?.close();
    await server?.close();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it("boots on the virtio-blk disk, writes through it, and downloads a clean image with the bytes", async () => {
    expect(await guest(page, "echo $DISK")).toBe("/dev/vda\n");
    expect(await guest(page, "cat /sys/block/vda/size")).toBe(`${(DISK_MIB * MiB) / 512}\n`);
    expect(await guest(page, "ls /sys/block")).not.toMatch(/sda/); // no IDE disk
    await guest(page, "yes refcow-virtio | head -c 65536 > /tmp/v && dd if=/tmp/v of=$DISK bs=4096 count=16 seek=512 oflag=direct conv=fsync");
    const lat = await page.evaluate(() => refcowPage.latency("scripted"));
    expect(lat.write?.count).toBeGreaterThanOrEqual(1);
    expect(lat.flush?.count).toBeGreaterThanOrEqual(1); // the guest's fsync: a virtio-blk FLUSH, to the engine
    const sum = await guest(page, "dd if=$DISK bs=4096 count=16 skip=512 iflag=direct 2>/dev/null | md5sum");
    expect(sum.split(" ")[0]).toBe(md5(V));

    const downloaded = page.waitForEvent("download", { timeout: 120_000 });
    await page.click("#download-btn");
    const dl = await downloaded;
    expect(dl.suggestedFilename()).toBe("virtio.qcow2");
    await dl.saveAs(image);
    expect(await page.textContent("#check-result")).toContain("No errors were found on the image.");
    const check = spawnSync("qemu-img", ["check", image], { encoding: "utf8" });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toContain("No errors were found on the image.");
    const raw = path.join(work, "virtio.raw");
    execFileSync("qemu-img", ["convert", "-O", "raw", image, raw]);
    const expected = Buffer.alloc(DISK_MIB * MiB);
    V.copy(expected, 2 * MiB);
    expect(md5(readFileSync(raw))).toBe(md5(expected));
    // The guest goes on after the download (the image was reopened under it).
    await guest(page, "dd if=$DISK bs=4096 count=1 skip=512 iflag=direct of=/dev/null");
  }, 300_000);

  it("serves an OPFS image as a virtio-blk disk through openV86DiskOpfs (the refcow/v86 entry)", async () => {
    const bytes = readFileSync(image).toString("base64");
    const out = await page.evaluate(
      async ({ b64, wB64 }) => {
        // A dynamic import written so that vitest's transform leaves it alone: it runs in the page.
        const load = new Function("u", "return import(u)") as (u: string) => Promise<typeof import("../../src/v86.js")>;
        const api = await load(new URL("refcow-v86.js", location.href).href);
        const fromB64 = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
        const root = await navigator.storage.getDirectory();
        const fh = await root.getFileHandle("api-copy.qcow2", { create: true });
        const w = await fh.createWritable();
        await w.write(fromB64(b64));
        await w.close();
        const disk = await api.openV86DiskOpfs("api-copy.qcow2", { type: "virtio", scheme: "eager", cache: "writeback", workerUrl: new URL("web-worker.js", location.href) });
        const info = { type: disk.type, device: (disk.device as { name?: string }).name, hda: "hda" in disk.v86Options, size: disk.disk.size };
        const guestBytes = await api.asPromise<Uint8Array>((done) => disk.disk.read(2 * 1024 * 1024, 65536, done));
        await api.asPromise((done) => disk.disk.write(3 * 1024 * 1024, fromB64(wB64), done));
        await api.asPromise((done) => disk.disk.flush(done));
        await disk.close();
        const file = new Uint8Array(await (await fh.getFile()).arrayBuffer());
        let s = "";
        for (let i = 0; i < file.length; i += 0x8000) s += String.fromCharCode(...file.subarray(i, i + 0x8000));
        const g = Array.from(guestBytes.subarray(0, 64), (x) => String.fromCharCode(x)).join("");
        return { info, guestHead: g, guestLen: guestBytes.length, image: btoa(s) };
      },
      { b64: bytes, wB64: W.toString("base64") },
    );
    expect(out.info).toEqual({ type: "virtio", device: "virtio-blk", hda: false, size: DISK_MIB * MiB });
    expect(out.guestLen).toBe(65536);
    expect(out.guestHead).toBe(V.subarray(0, 64).toString("latin1"));
    const copy = path.join(work, "api-copy.qcow2");
    writeFileSync(copy, Buffer.from(out.image, "base64"));
    const check = spawnSync("qemu-img", ["check", copy], { encoding: "utf8" });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    const raw = path.join(work, "api-copy.raw");
    execFileSync("qemu-img", ["convert", "-O", "raw", copy, raw]);
    const expected = Buffer.alloc(DISK_MIB * MiB);
    V.copy(expected, 2 * MiB);
    W.copy(expected, 3 * MiB);
    expect(md5(readFileSync(raw))).toBe(md5(expected));
    expect(pageErrors).toEqual([]);
  }, 180_000);
});
