/**
 * The refcow browser page: the engine serves a qcow2 image stored in the origin private file system from a
 * Web Worker (src/worker/web-worker.ts), through the same request ring and DiskClient as in Node; the test
 * guest boots in v86 in the page with its IDE disk on that image (src/web/browser-guest.ts).
 *
 * URL parameters (all optional): image=NAME, scheme=NAME (one of the registry's schemes),
 * cache=writeback|writethrough|unsafe, size=MiB (of a new image), fresh=1 (recreate the image), autoboot=0,
 * mem=MiB (guest RAM).
 *
 * `window.refcowPage` exposes the page's state and a few calls for scripted use (the end-to-end test).
 */
import type { CacheMode, SnapshotInfo } from "../engine/types.js";
import type { DiskOp } from "../v86/disk-device.js";
import { buildWorkload, WORKLOAD_NAMES, type Workload } from "../guest/workloads.js";
import { WebImageHost } from "../worker/web-host.js";
import { GuestRestoredError, type GuestFiles } from "./browser-guest.js";
import { formatUs, LiveLatency } from "./live-latency.js";
import { checkFileName, fileExists, listFiles, writeFile } from "./opfs-store.js";
import { PageSession, type EngineSettings } from "./page-session.js";

interface PageConfig {
  cmdline: string;
  memoryMiB: number;
  kernelRelease?: string;
  files: GuestFiles;
}

type PageState = "loading" | "idle" | "booting" | "ready" | "error";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`page element #${id} is missing`);
  return el as T;
};

const params = new URLSearchParams(location.search);
/** The registry's scheme names (src/schemes/index.ts), put in by the bundler (src/cli/web-server.ts). */
declare const REFCOW_SCHEME_NAMES: readonly string[];
const SCHEMES: readonly string[] = REFCOW_SCHEME_NAMES;
const CACHES: CacheMode[] = ["writeback", "writethrough", "unsafe"];
const MiB = 1024 * 1024;

const ui = {
  status: $("status"),
  imageSelect: $<HTMLSelectElement>("image-select"),
  bootBtn: $<HTMLButtonElement>("boot-btn"),
  newName: $<HTMLInputElement>("new-name"),
  newSize: $<HTMLInputElement>("new-size"),
  createBtn: $<HTMLButtonElement>("create-btn"),
  downloadBtn: $<HTMLButtonElement>("download-btn"),
  uploadInput: $<HTMLInputElement>("upload-input"),
  checkResult: $("check-result"),
  schemeSelect: $<HTMLSelectElement>("scheme-select"),
  cacheSelect: $<HTMLSelectElement>("cache-select"),
  diskSelect: $<HTMLSelectElement>("disk-select"),
  reopenBtn: $<HTMLButtonElement>("reopen-btn"),
  engineInfo: $("engine-info"),
  snapName: $<HTMLInputElement>("snap-name"),
  snapVm: $<HTMLInputElement>("snap-vm"),
  snapTake: $<HTMLButtonElement>("snap-take"),
  snapBody: $("snap-table").querySelector("tbody")!,
  workloadSelect: $<HTMLSelectElement>("workload-select"),
  workloadRun: $<HTMLButtonElement>("workload-run"),
  workloadSnap: $<HTMLInputElement>("wl-snap-middle"),
  cmdInput: $<HTMLInputElement>("cmd-input"),
  cmdRun: $<HTMLButtonElement>("cmd-run"),
  log: $("log"),
  console: $("console"),
  phaseSelect: $<HTMLSelectElement>("phase-select"),
  latencyLive: $("latency-live"),
  latencyBody: $("latency-table").querySelector("tbody")!,
  hist: $("hist"),
  histLabels: $("hist-labels"),
};
for (const name of SCHEMES) ui.schemeSelect.add(new Option(name));

let state: PageState = "loading";
let host: WebImageHost | undefined;
let config: PageConfig | undefined;
let session: PageSession | undefined;
let workloads: Workload[] = [];
let runningPhase: string | undefined;
let phaseCounter = 0;
let opBusy = false;
let lastError: string | undefined;
const latency = new LiveLatency();

// ------------------------------------------------------------------------------------------------ status/log

