/**
 * `refcow run --emulator qemu`: the v86 test guest under qemu-system-i386, its disk on QEMU's own qcow2
 * driver and on `refcow nbd`, one small rand4k run each with the snapshot in the middle. QEMU's tools are the
 * oracle: qemu-img check finds the image clean, qemu-img snapshot -l sees the snapshot, and the guest data
 * qemu-img reads, of the active layer and of the snapshot, is what the workload wrote (workloads.ts says
 * every byte, without asking the guest).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { ensureGuestImage } from "../../src/guest/guest-image.js";
import type { QemuGuestResult } from "../../src/guest/qemu-run.js";
import { applyContent, buildWorkload } from "../../src/guest/workloads.js";
import { qemuCheck, qemuImg, qemuRaw, tempDir } from "../helpers/qemu.js";

const dir = tempDir("qemu-run");
const SIZE = 64 << 20;
const CLUSTERS = 8;

beforeAll(async () => {
  await ensureGuestImage({ onProgress: (m) => process.stderr.write(m + "\n") });
}, 15 * 60_000);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The guest data rand4k leaves after `phases` (all three: the active layer; fill and in-place: the snapshot). */
function expected(phases: string[]): Uint8Array {
  const w = buildWorkload("rand4k", { diskSize: SIZE, clusterSize: 65536, clusters: CLUSTERS });
  return applyContent(new Uint8Array(SIZE), w.content!, phases);
}

describe("refcow run --emulator qemu", () => {
  for (const [backend, extra] of [
    ["qemu-lazy", ["--disk", "ide"]],
    ["refcow", ["--scheme", "owner", "--disk", "virtio"]],
  ] as const) {
    it(`runs the guest workload on the ${backend} backend, snapshot in the middle, and leaves a clean image`, async () => {
      const image = path.join(dir, `${backend}.qcow2`);
      const json = path.join(dir, `${backend}.json`);
      const out: string[] = [];
      const err: string[] = [];
      const args = ["run", "--emulator", "qemu", "--backend", backend, ...extra, "--workload", "rand4k", "--clusters", String(CLUSTERS), "--size", "64M", "--json-out", json, image];
      const code = await main(args, { out: (t) => out.push(t), err: (t) => err.push(t) });
      expect(code, err.join("")).toBe(0);
      const text = out.join("");
      expect(text).toMatch(new RegExp(`^rand4k on .*${backend}\\.qcow2: QEMU [0-9.]+ \\((kvm|tcg)[^)]*\\)?\\), `));
      const r = JSON.parse(fs.readFileSync(json, "utf8")) as QemuGuestResult;
      expect(r.emulator).toBe("qemu");
      expect(r.backend).toBe(backend);
      expect(r.phaseOrder).toEqual(["fill", "in-place", "post-snapshot"]);
      // The guest program's own figures of every phase: 8 writes each, their medians, the closing fdatasync.
      for (const ph of r.phaseOrder) {
        const p = r.phases[ph]!;
        expect(p.count, ph).toBe(CLUSTERS);
        expect(p.app_us!.count, ph).toBe(CLUSTERS);
        expect(p.app_us!.median, ph).toBeGreaterThan(0);
        expect(p.app_us!.p99, ph).toBeGreaterThanOrEqual(p.app_us!.median);
        expect(p.flush_app_us!.count, ph).toBe(1);
        expect(text).toMatch(new RegExp(`\\n${ph} +write +${CLUSTERS} +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9]+\\n`));
      }
      expect(r.snapshot).toMatchObject({ name: "refcow-run", phase: "post-snapshot", via: backend === "refcow" ? "monitor" : "qmp" });
      expect(text).toMatch(/\npost-snapshot \/ in-place \(app medians\): [0-9.]+×\n/);

      const check = qemuCheck(image);
      expect(check.status, check.out).toBe(0);
      expect(check.out).toContain("No errors were found on the image.");
      expect(qemuImg(["snapshot", "-l", image])).toMatch(/\n1 +refcow-run +0 B /);
      if (backend === "qemu-lazy") expect(qemuImg(["info", image])).toMatch(/lazy refcounts: true/);
      expect(Buffer.compare(qemuRaw(image), expected(["fill", "in-place", "post-snapshot"]))).toBe(0);
      expect(Buffer.compare(qemuRaw(image, "refcow-run"), expected(["fill", "in-place"]))).toBe(0);
    }, 5 * 60_000);
  }

  it("refuses options that are not the chosen emulator's or backend's before touching anything", async () => {
    const image = path.join(dir, "never.qcow2");
    for (const [args, message] of [
      [["--backend", "qemu"], /--backend and --accel go with --emulator qemu/],
      [["--emulator", "qemu", "--backend", "qemu", "--scheme", "owner"], /--scheme is refcow's: --backend qemu is QEMU's own qcow2 driver/],
      [["--emulator", "qemu", "--backend", "bochs"], /--backend must be one of qemu, qemu-lazy, refcow/],
      [["--emulator", "qemu", "--savevm"], /--savevm is not available with --emulator qemu/],
      [["--emulator", "bochs"], /--emulator must be v86 or qemu/],
    ] as const) {
      const err: string[] = [];
      const code = await main(["run", ...args, image], { out: () => undefined, err: (t) => err.push(t) });
      expect(code, args.join(" ")).toBe(1);
      expect(err.join(""), args.join(" ")).toMatch(message);
    }
    expect(fs.existsSync(image)).toBe(false);
  });
});
