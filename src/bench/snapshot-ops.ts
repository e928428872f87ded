/**
 * The snapshot-operation timings: snapshot create, apply and delete, open, close and recovery (the open of an
 * image a simulated crash left dirty), per scheme and allocated size, each image checked by qemu-img.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { createImagePath, openImagePath } from "../open/open-path.js";
import type { Qcow2Image } from "../open/qcow2.js";
import type { AllocPolicyName } from "../engine/types.js";
import type { ResultRow } from "../report/results.js";
import { spread } from "../stats/latency.js";
import { requireCleanImage, requireNoCorruption } from "./image-check.js";
import { CLUSTER, nowUs, WRITE } from "./load.js";
import type { BenchOptions } from "./options.js";
import type { Tools } from "./sources.js";

/** Snapshot create/apply/delete, open, close and recovery (open of an image left dirty) per scheme and size. */
export function opRows(opts: BenchOptions, scheme: string, alloc: AllocPolicyName, size: number, tools: Tools): ResultRow[] {
  const rows: ResultRow[] = [];
  const times: Record<string, number[]> = {};
  const recovered = new Set<string>();
  const time = (name: string, f: () => void) => {
    const t = nowUs();
    f();
    (times[name] ??= []).push(nowUs() - t);
  };
  for (let rep = 0; rep < opts.reps; rep++) {
    const file = path.join(opts.dir, `ops-${scheme}-${alloc}-${size}-${rep}.qcow2`);
    const crashed = `${file}.crashed`;
    try {
      createImagePath(file, { size });
      const prep = openImagePath(file, { cache: "unsafe" });
      const sector = new Uint8Array(512).fill(3);
      for (let off = 0; off < size; off += CLUSTER) prep.write(off, sector); // every cluster allocated
      prep.close();
      let img!: Qcow2Image;
      time("open", () => (img = openImagePath(file, { scheme, alloc }) as Qcow2Image));
      try {
        time("snapshot-create", () => img.snapshotCreate("a"));
        img.write(0, new Uint8Array(WRITE));
        time("snapshot-apply", () => img.snapshotApply("a"));
        img.snapshotCreate("b");
        time("snapshot-delete", () => img.snapshotDelete("b"));
        img.write(CLUSTER, new Uint8Array(WRITE));
        img.flush();
        execFileSync("cp", ["--sparse=always", file, crashed]); // what a killed process leaves after its last flush
      } catch (e) {
        try {
          img.close();
        } catch {
          /* the first error says why */
        }
        throw e;
      }
      time("close", () => img.close());
      time("recovery", () => openImagePath(crashed, { scheme, alloc }).close());
      // The timings count only when both images are sound: the closed one clean, the recovered one with at
      // most leaked clusters (what a crash may cost), which its row names.
      if (tools.qemuImg) {
        requireCleanImage(file, "the image after the snapshot operations and close");
        recovered.add(requireNoCorruption(crashed, "the image recovered after the crash"));
      }
    } finally {
      fs.rmSync(file, { force: true });
      fs.rmSync(crashed, { force: true });
    }
  }
  for (const [name, t] of Object.entries(times)) {
    const s = spread(t);
    const leaks = name === "recovery" ? [...recovered].filter((v) => v !== "clean") : [];
    rows.push({ source: "refcow", scheme, alloc, transport: "in-process", cache: "writeback", workload: "snapshot-ops", phase: name, median_us: s.median, median_us_min: s.min, median_us_max: s.max, p99_us: null, amortized_us: s.median, runs: s.runs, size_bytes: size, ...(leaks.length ? { check: `recovered image: ${leaks.join("; ")}` } : {}) });
  }
  return rows;
}
