/**
 * The guest under two emulators: the same guest program's post-snapshot ÷ in-place write figures under v86
 * (refcow's worker ring) and under QEMU (its own qcow2 driver, with and without lazy refcounts, and refcow
 * through `refcow nbd`), per cache mode and scheme, beside the host benchmark's ratio for the same scheme —
 * whether what the guest sees of a snapshot's cost depends on the emulator.
 *
 * Statistics: the guest program's own per-request write time (app: refcow-io's system call on the guest's
 * clock), its median per phase per run; the ratio is post-snapshot ÷ in-place within each run, then the
 * median over runs with min–max and every run's ratio listed (src/stats's ratioByRounds). The amortized
 * ratio (phase wall time ÷ writes) is shown beside it. A run that failed is a row with its reason.
 */
import { ratioByRounds, spread, type Spread } from "../stats/latency.js";
import { guestAmortized } from "./guest-results.js";
import { hostRow, type TableModel } from "./guest-section.js";
import { formatRatio, ratioOf } from "./ratios.js";
import type { FailedSource, GuestPhase, GuestResult, ResultRow } from "./results.js";

const n1 = (x: number) => (!Number.isFinite(x) ? "–" : x >= 100 ? x.toFixed(0) : x.toFixed(1));
const range = (s: Spread | undefined) => (!s || s.runs === 0 ? "–" : s.runs === 1 ? n1(s.median) : `${n1(s.median)} (${n1(s.min)}–${n1(s.max)})`);

/** "v86", "QEMU tcg": the emulator as the table names it. */
function emulatorName(g: { emulator?: string; accel?: string }): string {
  if ((g.emulator ?? "v86") === "v86") return "v86";
  return `QEMU ${(g.accel ?? "").split(" ")[0] || "?"}`;
}

/** The image's block driver as the table names it. */
export function backendName(emulator: string | undefined, backend: string | undefined): string {
  if ((emulator ?? "v86") === "v86") return "refcow (worker ring)";
  if (backend === "qemu") return "QEMU qcow2";
  if (backend === "qemu-lazy") return "QEMU qcow2, lazy_refcounts";
  return "refcow nbd";
}

interface Source {
  emulator: string;
  backend: string;
  scheme: string;
  cache: string;
  runs: GuestResult[];
  failed: FailedSource[];
}

const keyOf = (emulator: string | undefined, backend: string | undefined, scheme: string, cache: string) => `${cache}\u0000${scheme}\u0000${emulator ?? "v86"}\u0000${backend ?? "refcow"}`;

function sources(guest: readonly GuestResult[], failed: readonly FailedSource[]): Source[] {
  const out = new Map<string, Source>();
  const get = (emulator: string | undefined, backend: string | undefined, scheme: string, cache: string) => {
    const k = keyOf(emulator, backend, scheme, cache);
    let s = out.get(k);
    if (!s) out.set(k, (s = { emulator: emulator ?? "v86", backend: backend ?? "refcow", scheme, cache, runs: [], failed: [] }));
    return s;
  };
  for (const g of guest) get(g.emulator, g.backend, g.scheme, String(g.cache)).runs.push(g);
  for (const f of failed) if (f.part === "guest" && f.scheme) get(f.emulator, f.backend, f.scheme, String(f.cache ?? "")).failed.push(f);
  // By cache mode, then scheme, then v86 before QEMU.
  return [...out.values()].sort((a, b) => a.cache.localeCompare(b.cache) || a.scheme.localeCompare(b.scheme) || a.emulator.localeCompare(b.emulator, "en", { sensitivity: "base" }) * -1);
}

const phaseOf = (g: GuestResult, name: string): GuestPhase | undefined => g.phases.find((p) => p.name === name && p.writes > 0);
const appMedian = (p: GuestPhase | undefined) => (p?.app_us?.count ? p.app_us.median : undefined);

