/**
 * The experiment's guest runs under QEMU (`refcow experiment --emulators v86,qemu`): which sources there are
 * (QEMU's qcow2 driver with and without lazy refcounts, and refcow nbd with every scheme), one run of one on
 * a fresh image judged by `qemu-img check`, and its record in results.json (GuestResult, emulator "qemu"),
 * or its failure with the reason.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { CacheMode } from "../engine/types.js";
import { runQemuGuestWorkload, type QemuBackend, type QemuGuestResult } from "../guest/qemu-run.js";
import type { QemuAccel } from "../guest/qemu-machine.js";
import { failureOf } from "../report/failures.js";
import type { FailedSource, GuestPhase, GuestResult } from "../report/results.js";
import { qemuCheckVerdict } from "./image-check.js";

export interface QemuGuestSource {
  backend: QemuBackend;
  /** refcow's scheme (backend refcow only). */
  scheme?: string;
}

/** QEMU's own backends first (no scheme), then refcow nbd with each scheme. */
export function qemuGuestSources(backends: readonly QemuBackend[], schemes: readonly string[]): QemuGuestSource[] {
  const out: QemuGuestSource[] = [];
  for (const b of backends) if (b !== "refcow") out.push({ backend: b });
  if (backends.includes("refcow")) for (const s of schemes) out.push({ backend: "refcow", scheme: s });
  return out;
}

export const sourceLabel = (s: QemuGuestSource) => (s.backend === "refcow" ? `${s.scheme} (QEMU, refcow nbd)` : `${s.backend} (QEMU)`);

/** The record of a QEMU run in results.json: the guest program's clock is its only per-request one. */
export function qemuGuestRecord(r: QemuGuestResult, check: string, rep: number): GuestResult {
  const phases: GuestPhase[] = r.phaseOrder.map((name) => {
    const p = r.phases[name]!;
    return {
      name,
      reads: p.op === "read" ? p.count : 0,
      writes: p.op === "write" ? p.count : 0,
      flushes: p.flush_app_us?.count ?? 0,
      write_median_us: p.op === "write" && p.app_us ? p.app_us.median : NaN,
      write_p99_us: p.op === "write" && p.app_us ? p.app_us.p99 : NaN,
      ...(p.app_us ? { app_us: p.app_us } : {}),
      ...(p.flush_app_us ? { flush_median_us: p.flush_app_us.median } : {}),
      duration_ms: p.durationMs,
    };
  });
  return {
    emulator: "qemu",
    backend: r.backend,
    accel: r.accel,
    scheme: r.scheme,
    cache: r.cache,
    workload: r.workload,
    disk: r.disk,
    iodepth: r.iodepth,
    savevm: false,
    bootMs: r.bootMs,
    warm: false,
    phases,
    ...(r.snapshot ? { snapshot: { diskSnapshotMs: r.snapshot.createMs } } : {}),
    check,
    loadAverage: r.loadAverage,
    rep,
  };
}

export interface QemuGuestCell {
  source: QemuGuestSource;
  cache: CacheMode;
  rep: number;
  workload: string;
  clusters: number;
  disk: "ide" | "virtio";
  iodepth: number;
  accel?: QemuAccel;
  /** Where the image goes (a fresh one: an old one there is removed). */
  dir: string;
  onProgress?: (message: string) => void;
}

/** One run on a fresh image: its record when the image passes qemu-img check, else its failure. */
export async function runQemuGuestCell(c: QemuGuestCell): Promise<{ result: GuestResult } | { failed: FailedSource }> {
  const s = c.source;
  const image = path.join(c.dir, `guest-qemu-${s.backend}${s.scheme ? `-${s.scheme}` : ""}-${c.cache}-${c.rep}.qcow2`);
  fs.rmSync(image, { force: true });
  const where = {
    part: "guest" as const,
    name: sourceLabel(s),
    source: s.backend === "refcow" ? ("refcow" as const) : ("qemu" as const),
    scheme: s.scheme ?? s.backend,
    cache: c.cache,
    workload: `guest-${c.workload}`,
    round: c.rep,
    emulator: "qemu" as const,
    backend: s.backend,
  };
  try {
    const r = await runQemuGuestWorkload({
      image,
      backend: s.backend,
      scheme: s.scheme,
      cache: c.cache,
      workload: c.workload,
      clusters: c.clusters,
      disk: c.disk,
      iodepth: c.iodepth,
      accel: c.accel,
      snapshotAt: "middle",
      onProgress: c.onProgress,
    });
    const check = qemuCheckVerdict(image);
    if (check !== "clean") return { failed: { ...where, reason: `the image it left fails qemu-img check: ${check}`, check } };
    return { result: qemuGuestRecord(r, check, c.rep) };
  } catch (e) {
    return { failed: failureOf(e, where) };
  }
}