function setState(s: PageState, text: string): void {
  state = s;
  ui.status.textContent = text;
  ui.status.className = s === "error" ? "error" : "";
  refreshButtons();
}

function log(line: string): void {
  const t = new Date().toLocaleTimeString();
  ui.log.textContent += `${t} ${line}\n`;
  ui.log.scrollTop = ui.log.scrollHeight;
}

function fail(what: string, e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  lastError = `${what}: ${msg}`;
  log(`error: ${lastError}`);
  console.error(what, e);
}

function refreshButtons(): void {
  const ready = state === "ready" && !!session;
  const free = ready && !opBusy;
  ui.downloadBtn.disabled = !free;
  ui.reopenBtn.disabled = !free;
  ui.snapTake.disabled = !free;
  ui.workloadRun.disabled = !ready || runningPhase !== undefined;
  ui.cmdRun.disabled = !ready;
  ui.bootBtn.disabled = state === "booting" || state === "loading" || opBusy;
  ui.createBtn.disabled = ui.bootBtn.disabled;
  ui.uploadInput.disabled = ui.bootBtn.disabled;
  ui.snapBody.querySelectorAll("button").forEach((b) => (b.disabled = !free));
}

/** Runs a page operation that needs the guest paused or the image exclusive; one at a time. */
async function operation<T>(what: string, fn: () => Promise<T>): Promise<T | undefined> {
  if (opBusy) {
    log(`busy: ${what} must wait for the running operation`);
    return undefined;
  }
  opBusy = true;
  refreshButtons();
  try {
    return await fn();
  } catch (e) {
    fail(what, e);
    return undefined;
  } finally {
    opBusy = false;
    refreshButtons();
  }
}

// -------------------------------------------------------------------------------------------------- console

let consolePending = "";
let consoleFlushScheduled = false;
const CONSOLE_KEEP = 200_000;

function consoleByte(b: number): void {
  consolePending += String.fromCharCode(b);
  if (!consoleFlushScheduled) {
    consoleFlushScheduled = true;
    requestAnimationFrame(() => {
      consoleFlushScheduled = false;
      const el = ui.console;
      const atBottom = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
      let text = el.textContent + consolePending.replace(/\r/g, "");
      consolePending = "";
      if (text.length > CONSOLE_KEEP * 1.5) text = text.slice(-CONSOLE_KEEP);
      el.textContent = text;
      if (atBottom) el.scrollTop = el.scrollHeight;
    });
  }
}

/** Shows a line the host sent to the guest (the guest's console does not echo it). */
function consoleNote(command: string): void {
  const shown = command.length > 160 ? `${command.slice(0, 157)}...` : command;
  for (const ch of `\n$ ${shown}\n`) consoleByte(ch.charCodeAt(0) & 0xff);
}

// --------------------------------------------------------------------------------------------------- images

async function refreshImages(select?: string): Promise<void> {
  const files = (await listFiles()).filter((f) => !f.name.startsWith("."));
  const current = select ?? ui.imageSelect.value;
  ui.imageSelect.replaceChildren(
    ...files.map((f) => {
      const o = document.createElement("option");
      o.value = f.name;
      o.textContent = `${f.name} (${(f.size / MiB).toFixed(1)} MiB)`;
      return o;
    }),
  );
  if (files.some((f) => f.name === current)) ui.imageSelect.value = current;
}

function engineSettings(): EngineSettings {
  return { scheme: ui.schemeSelect.value, cache: ui.cacheSelect.value as CacheMode };
}

