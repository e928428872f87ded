/**
 * os.html end to end in Debian's Chromium (headless, through playwright-core), on the demo OS disk
 * (guest-images/build-os.sh) that the dev server serves:
 *
 *   1. the page copies the demo OS into OPFS and boots it from virtio-blk (SeaBIOS, the disk's own boot
 *      loader; the savevm below holds the device's state too); keys typed
 *      into the serial console reach the shell; the guest writes a file and syncs; a shell variable set
 *      before savevm (the button) is back after loadvm (the snapshot's button); delvm removes it;
 *   2. the page reloads, offers to boot the stored image again, boots it: the file is there; keys typed on
 *      the screen reach the VGA console's shell (tty1); the machine
 *      is stopped (image closed cleanly) and the image downloaded: qemu-img check is clean;
 *   3. a raw disk over 4 GiB with data past 4 GiB is uploaded (streamed, written into qcow2 by the engine),
 *      nothing on it boots (the BIOS's message is reported), and the download is the same disk as the raw
 *      file for `qemu-img compare`; then a qcow2 image whose FILE is over 4 GiB (QEMU's preallocation=
 *      metadata, the demo OS in it, data past 4 GiB of the file) is uploaded as it is, booted, the guest
 *      reads and writes past 4 GiB of the file, and the download is what QEMU makes of the same write.
 *   4. README's page program for v86 embedders (taken from README.md as it is) boots the demo OS from
 *      OPFS through `openV86DiskOpfs` to the shell prompt on its serial port.
 *
 * Three cold boots of the demo OS (tens of seconds each). The OS disk is built when missing; under CI=true a
 * build failure fails the file, elsewhere it skips it with the reason.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { closeSync, existsSync, ftruncateSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { readFileSync } from "node:fs";
import type { BrowserContext, Page } from "playwright-core";
import { CHROMIUM, launchChromium } from "../helpers/chromium.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWebServer, type WebServer } from "../../src/cli/web-server.js";
import { repoRoot } from "../../src/guest/guest-image.js";
import { demoOsOrSkip } from "../helpers/demo-os.js";
import type { OsImagePaths } from "../../src/guest/os-image.js";

const BOOT_MS = 240_000;
const PROMPT = /refcow:[^\n]*# $/;
const log = (m: string) => process.stderr.write(m + "\n");

interface OsPageApi {
  state: string;
  busy: boolean;
  error?: string;
  file?: string;
  serialText(): string;
  screenText(): string;
}
declare const refcowOs: OsPageApi;

let skipReason: string | undefined;

describe("os.html in Chromium: the demo OS booted from OPFS", () => {
  let server: WebServer | undefined;
  let context: BrowserContext | undefined;
  let page: Page;
  const work = mkdtempSync(path.join(tmpdir(), "refcow-os-page-"));
  const pageErrors: string[] = [];
  let demoOs: OsImagePaths | undefined;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run 'bash test/setup/ensure-chromium.sh' (npm test does it as root)`);
    ({ os: demoOs, skipReason } = await demoOsOrSkip(log));
    if (skipReason) return;
    server = await startWebServer({ port: 0, outDir: path.join(work, "web"), onLog: log });
    // A persistent profile: OPFS on disk, kept across the reload.
    ({ context, page } = await launchChromium(path.join(work, "profile"), { viewport: { width: 1400, height: 1000 } }));
    page.on("dialog", (d) => void d.accept());
  }, 20 * 60_000);

  afterAll(async () => {
    await context?.close();
    await server?.close();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  async function waitState(states: string[], timeout = 60_000): Promise<void> {
    try {
      await page.waitForFunction((s) => s.includes(refcowOs?.state) && !refcowOs.busy, states, { timeout, polling: 200 });
    } catch (e) {
      // What the page said, for the failure's message.
      const said = await page.evaluate(() => `state ${refcowOs.state}, status '${document.getElementById("status")?.textContent}', log:\n${document.getElementById("log")?.textContent}`);
      throw new Error(`${(e as Error).message}\n${said}`);
    }
  }

  /** Types a line into the serial console and waits for the next prompt; returns what the line printed. */
  async function shell(line: string, timeout = 60_000): Promise<string> {
    const from = await page.evaluate(() => refcowOs.serialText().length);
    await page.focus("#serial");
    await page.keyboard.type(line);
    await page.keyboard.press("Enter");
    await page.waitForFunction(
      ([at, re]) => new RegExp(re).test(refcowOs.serialText().slice(at + 1)),
      [from, PROMPT.source] as const,
      { timeout, polling: 200 },
    );
    const out = (await page.evaluate(() => refcowOs.serialText())).slice(from);
    // The echoed line, then the output, then the prompt.
    return out.slice(out.indexOf("\n") + 1).replace(/[^\n]*$/, "");
  }

  async function waitPrompt(): Promise<void> {
    await page.waitForFunction((re) => new RegExp(re).test(refcowOs.serialText()), PROMPT.source, { timeout: BOOT_MS, polling: 250 });
  }

  it("boots the demo OS; keys on the serial console reach the shell; savevm / loadvm / delvm", async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    await page.goto(`${server!.url}os.html?disk=virtio`);
    await waitState(["idle"]);
    expect(await page.isVisible("#resume")).toBe(false);
    const t0 = performance.now();
    await page.click("#demo-btn");
    await waitState(["running"], 120_000);
    await waitPrompt();
    log(`[os-page] Chromium, virtio-blk: demo OS copied into OPFS and booted to the shell prompt in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    expect(await shell("grep ' / ' /proc/mounts")).toMatch(/^\/dev\/vda2 \/ ext4 rw/);
    await shell("echo hello-$((6 * 7)) > /root/f; sync; X=before-savevm");

    await page.fill("#snap-name", "s1");
    await page.click("#savevm-btn");
    await page.waitForSelector("#snap-table tbody tr:has-text('s1')", { timeout: 120_000 });
    await waitState(["running"]);
    expect(await page.textContent("#snap-table tbody tr")).toMatch(/MiB/); // the VM state's size
    expect(await shell("X=changed; echo now-$X")).toBe("now-changed\n");

    await page.click("button[data-loadvm=s1]");
    await waitState(["running"], 120_000);
    expect(await page.textContent("#log")).toMatch(/loadvm s1: disk and machine state restored/);
    // The restored shell sits at its prompt: the variable is the one of savevm.
    expect(await shell("echo X-is-$X")).toBe("X-is-before-savevm\n");

    await page.click("button[data-delvm=s1]");
    await page.waitForFunction(() => document.querySelectorAll("#snap-table tbody tr").length === 0, null, { timeout: 60_000 });
    // The VGA console shows the kernel's tty1 shell too.
    expect(await page.evaluate(() => refcowOs.screenText())).toMatch(/refcow/);
    await page.screenshot({ path: path.join(tmpdir(), "refcow-os-page.png") });
    expect(pageErrors).toEqual([]);
  }, 10 * 60_000);

  it("after a reload, offers the stored image, boots it again and finds the guest's file; the download checks clean", async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    await page.reload();
    await waitState(["idle"]);
    expect(await page.isVisible("#resume")).toBe(true);
    expect(await page.textContent("#resume-text")).toMatch(/demo-os\.qcow2 .* from virtio-blk/);
    await page.click("#resume-btn");
    await waitState(["running"], 120_000);
    await waitPrompt();
    expect(await shell("cat /root/f")).toBe("hello-42\n");
    // Keys on the screen go to the PS/2 keyboard: tty1's shell; on the serial console they do not.
    await page.click("#screen-wrap");
    // Playwright types "$" or "(" without a Shift key down, which a PS/2 keyboard needs: no shifted characters.
    await page.keyboard.type("expr 123400 - 1");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => refcowOs.screenText().includes("123399"), null, { timeout: 60_000, polling: 250 }).catch(async (e: Error) => {
      throw new Error(`${e.message}\nthe screen:\n${await page.evaluate(() => refcowOs.screenText())}`);
    });
    expect(await page.evaluate(() => refcowOs.serialText())).not.toContain("123400");

    // A download of the running machine's image: closed cleanly, copied, reopened; the guest goes on.
    const downloaded = page.waitForEvent("download", { timeout: 120_000 });
    await page.click("#download-btn");
    const dl = await downloaded;
    expect(dl.suggestedFilename()).toBe("demo-os.qcow2");
    const image = path.join(work, "downloaded.qcow2");
    await dl.saveAs(image);
    const check = spawnSync("qemu-img", ["check", image], { encoding: "utf8" });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toContain("No errors were found on the image.");
    expect(await shell("echo still-running")).toBe("still-running\n");

    await page.click("#close-btn");
    await waitState(["idle"]);
    expect(await page.textContent("#status")).toContain("closed cleanly");
    expect(pageErrors).toEqual([]);
  }, 10 * 60_000);

  it("takes a raw disk over 4 GiB (streamed into qcow2); nothing on it boots, and the download is the same disk", async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    const raw = path.join(work, "big.img");
    const size = 4 * 1024 ** 3 + 3 * 1024 ** 2; // 4 GiB + 3 MiB
    const fd = openSync(raw, "w");
    try {
      ftruncateSync(fd, size);
      writeSync(fd, Buffer.from("data at 1 MiB\n"), 0, undefined, 1 << 20);
      writeSync(fd, Buffer.alloc(70_000, 0x5a), 0, undefined, 4 * 1024 ** 3 + 12_345); // straddles grains past 4 GiB
      writeSync(fd, Buffer.from("the last sector\n"), 0, undefined, size - 512);
    } finally {
      closeSync(fd);
    }
    const t0 = performance.now();
    await page.setInputFiles("#upload-input", raw);
    await page.waitForFunction(() => refcowOs.state === "error" && !refcowOs.busy, null, { timeout: 300_000, polling: 250 });
    expect(await page.evaluate(() => refcowOs.error)).toMatch(/the BIOS found nothing to boot on big\.qcow2/);
    log(`[os-page] a 4 GiB raw disk uploaded into qcow2 and tried in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    await page.selectOption("#image-select", "big.qcow2");
    const downloaded = page.waitForEvent("download", { timeout: 120_000 });
    await page.click("#download-btn");
    const image = path.join(work, "big.qcow2");
    await (await downloaded).saveAs(image);
    const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", image], { encoding: "utf8" })) as { format: string; "virtual-size": number };
    expect(info.format).toBe("qcow2");
    expect(info["virtual-size"]).toBe(size);
    const cmp = spawnSync("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", raw, image], { encoding: "utf8" });
    expect(cmp.status, cmp.stdout + cmp.stderr).toBe(0);
    expect(cmp.stdout).toContain("Images are identical.");
    expect(spawnSync("qemu-img", ["check", image]).status).toBe(0);
  }, 10 * 60_000);
  it("takes a qcow2 image whose file is over 4 GiB: boots it; the guest's I/O past 4 GiB of the file is in the download", async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    const os = demoOs!;
    const image = path.join(work, "prealloc.qcow2");
    // Metadata preallocated by QEMU: every cluster has its place in the file, in guest order, so the data at
    // 4150 MiB of the disk lies past 4 GiB of the file.
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", image, "4200M"]);
    execFileSync("qemu-img", ["convert", "-n", "-O", "qcow2", os.image, image]);
    execFileSync("qemu-io", ["-c", "write -P 0x5a 4150M 70000", image]);
    const map = JSON.parse(execFileSync("qemu-img", ["map", "--output=json", image], { encoding: "utf8" })) as Array<{ start: number; length: number; offset?: number }>;
    const at = (guest: number) => map.find((e) => e.start <= guest && guest < e.start + e.length);
    expect(at(4150 * 2 ** 20)?.offset).toBeGreaterThan(4 * 1024 ** 3);
    expect(at(4180 * 2 ** 20)?.offset).toBeGreaterThan(4 * 1024 ** 3);

    await page.goto(`${server!.url}os.html?disk=virtio`);
    await waitState(["idle", "error"]);
    const t0 = performance.now();
    await page.setInputFiles("#upload-input", image);
    await waitState(["running"], 300_000);
    await waitPrompt();
    log(`[os-page] a qcow2 file of ${(statSync(image).size / 2 ** 30).toFixed(1)} GiB uploaded and booted in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    // Sectors at 4150 MiB of the disk, from past 4 GiB of the OPFS file; copied to 4180 MiB (past it too).
    expect(await shell("dd if=/dev/vda bs=512 skip=$((4150 * 2048)) count=1 2>/dev/null | od -An -tx1 | head -1")).toMatch(/(^|\n) 5a 5a 5a/);
    await shell("dd if=/dev/vda of=/dev/vda bs=512 skip=$((4150 * 2048)) seek=$((4180 * 2048)) count=8 iflag=direct oflag=direct conv=notrunc,fsync 2>/dev/null; echo copied");
    await page.click("#close-btn");
    await waitState(["idle"]);

    await page.selectOption("#image-select", "prealloc.qcow2");
    const downloaded = page.waitForEvent("download", { timeout: 300_000 });
    await page.click("#download-btn");
    const got = path.join(work, "prealloc-downloaded.qcow2");
    await (await downloaded).saveAs(got);
    expect(spawnSync("qemu-img", ["check", got]).status).toBe(0);
    // What QEMU makes of the same copy, past the partitions (the file systems' own writes differ).
    execFileSync("qemu-io", ["-c", "write -P 0x5a 4180M 4k", image]);
    const past = (f: string) => `driver=raw,offset=${1024 ** 3},file.driver=qcow2,file.file.driver=file,file.file.filename=${f}`;
    const cmp = spawnSync("qemu-img", ["compare", "--image-opts", past(image), past(got)], { encoding: "utf8" });
    expect(cmp.status, cmp.stdout + cmp.stderr).toBe(0);
    expect(cmp.stdout).toContain("Images are identical.");
    rmSync(image);
    rmSync(got);
    expect(pageErrors).toEqual([]);
  }, 15 * 60_000);

  it("README's page program boots the demo OS from OPFS through openV86DiskOpfs", async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    const readme = readFileSync(path.join(repoRoot(), "README.md"), "utf8");
    const program = /```js\n(\/\/ <script type="module">[^\n]*\n[\s\S]*?)```/.exec(readme)?.[1];
    expect(program, "README.md's ```js block starting with '// <script type=\"module\">'").toBeDefined();
    await page.goto(`${server!.url}os.html`);
    await waitState(["idle"]);
    // The program's image name: a copy of the demo OS the earlier tests left in OPFS (closed).
    await page.evaluate(async () => {
      const dir = await navigator.storage.getDirectory();
      const from = await (await dir.getFileHandle("demo-os.qcow2")).getFile();
      const to = await (await dir.getFileHandle("os.qcow2", { create: true })).createWritable();
      await from.stream().pipeTo(to);
    });
    const t0 = performance.now();
    await page.addScriptTag({
      type: "module",
      content: `${program}\nwindow.readmeSerial = "";\nemulator.add_listener("serial0-output-byte", (b) => (window.readmeSerial += String.fromCharCode(b)));\nwindow.readme = { emulator, disk };\n`,
    });
    const serial = () => page.evaluate(() => (globalThis as unknown as { readmeSerial?: string }).readmeSerial ?? "");
    await page.waitForFunction(
      (re) => new RegExp(re).test(((globalThis as unknown as { readmeSerial?: string }).readmeSerial ?? "").replace(/\r/g, "").replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "")),
      PROMPT.source,
      { timeout: BOOT_MS, polling: 250 },
    );
    log(`[os-page] README's page program: virtio-blk boot to the shell prompt in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    expect(await serial()).toContain("BusyBox");
    await page.evaluate(async () => {
      const { emulator, disk } = (globalThis as unknown as { readme: { emulator: { destroy(): Promise<void> }; disk: { quiesce(e: unknown): Promise<void>; close(): Promise<void> } } }).readme;
      await disk.quiesce(emulator);
      await emulator.destroy();
      await disk.close();
    });
    expect(pageErrors).toEqual([]);
  }, 10 * 60_000);
});
