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
 *
 * The host column: the host matrix's figure of what the guest's disk goes through, for the same scheme and
 * cache mode, from the same results (post-snapshot ÷ in-place, amortized, round by round): refcow through
 * the worker ring beside v86, refcow's NBD export beside QEMU on `refcow nbd`, qemu-nbd (std, or
 * lazy_refcounts) beside QEMU's own qcow2 driver. Where that row is missing the cell says why (the host
 * source's failure with its reason, or that the results hold no host matrix), never another row instead.
 */
import { ratioByRounds, spread, type Spread } from "../stats/latency.js";
import { guestAmortized } from "./guest-results.js";
import { HOST_TWIN_WORKLOAD, type TableModel } from "./guest-section.js";
import { formatRatio, ratioOf } from "./ratios.js";
import type { FailedSource, GuestPhase, GuestResult, ResultRow, Transport } from "./results.js";

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

/** The host matrix's source beside a guest source: what its disk goes through, on the host. */
interface HostTwin {
  source: "refcow" | "qemu";
  scheme: string;
  transport: Transport;
  label: string;
}

export function hostTwinOf(emulator: string, backend: string, scheme: string): HostTwin {
  if (emulator === "v86") return { source: "refcow", scheme, transport: "ring", label: `refcow ${scheme}, ring` };
  if (backend === "qemu") return { source: "qemu", scheme: "std", transport: "nbd", label: "qemu-nbd std" };
  if (backend === "qemu-lazy") return { source: "qemu", scheme: "lazy_refcounts", transport: "nbd", label: "qemu-nbd lazy_refcounts" };
  return { source: "refcow", scheme, transport: "nbd", label: `refcow ${scheme}, nbd` };
}

/** The host twin's post ÷ in-place (amortized) as the cell shows it, or why it is missing. */
function hostCell(twin: HostTwin, cache: string, rows: readonly ResultRow[], failed: readonly FailedSource[]): string {
  const post = rows.find(
    (r) =>
      r.source === twin.source &&
      r.scheme === twin.scheme &&
      r.transport === twin.transport &&
      r.cache === cache &&
      r.workload === HOST_TWIN_WORKLOAD &&
      r.phase === "post-snapshot" &&
      !r.order &&
      (r.alloc ?? "first-fit") === "first-fit",
  );
  const ratio = post ? ratioOf(rows, post, "vs in-place", "amortized_us") : undefined;
  if (ratio) return formatRatio(ratio);
  const failure = failed.find(
    (f) =>
      (f.part === "write matrix" && f.source === twin.source && f.scheme === twin.scheme && f.transport === twin.transport && (f.cache === undefined || f.cache === cache)) ||
      f.part === "host matrix",
  );
  if (failure) return `failed: ${failure.reason}`;
  if (post) return "missing: no in-place row";
  return rows.length ? "missing: not in the host matrix" : "missing: no host matrix in these results";
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
  // A failure before any scheme ran (the guest image, the emulator) is a row of its own.
  for (const f of failed) if (f.part === "guest") get(f.emulator, f.backend, f.scheme ?? "–", String(f.cache ?? "–")).failed.push(f);
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
    const twin = hostTwinOf(s.emulator, s.backend, s.scheme);
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
      body.push([
        ...label,
        String(s.runs.length) + (s.failed.length ? ` (+${s.failed.length} failed)` : ""),
        range(inPlace),
        range(post),
        appRatio.runs ? formatRatio(appRatio) : "–",
        app.map((r) => (r === undefined ? "–" : r.toFixed(2))).join(" "),
        amortized.runs ? formatRatio(amortized) : "–",
        twin.label,
        hostCell(twin, s.cache, rows, failed),
      ]);
    }
    for (const f of s.failed) body.push([...label, `failed${f.round !== undefined ? ` (run ${f.round})` : ""}: ${f.reason}`, "", "", "", "", "", "", ""]);
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
      "host twin (same scheme and cache)",
      "host post ÷ in-place (amortized)",
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