async function boot(file: string): Promise<void> {
  if (!host || !config) return;
  if (session) {
    const old = session;
    session = undefined;
    await old.close().catch((e) => fail("closing the previous guest", e));
  }
  latency.clear();
  ui.console.textContent = "";
  const settings = engineSettings();
  setState("booting", `booting the guest on ${file} (${settings.scheme}, ${settings.cache}, ${ui.diskSelect.value} disk)…`);
  const t0 = performance.now();
  try {
    session = await PageSession.start({
      host,
      file,
      settings,
      files: config.files,
      cmdline: config.cmdline,
      memoryMiB: Number(params.get("mem")) || config.memoryMiB,
      diskType: ui.diskSelect.value === "virtio" ? "virtio" : "ide",
      onConsoleByte: consoleByte,
    });
  } catch (e) {
    fail(`booting on ${file}`, e);
    setState("error", `boot failed: ${lastError}`);
    return;
  }
  const bootMs = session.guest.readyMs;
  workloads = WORKLOAD_NAMES.map((name) => buildWorkload(name, { diskSize: session!.disk.size, clusterSize: session!.clusterSize }));
  ui.workloadSelect.replaceChildren(
    ...workloads.map((w) => {
      const o = document.createElement("option");
      o.value = w.name;
      o.textContent = `${w.name}: ${w.description}`;
      o.title = w.phases.map((p) => `${p.name}: ${p.description}`).join("\n");
      return o;
    }),
  );
  pageApi.bootMs = bootMs;
  setState("ready", `guest ready: booted in ${(bootMs / 1000).toFixed(1)} s (page ${((performance.now() - t0) / 1000).toFixed(1)} s) · ${file}, ${(session.disk.size / MiB).toFixed(0)} MiB`);
  showEngineInfo();
  log(`booted on ${file} in ${(bootMs / 1000).toFixed(1)} s`);
  await refreshSnapshots();
}

function showEngineInfo(): void {
  if (!session) return;
  const s = session.settings;
  ui.engineInfo.textContent = `serving ${session.file}: scheme ${s.scheme}, cache ${s.cache}; crossOriginIsolated=${String(crossOriginIsolated)}; guest flushes ${session.guest.guestFlushes}`;
}

async function createAndBoot(name: string, sizeMiB: number): Promise<void> {
  if (!host) return;
  const file = checkFileName(name);
  if (session?.file === file) {
    const old = session;
    session = undefined;
    await old.close();
  }
  await host.create(file, { size: Math.round(sizeMiB) * MiB });
  log(`created ${file}: qcow2, ${sizeMiB} MiB virtual, 64 KiB clusters`);
  await refreshImages(file);
  await boot(file);
}

async function download(): Promise<void> {
  const s = session;
  if (!s) return;
  const t0 = performance.now();
  const { bytes, check } = await s.exportImage();
  const clean = check.corruptions === 0 && check.leaks === 0 && check.checkErrors === 0;
  ui.checkResult.className = clean ? "ok" : "bad";
  ui.checkResult.textContent = clean
    ? `refcow check: No errors were found on the image. ${check.allocatedClusters}/${check.totalClusters} clusters allocated.`
    : `refcow check: ${check.corruptions} corruptions, ${check.leaks} leaks, ${check.checkErrors} check errors`;
  const url = URL.createObjectURL(new Blob([bytes as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = s.file;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  log(`download: ${s.file}, ${(bytes.length / MiB).toFixed(1)} MiB, closed/checked/reopened in ${(performance.now() - t0).toFixed(0)} ms`);
  await refreshImages();
}

async function upload(file: File): Promise<void> {
  if (!host) return;
  const name = checkFileName(file.name);
  const head = new Uint8Array(await file.slice(0, 4).arrayBuffer());
  if (head.length < 4 || head[0] !== 0x51 || head[1] !== 0x46 || head[2] !== 0x49 || head[3] !== 0xfb) {
    throw new Error(`${name} is not a qcow2 image (no QFI\\xfb magic)`);
  }
  if ((await fileExists(name)) && !confirm(`Replace ${name} in the browser's storage?`)) return;
  if (session?.file === name) {
    const old = session;
    session = undefined;
    await old.close();
  }
  await writeFile(name, file);
  log(`uploaded ${name} (${(file.size / MiB).toFixed(1)} MiB)`);
  await refreshImages(name);
  await boot(name);
}

// ------------------------------------------------------------------------------------------------ snapshots

async function refreshSnapshots(): Promise<SnapshotInfo[]> {
  if (!session) {
    ui.snapBody.replaceChildren();
    return [];
  }
  const list = await session.snapshots();
  ui.snapBody.replaceChildren(
    ...list.map((s) => {
      const tr = document.createElement("tr");
      const cells = [s.id, s.name, s.vmStateSize ? `${(s.vmStateSize / MiB).toFixed(1)} MiB` : "–", new Date(s.dateSec * 1000).toLocaleTimeString()];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 2) td.className = "num";
        tr.append(td);
      });
      const td = document.createElement("td");
      const apply = document.createElement("button");
      apply.textContent = "Apply";
      apply.dataset.snapshot = s.name;
      apply.addEventListener("click", () => void applySnapshot(s.id, s.name));
      const del = document.createElement("button");
      del.textContent = "Delete";
      del.dataset.snapshot = s.name;
      del.addEventListener("click", () => void deleteSnapshot(s.id, s.name));
      td.append(apply, " ", del);
      tr.append(td);
      return tr;
    }),
  );
  refreshButtons();
  return list;
}

