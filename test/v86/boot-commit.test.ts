/**
 * `refcow boot -snapshot` and Ctrl-A s, as a person types them (pseudo-terminal): the guest writes a file
 * and syncs, Ctrl-A s commits the temporary overlay into the image (QEMU's "save disk data back to file"),
 * the guest goes on on the emptied overlay (reads the file back, writes another), Ctrl-A x. The image then
 * holds the first file and not the second — read by e2fsck and debugfs from what qemu-img converts, not
 * by refcow — and passes qemu-img check; the overlay is gone.
 *
 * One cold boot of Linux under v86 (tens of seconds). The demo OS disk is built when missing; under
 * CI=true a build failure fails the file, elsewhere it skips it with the reason.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { readOsManifest, type OsImagePaths } from "../../src/guest/os-image.js";
import { BOOT_MS, compressedOsImage, qemuCheckClean, rootFiles } from "../helpers/boot-os.js";
import { BootMachines, PROMPT, shell } from "../helpers/boot-pty.js";

const dir = mkdtempSync(path.join(tmpdir(), "refcow-boot-commit-"));
const image = path.join(dir, "os.qcow2");

let os: OsImagePaths | undefined;
let skipReason: string | undefined;

// Compressed: the commit rewrites parts of compressed clusters of the image.
beforeAll(async () => ({ os, skipReason } = await compressedOsImage("boot-commit", image)), 20 * 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const machines = new BootMachines();
afterEach(() => machines.endAll());

describe("refcow boot -snapshot: Ctrl-A s", () => {
  it("commits the overlay's writes into the image; later writes are dropped at exit", async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    const s = machines.boot(["--disk", "virtio", "-snapshot", image]);
    let at = await s.waitFor(PROMPT, 0, BOOT_MS);
    const overlay = /writes go to a temporary overlay \((.*)\), dropped at exit/.exec(s.output)?.[1];
    expect(overlay).toBeDefined();
    at = await shell(s, "echo committed-$((6 * 7)) > /root/kept; sync", at);

    await s.type("\x01s");
    at = await s.waitFor(/refcow: committed [^\n]* of the temporary overlay into [^\n]*os\.qcow2/, at, 120_000);
    qemuCheckClean(image);
    // The guest goes on, on the emptied overlay: what it reads now comes from the image.
    at = await shell(s, "echo 3 > /proc/sys/vm/drop_caches; cat /root/kept; echo dropped > /root/gone; sync", s.output.length);
    expect(s.output.slice(-300)).toContain("committed-42");

    await s.type("\x01x");
    expect(await s.exited).toBe(0);
    expect(existsSync(path.dirname(overlay!))).toBe(false);
    qemuCheckClean(image);
    const files = rootFiles(image, readOsManifest(os), dir, ["/root/kept", "/root/gone"]);
    expect(files["/root/kept"]).toBe("committed-42\n");
    expect(files["/root/gone"]).toBeUndefined();
  }, 10 * 60_000);
});
