/**
 * The guest on refcow's virtio-blk disk (src/v86/virtio-blk.ts), booted for real:
 *
 *  - rand4k at queue depth 16 and 1 on a worker-served qcow2, snapshotted by the host mid-run: the device
 *    had 16 requests in flight, `qemu-img check` is clean, `qemu-img convert` of the active layer and of the
 *    snapshot hold exactly the bytes the workload wrote, and each fsync (a virtio-blk FLUSH) completed only
 *    after the engine's flush and after every write submitted before it (from the trace's order);
 *  - the public embedder API (`openV86Disk` from the package root) on a plain `new V86({...})`: virtio-blk
 *    booted cold, IDE resumed from a saved state (`initial_state`).
 *
 * Boots: one cold boot to prepare the virtio warm-start state (unless cached) + two warm resumes, one cold
 * boot through the public API (virtio), and one warm resume through it (IDE: `refcow run`'s IDE warm-start
 * state, prepared by one cold boot when it is not cached).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { V86 } from "v86";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createImagePath, openV86Disk, RequestRecorder } from "../../src/index.js";
import { ensureGuestImage, guestImagePaths, v86WasmPath } from "../../src/guest/guest-image.js";
import { DEFAULT_CMDLINE } from "../../src/guest/guest-runner.js";
import { runGuestWorkload } from "../../src/guest/run-workload.js";
import { readTrace } from "../../src/guest/trace.js";
import { obtainWarmState } from "../../src/guest/warm-state.js";
import { applyContent, buildWorkload, patternBytes } from "../../src/guest/workloads.js";

const MiB = 1 << 20;
const SIZE = 64 * MiB;
const dir = mkdtempSync(path.join(tmpdir(), "refcow-virtio-"));
const log = (m: string) => process.stderr.write(m + "\n");

beforeAll(async () => {
  await ensureGuestImage({ onProgress: log });
}, 15 * 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function qemuCheckClean(image: string): void {
  const r = spawnSync("qemu-img", ["check", image], { encoding: "utf8" });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toContain("No errors were found on the image.");
}

function convert(image: string, snapshot?: string): Uint8Array {
  const out = path.join(dir, `raw-${Math.random().toString(36).slice(2)}`);
  const args = ["convert", ...(snapshot ? ["-l", `snapshot.name=${snapshot}`] : []), "-O", "raw", image, out];
  const r = spawnSync("qemu-img", args, { encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
  const b = new Uint8Array(readFileSync(out));
  rmSync(out);
  return b;
}

function firstDiff(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return -2;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

describe("virtio-blk guest disk", () => {
  for (const iodepth of [16, 1]) {
    it(`rand4k at queue depth ${iodepth}: in flight, snapshot mid-run, exact bytes, flushes after the engine's`, async () => {
      const image = path.join(dir, `d${iodepth}.qcow2`);
      const trace = path.join(dir, `d${iodepth}.trace`);
      const clusters = 48;
      const r = await runGuestWorkload({ image, size: SIZE, workload: "rand4k", clusters, disk: "virtio", iodepth, trace, onProgress: log });
      expect(r.disk).toBe("virtio");
      expect(r.ioTool).toBe("refcow-io");
      for (const ph of r.phaseOrder) {
        expect(r.phases[ph]!.writes.count, ph).toBe(clusters);
        // How many the guest manages to keep queued at once depends on timing; more than one, never more than asked.
        if (iodepth === 1) expect(r.phases[ph]!.max_in_flight, ph).toBe(1);
        else expect(r.phases[ph]!.max_in_flight, ph).toBeGreaterThan(1);
        expect(r.phases[ph]!.max_in_flight, ph).toBeLessThanOrEqual(iodepth);
        // Every notify carries at least one new request; the phase's emulated instructions are counted.
        const p = r.phases[ph]!;
        expect(p.notifies, ph).toBeGreaterThan(0);
        expect(p.notifies!, ph).toBeLessThanOrEqual(p.writes.count + p.flushes.count);
        expect(p.guest_instructions, ph).toBeGreaterThan(0);
      }
      expect(r.guestFlushes).toBeGreaterThanOrEqual(3);
      qemuCheckClean(image);

      const w = buildWorkload("rand4k", { diskSize: SIZE, clusterSize: 65536, clusters });
      const active = applyContent(new Uint8Array(SIZE), w.content!);
      const upToSnapshot = w.phases.slice(0, w.phases.findIndex((p) => p.name === w.middle)).map((p) => p.name);
      const before = applyContent(new Uint8Array(SIZE), w.content!, upToSnapshot);
      expect(firstDiff(convert(image), active)).toBe(-1);
      expect(firstDiff(convert(image, r.snapshot!.name), before)).toBe(-1);

      // Each flush completed after the engine's flush (its latency covers the engine's flush time) and after
      // every write submitted before it had completed (virtio-blk leaves ordering to the driver: Linux
      // waits for the O_DIRECT writes, then sends the flush; the device holds a flush back until then).
      const t = readTrace(trace);
      const flushes = t.events.filter((e) => e.op === "f");
      expect(flushes.length).toBeGreaterThanOrEqual(3);
      for (const f of flushes) {
        expect(f.service, "engine time of the flush").toBeGreaterThan(0);
        expect(f.latency!).toBeGreaterThanOrEqual(f.service!);
        const fDone = f.t + f.latency!;
        for (const e of t.events) if (e.op === "w" && e.t < f.t) expect(e.t + e.latency!).toBeLessThanOrEqual(fDone);
      }
      const deepest = Math.max(...t.events.map((e) => e.depth ?? 0));
      expect(deepest).toBeLessThanOrEqual(iodepth);
      if (iodepth > 1) expect(deepest).toBeGreaterThan(1);
    }, 10 * 60_000);
  }

  /**
   * A plain `new V86({...})` on a fresh qcow2 through the public API only, the guest writing a pattern to
   * its disk with O_DIRECT + fsync; then the image is closed, checked by qemu-img and read back.
   * `initialState`: resume a saved guest instead of booting it (v86's own `initial_state`).
   */
  async function publicApiRun(type: "virtio" | "ide", initialState?: ArrayBuffer): Promise<void> {
    const image = path.join(dir, `embed-${type}.qcow2`);
    createImagePath(image, { size: SIZE });
    const recorder = new RequestRecorder({ virtio: type === "virtio" });
    const disk = await openV86Disk(image, { type, observer: recorder });
    const g = guestImagePaths();
    const file = (p: string) => {
      const b = readFileSync(p);
      return { buffer: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer };
    };
    const emulator = new V86({
      ...disk.v86Options,
      wasm_path: v86WasmPath(),
      memory_size: 128 * MiB,
      vga_memory_size: 2 * MiB,
      bios: file(g.bios),
      vga_bios: file(g.vgaBios),
      bzimage: file(g.bzImage),
      initrd: file(g.initrd),
      cmdline: DEFAULT_CMDLINE,
      autostart: true,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true,
      acpi: false,
      ...(initialState ? { initial_state: { buffer: initialState } } : {}),
    });
    disk.attach(emulator);
    let text = "";
    const waiters: Array<() => void> = [];
    emulator.add_listener("serial0-output-byte", (b: number) => {
      text += String.fromCharCode(b);
      for (const w of waiters.splice(0)) w();
    });
    const waitFor = async (re: RegExp, from: number, ms: number) => {
      const until = Date.now() + ms;
      for (;;) {
        const m = re.exec(text.slice(from));
        if (m) return m;
        if (Date.now() > until) throw new Error(`timed out waiting for ${re}; console:\n${text.slice(-2000)}`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 500);
        });
      }
    };
    const device = type === "virtio" ? "/dev/vda" : "/dev/sda";
    try {
      if (initialState) {
        // The saved guest sits at its prompt: an empty line is a ping.
        await new Promise<void>((r) => emulator.add_listener("emulator-loaded", () => r()));
        emulator.serial0_send("\n");
        await waitFor(/REFCOW-DONE (\d+)/, 0, 60_000);
      } else {
        await waitFor(/REFCOW-READY/, 0, 180_000);
      }
      const from = text.length;
      emulator.serial0_send("yes refcow-embed | head -c 65536 > /tmp/p && dd if=/tmp/p of=$DISK bs=4096 count=16 seek=32 oflag=direct conv=fsync 2>/dev/null && echo on $DISK\n");
      const m = await waitFor(/REFCOW-DONE (\d+)/, from, 60_000);
      expect(m[1], text.slice(from)).toBe("0");
      expect(text.slice(from)).toContain(`on ${device}`);
      // The guest's fsync reached the engine (virtio FLUSH, or IDE FLUSH CACHE through the honest-flush patch).
      const phase = recorder.phase;
      expect(recorder.summary(phase).flushes, phase).toBeGreaterThanOrEqual(1);
      expect(recorder.summary(phase).writes, phase).toBeGreaterThanOrEqual(1);
      await disk.quiesce(emulator);
    } finally {
      await emulator.destroy();
      await disk.close();
    }
    qemuCheckClean(image);
    const raw = convert(image);
    expect(firstDiff(raw.subarray(32 * 4096, 48 * 4096), patternBytes("refcow-embed", 65536))).toBe(-1);
  }

  it("boots a plain new V86({...}) on a qcow2 through the public API (openV86Disk, virtio)", async () => {
    await publicApiRun("virtio");
  }, 10 * 60_000);

  it("resumes a plain new V86({ initial_state }) on a qcow2 through the public API (openV86Disk, IDE)", async () => {
    // The IDE warm-start state of `refcow run` (cached; one cold boot the first time only): a machine built
    // as the public API's IDE disk builds it (hda = the adapter), at the guest's prompt, on an empty disk.
    const warm = await obtainWarmState({ diskSize: SIZE, diskType: "ide", onProgress: log });
    await publicApiRun("ide", warm.state);
  }, 10 * 60_000);
});