async function takeSnapshot(): Promise<void> {
  const s = session;
  if (!s) return;
  const name = ui.snapName.value.trim();
  if (!name) return log("a snapshot needs a name");
  await operation(`snapshot ${name}`, async () => {
    const t0 = performance.now();
    const info = await s.snapshotTake(name, { vmState: ui.snapVm.checked });
    log(`snapshot ${info.name} (id ${info.id}) taken in ${(performance.now() - t0).toFixed(0)} ms, VM state ${(info.vmStateSize / MiB).toFixed(1)} MiB`);
    ui.snapName.value = nextName(name);
    await refreshSnapshots();
  });
}

function nextName(name: string): string {
  const m = /^(.*?)(\d+)$/.exec(name);
  return m ? `${m[1]}${Number(m[2]) + 1}` : `${name}2`;
}

async function applySnapshot(id: string, name: string): Promise<void> {
  const s = session;
  if (!s) return;
  await operation(`apply ${name}`, async () => {
    const t0 = performance.now();
    const r = await s.snapshotApply(id);
    log(
      r.restoredVm
        ? `applied ${name}: disk and VM state restored in ${(performance.now() - t0).toFixed(0)} ms`
        : `applied ${name} (disk only: no VM state; the guest's page cache may be stale — reboot it to be safe)`,
    );
    await refreshSnapshots();
  });
}

async function deleteSnapshot(id: string, name: string): Promise<void> {
  const s = session;
  if (!s) return;
  await operation(`delete ${name}`, async () => {
    await s.snapshotDelete(id);
    log(`deleted snapshot ${name}`);
    await refreshSnapshots();
  });
}

// ---------------------------------------------------------------------------------------- commands/latency

async function runCommand(command: string, phase: string, timeoutMs?: number): Promise<{ exitCode: number; output: string; ms: number } | undefined> {
  const s = session;
  if (!s) throw new Error("no guest is running");
  try {
    consoleNote(command);
    drainRecords();
    const r = await s.guest.run(command, { phase, timeoutMs });
    drainRecords();
    return r;
  } catch (e) {
    if (e instanceof GuestRestoredError) {
      log(e.message);
      return undefined;
    }
    throw e;
  }
}

/**
 * Runs a workload of src/guest/workloads.ts phase by phase. The guest announces each phase (REFCOW-PHASE) and
 * waits; the page labels the requests that follow `<workload> #<n> <phase>` and, when asked to, takes a
 * snapshot before the workload's middle phase (so the phases before and after it compare in-place writes
 * with writes to shared clusters).
 */
async function runWorkload(w: Workload): Promise<void> {
  const s = session;
  if (!s || runningPhase) return;
  const n = ++phaseCounter;
  const label = (phase: string) => `${w.name} #${n} ${phase}`;
  const snapMiddle = ui.workloadSnap.checked;
  runningPhase = label("setup");
  refreshButtons();
  log(`workload ${w.name} #${n}: ${w.description}${snapMiddle ? `; snapshot before ${w.middle}` : ""}`);
  s.guest.phaseLabel = label;
  s.guest.onPhase = async (phase) => {
    runningPhase = label(phase);
    addPhaseOption(runningPhase);
    ui.phaseSelect.value = runningPhase;
    if (snapMiddle && phase === w.middle) {
      const name = `${w.name}-${n}-mid`;
      const t0 = performance.now();
      const info = await s.snapshotTake(name, { vmState: ui.snapVm.checked });
      log(`snapshot ${info.name} (id ${info.id}) before ${phase} in ${(performance.now() - t0).toFixed(0)} ms`);
      await refreshSnapshots();
    }
  };
  try {
    for (const phase of w.phases) {
      const r = await runCommand(phase.command, "setup", phase.timeoutMs);
      if (!r) return; // the guest was restored meanwhile
      const sum = latency.summary(label(phase.name), "write");
      log(`  ${phase.name}: exit ${r.exitCode} in ${(r.ms / 1000).toFixed(1)} s${sum ? `, ${sum.count} writes, median ${formatUs(sum.medianUs)}` : ""}`);
      if (r.exitCode !== 0) {
        log(`  ${phase.name} failed:\n${r.output.trim().slice(-500)}`);
        break;
      }
    }
    if (s.guest.phaseError) fail(`workload ${w.name}`, s.guest.phaseError);
  } catch (e) {
    fail(`workload ${w.name}`, e);
  } finally {
    s.guest.onPhase = undefined;
    s.guest.phaseError = undefined;
    runningPhase = undefined;
    refreshButtons();
    drainRecords();
  }
}