/** Per run: post-snapshot ÷ in-place of `stat`; undefined where a run lacks either. */
function perRunRatios(runs: readonly GuestResult[], stat: (p: GuestPhase | undefined) => number | undefined): Array<number | undefined> {
  return runs.map((g) => {
    const post = stat(phaseOf(g, "post-snapshot"));
    const inPlace = stat(phaseOf(g, "in-place"));
    return post !== undefined && inPlace !== undefined && inPlace > 0 ? post / inPlace : undefined;
  });
}

function spreadOf(values: Array<number | undefined>): Spread | undefined {
  const v = values.filter((x): x is number => x !== undefined);
  return v.length ? spread(v) : undefined;
}

/** The table: one row per cache mode, scheme, emulator and backend; failed runs as rows with their reason. */
export function emulatorTable(guest: readonly GuestResult[], rows: readonly ResultRow[], failed: readonly FailedSource[] = []): TableModel {
  const body: string[][] = [];
  for (const s of sources(guest, failed)) {
    const label = [s.cache, s.scheme, emulatorName(s.runs[0] ?? s), backendName(s.emulator, s.backend)];
    if (s.runs.length) {
      const inPlace = spreadOf(s.runs.map((g) => appMedian(phaseOf(g, "in-place"))));
      const post = spreadOf(s.runs.map((g) => appMedian(phaseOf(g, "post-snapshot"))));
      const app = perRunRatios(s.runs, appMedian);
      const appRatio = ratioByRounds(
        s.runs.map((g) => appMedian(phaseOf(g, "post-snapshot"))),
        s.runs.map((g) => appMedian(phaseOf(g, "in-place"))),
      );
      const amortized = ratioByRounds(
        s.runs.map((g) => (phaseOf(g, "post-snapshot") ? guestAmortized(phaseOf(g, "post-snapshot")!) : undefined)),
        s.runs.map((g) => (phaseOf(g, "in-place") ? guestAmortized(phaseOf(g, "in-place")!) : undefined)),
      );
      const twin = s.backend === "refcow" ? hostRow([...rows], s.scheme, s.cache, "post-snapshot") : undefined;
      const host = twin ? ratioOf(rows, twin, "vs in-place", "amortized_us") : undefined;
      body.push([
        ...label,
        String(s.runs.length) + (s.failed.length ? ` (+${s.failed.length} failed)` : ""),
        range(inPlace),
        range(post),
        appRatio.runs ? formatRatio(appRatio) : "–",
        app.map((r) => (r === undefined ? "–" : r.toFixed(2))).join(" "),
        amortized.runs ? formatRatio(amortized) : "–",
        host ? formatRatio(host) : s.backend === "refcow" ? "–" : "n/a",
      ]);
    }
    for (const f of s.failed) body.push([...label, `failed${f.round !== undefined ? ` (run ${f.round})` : ""}: ${f.reason}`, "", "", "", "", "", ""]);
  }
  return {
    head: [
      "cache",
      "scheme",
      "emulator",
      "backend",
      "runs",
      "in-place app median µs",
      "post-snapshot app median µs",
      "post ÷ in-place (app median, per run: median (min–max))",
      "per-run ratios",
      "post ÷ in-place (amortized)",
      "host post ÷ in-place (ring, amortized)",
    ],
    body,
    numericFrom: 5,
  };
}

/** Whether there is anything beyond v86's runs to set beside them. */
export function hasOtherEmulators(guest: readonly GuestResult[], failed: readonly FailedSource[]): boolean {
  return guest.some((g) => (g.emulator ?? "v86") !== "v86") || failed.some((f) => f.part === "guest" && (f.emulator ?? "v86") !== "v86");
}

export const EMULATOR_NOTE =
  "The same guest kernel, initramfs and program (refcow-io), the same workload with its warm-up writes and the same disk snapshot before post-snapshot (no VM state under QEMU), under v86 and under QEMU. app: the guest program's own per-request write time, its median per phase and run; each ratio is taken within a run, then the median over runs with min–max. QEMU boots cold every run; v86 resumes a warm-start state.";