async function runTyped(): Promise<void> {
  const cmd = ui.cmdInput.value.trim();
  if (!cmd || !session) return;
  const phase = `command #${++phaseCounter}`;
  addPhaseOption(phase);
  log(`$ ${cmd}`);
  try {
    const r = await runCommand(cmd, phase);
    if (r) log(`${r.output}${r.output.endsWith("\n") || !r.output ? "" : "\n"}[exit ${r.exitCode}]`);
  } catch (e) {
    fail(cmd, e);
  }
}

function addPhaseOption(phase: string): void {
  const o = document.createElement("option");
  o.value = phase;
  o.textContent = phase;
  ui.phaseSelect.append(o);
}

function drainRecords(): void {
  const s = session;
  if (!s) return;
  const recs = s.guest.adapter.takeRecords();
  if (recs.length) latency.add(recs);
  for (const p of latency.order) {
    if (!Array.from({ length: ui.phaseSelect.options.length }, (_, i) => ui.phaseSelect.options[i]!.value).includes(p)) addPhaseOption(p);
  }
}

function renderLatency(): void {
  drainRecords();
  const phase = ui.phaseSelect.value || latency.order[latency.order.length - 1];
  if (!phase) return;
  ui.latencyLive.textContent = runningPhase === phase ? "● running (updated live)" : "";
  const rows: HTMLTableRowElement[] = [];
  for (const op of ["write", "flush", "read"] as DiskOp[]) {
    const s = latency.summary(phase, op);
    if (!s) continue;
    const tr = document.createElement("tr");
    tr.dataset.op = op;
    const cells = [
      op,
      String(s.count),
      formatUs(s.medianUs),
      formatUs(s.p99Us),
      formatUs(s.maxUs),
      s.engineMedianUs !== undefined ? formatUs(s.engineMedianUs) : "–",
      s.engineP99Us !== undefined ? formatUs(s.engineP99Us) : "–",
    ];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i > 0) td.className = "num";
      tr.append(td);
    });
    rows.push(tr);
  }
  ui.latencyBody.replaceChildren(...rows);
  const h = latency.histogram(phase, "write");
  const counts = h?.counts ?? [];
  const max = Math.max(1, ...counts);
  let first = counts.findIndex((c) => c > 0);
  let last = counts.length - 1 - [...counts].reverse().findIndex((c) => c > 0);
  if (first < 0) {
    first = 0;
    last = -1;
  }
  first = Math.max(0, first - 1);
  last = Math.min(counts.length - 1, last + 1);
  const bars: HTMLElement[] = [];
  const labels: HTMLElement[] = [];
  for (let i = first; i <= last; i++) {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.height = `${(counts[i]! / max) * 100}%`;
    const upper = 2 ** (h!.firstExp + i);
    bar.title = `< ${formatUs(upper)}: ${counts[i]}`;
    bars.push(bar);
    const label = document.createElement("span");
    label.textContent = `<${formatUs(upper).replace(" ", "")}`;
    labels.push(label);
  }
  ui.hist.replaceChildren(...bars);
  ui.histLabels.replaceChildren(...labels);
  showEngineInfo();
}

// --------------------------------------------------------------------------------------------- scripted use

const pageApi = {
  get state(): PageState {
    return state;
  },
  get error(): string | undefined {
    return lastError;
  },
  bootMs: 0,
  get crossOriginIsolated(): boolean {
    return globalThis.crossOriginIsolated === true;
  },
  get file(): string | undefined {
    return session?.file;
  },
  get busy(): boolean {
    return opBusy || runningPhase !== undefined;
  },
  /** Runs a shell command in the guest (labelled `phase` in the latency records). */
  run: (command: string, phase = "scripted") => {
    if (!session) throw new Error("no guest is running");
    consoleNote(command);
    return session.guest.run(command, { phase });
  },
  snapshots: () => refreshSnapshots(),
  /** The latency summary of a phase, per op, as the panel shows it. */
  latency: (phase: string) => {
    drainRecords();
    return { write: latency.summary(phase, "write"), flush: latency.summary(phase, "flush"), read: latency.summary(phase, "read") };
  },
  phases: () => {
    drainRecords();
    return [...latency.order];
  },
};
(globalThis as unknown as { refcowPage: typeof pageApi }).refcowPage = pageApi;

// -------------------------------------------------------------------------------------------------- startup

function wire(): void {
  ui.bootBtn.addEventListener("click", () => {
    if (ui.imageSelect.value) void operation("boot", () => boot(ui.imageSelect.value));
  });
  ui.createBtn.addEventListener("click", () => void operation("create", () => createAndBoot(ui.newName.value, Number(ui.newSize.value))));
  ui.downloadBtn.addEventListener("click", () => void operation("download", download));
  ui.uploadInput.addEventListener("change", () => {
    const f = ui.uploadInput.files?.[0];
    ui.uploadInput.value = "";
    if (f) void operation("upload", () => upload(f));
  });
  ui.reopenBtn.addEventListener("click", () =>
    void operation("reopen", async () => {
      const s = session!;
      const next = engineSettings();
      const t0 = performance.now();
      await s.reopen(next);
      log(`reopened ${s.file} with scheme ${next.scheme}, cache ${next.cache} in ${(performance.now() - t0).toFixed(0)} ms`);
      showEngineInfo();
    }),
  );
  ui.snapTake.addEventListener("click", () => void takeSnapshot());
  ui.snapName.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !ui.snapTake.disabled) void takeSnapshot();
  });
  ui.workloadRun.addEventListener("click", () => {
    const w = workloads.find((x) => x.name === ui.workloadSelect.value);
    if (w) void runWorkload(w);
  });
  ui.cmdRun.addEventListener("click", () => void runTyped());
  ui.cmdInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !ui.cmdRun.disabled) void runTyped();
  });
  ui.phaseSelect.addEventListener("change", renderLatency);
  setInterval(renderLatency, 300);
}

async function start(): Promise<void> {
  wire();
  const scheme = params.get("scheme");
  const cache = params.get("cache");
  if (scheme && SCHEMES.includes(scheme)) ui.schemeSelect.value = scheme;
  const diskParam = params.get("disk");
  if (diskParam === "ide" || diskParam === "virtio") ui.diskSelect.value = diskParam;
  if (cache && (CACHES as string[]).includes(cache)) ui.cacheSelect.value = cache;
  if (params.get("size")) ui.newSize.value = params.get("size")!;
  if (params.get("image")) ui.newName.value = params.get("image")!;
  if (!globalThis.crossOriginIsolated) {
    setState("error", "This page is not cross-origin isolated, so SharedArrayBuffer is unavailable: serve it with `npm run web` (COOP same-origin + COEP require-corp).");
    return;
  }
  try {
    const res = await fetch("guest/config.json");
    if (!res.ok) throw new Error(`guest/config.json: HTTP ${res.status}`);
    config = (await res.json()) as PageConfig;
    host = await WebImageHost.start(new URL("web-worker.js", location.href));
  } catch (e) {
    fail("starting", e);
    setState("error", `cannot start: ${lastError}`);
    return;
  }
  setState("idle", `engine worker ready (kernel ${config.kernelRelease ?? "?"})`);
  const file = checkFileName(params.get("image") ?? "disk.qcow2");
  const exists = await fileExists(file);
  await refreshImages(file);
  if (params.get("autoboot") === "0") return;
  await operation("boot", async () => {
    if (!exists || params.get("fresh") === "1") await createAndBoot(file, Number(ui.newSize.value) || 256);
    else await boot(file);
  });
}

void start();
