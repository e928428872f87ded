/**
 * os.html: boot an installed OS from its own disk in the page. The image lives in the origin private file
 * system (OPFS) and is served by refcow's Web Worker (src/worker/web-worker.ts); the PC is v86 with SeaBIOS,
 * which boots the disk from IDE or virtio-blk (os-session.ts). Its VGA screen and its serial console are on
 * the page; savevm / loadvm / delvm are buttons.
 *
 * Disks: the demo OS (`npm run web` builds it and serves it as qcow2; the page copies it into OPFS) or an
 * upload (import-image.ts: qcow2 copied, raw written into qcow2; streamed, any size). The image stays in
 * OPFS: after a reload the page offers to boot it again, with the guest's writes in it. Download streams
 * the image from OPFS (a disk-backed File; nothing is held in memory).
 *
 * A remote image: `?image=URL` (a qcow2 or raw disk on a server answering Range requests — this page's own
 * server, or one allowing its origin) boots under an overlay in OPFS (`remote-<hash>.qcow2`, a plain qcow2
 * naming the URL as its backing file), made on first visit and reused after: the guest's writes survive
 * reloads. "Reset" drops the overlay; "Download" gives the overlay itself (small, naming the URL). The
 * remote image's chunks are kept in OPFS across visits (io/opfs-chunk-cache.ts), so a second boot fetches
 * almost nothing. The overlay records the version of each remote layer it was made over (remote-probe.ts,
 * overlay-pins.ts); a changed one is refused, with Reset offered.
 *
 * URL parameters (optional): disk=ide|virtio, mem=MiB, image=URL, cache=MiB (the chunk cache's bound,
 * default 1024; 0 turns it off); v86=file|buffer|xhr boots a raw image with v86's own buffers instead
 * (v86-own-boot.ts: the benchmarks' comparison).
 * `window.refcowOs` exposes the page's state for scripted use (the end-to-end test, the benchmarks): the
 * page's clock at the start of the last boot and when v86 had loaded (`times`), a wait for a pattern on the
 * serial console that resolves with the page's clock when the guest's bytes arrived (`waitSerial`), the
 * machine's instruction count (`instructions`), and keys for the serial console (`sendSerial`).
 */
import type { SnapshotInfo } from "../engine/types.js";
import { WebImageHost } from "../worker/web-host.js";
import { importImage } from "./import-image.js";
import { checkFileName, fileBlob, fileExists, listFiles, removeFile, writeStream } from "./opfs-store.js";
import { OsSession } from "./os-session.js";
import { readOverlayPin, removeOverlayPin, writeOverlayPin } from "./overlay-pins.js";
import { pinRefusal } from "../open/pin-record.js";
import { probeRemoteImage } from "./remote-probe.js";
import { SerialTerminal } from "./serial-terminal.js";
import { bootV86Own, parseV86OwnMode } from "./v86-own-boot.js";
import type { DiskBootMachine } from "../v86/disk-boot-machine.js";

interface ServerConfig {
  files: { bios: string; vgaBios: string; wasm: string };
  /** The demo OS disk, when the server has one. */
  os?: { url: string; name: string; fileSize: number; virtualSize: number; kernelRelease: string };
}

type PageState = "loading" | "idle" | "busy" | "running" | "error";

/** localStorage key: what was booted last (offered again after a reload). */
const LAST_KEY = "refcow-os:last";
/** OPFS file holding the copy being downloaded (hidden from the list by its leading dot). */
const DOWNLOAD_COPY = ".download.qcow2";
const MiB = 1024 * 1024;

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`page element #${id} is missing`);
  return el as T;
};

const ui = {
  status: $("status"),
  resume: $("resume"),
  resumeText: $("resume-text"),
  resumeBtn: $<HTMLButtonElement>("resume-btn"),
  demoBtn: $<HTMLButtonElement>("demo-btn"),
  demoInfo: $("demo-info"),
  upload: $<HTMLInputElement>("upload-input"),
  imageSelect: $<HTMLSelectElement>("image-select"),
  bootBtn: $<HTMLButtonElement>("boot-btn"),
  removeBtn: $<HTMLButtonElement>("remove-btn"),
  downloadBtn: $<HTMLButtonElement>("download-btn"),
  resetBtn: $<HTMLButtonElement>("reset-btn"),
  closeBtn: $<HTMLButtonElement>("close-btn"),
  progress: $("progress"),
  diskSelect: $<HTMLSelectElement>("disk-select"),
  memInput: $<HTMLInputElement>("mem-input"),
  snapName: $<HTMLInputElement>("snap-name"),
  savevmBtn: $<HTMLButtonElement>("savevm-btn"),
  snapBody: $("snap-table").querySelector("tbody")!,
  log: $("log"),
  screenWrap: $("screen-wrap"),
  screen: $("screen"),
  serial: $<HTMLTextAreaElement>("serial"),
};

const params = new URLSearchParams(location.search);
/** ?image=URL: a remote image to boot under an OPFS overlay. */
const remoteImage = params.get("image") ? new URL(params.get("image")!, location.href).href : undefined;
/** ?cache=MiB: the bound of the remote images' chunk cache (undefined: the worker's default). */
const httpCacheBytes = params.get("cache") !== null ? Math.max(0, Number(params.get("cache")) || 0) * MiB : undefined;
let state: PageState = "loading";
let busy = false;
let lastError: string | undefined;
let host: WebImageHost | undefined;
let config: ServerConfig | undefined;
let firmware: { bios: ArrayBuffer; vgaBios: ArrayBuffer } | undefined;
let session: OsSession | undefined;
let bootMs = 0;
let bootCount = 0;
/** The machine of the v86=... mode (v86 serving the disk itself); `session` is refcow's. */
let ownMachine: DiskBootMachine | undefined;
/** The page's clock (performance.now) at the start of the last boot, and when its v86 had loaded. */
let times: { start?: number; loaded?: number } = {};
const sendKeys = (bytes: Uint8Array) => (session?.machine ?? ownMachine)?.sendSerial(bytes);
const terminal = new SerialTerminal(ui.serial, sendKeys);

/** Waits of `waitSerial`: a pattern on the console's text from where it stood when the wait began. */
const serialWaits: Array<{ re: RegExp; from: number; resolve(seen: SerialSeen): void }> = [];
/** When a wait's pattern showed: the page's clock, and the machine's instruction count then. */
interface SerialSeen {
  at: number;
  instructions: number;
}

/**
 * v86's instruction counter (32 bits, wrapping) as a running total for the machine running now: sampled
 * every 100 ms and at each reading, and v86 retires well under 2^32 instructions in 100 ms.
 */
let counted: { machine?: DiskBootMachine; last: number; sum: number } = { last: 0, sum: 0 };
function instructions(): number {
  const m = session?.machine ?? ownMachine;
  if (!m) return 0;
  if (counted.machine !== m) counted = { machine: m, last: 0, sum: 0 };
  const now = m.emulator.get_instruction_counter() >>> 0;
  counted.sum += (now - counted.last) >>> 0;
  counted.last = now;
  return counted.sum;
}
setInterval(instructions, 100);

/** The guest's console bytes: shown, then the waits they complete are resolved with the clock of their arrival. */
function serialOutput(bytes: Uint8Array): void {
  const at = performance.now();
  terminal.output(bytes);
  for (let i = serialWaits.length - 1; i >= 0; i--) {
    const w = serialWaits[i]!;
    // The kept text is cut from the front past 300 000 characters: the wait then looks at all of it.
    if (w.from > terminal.text.length) w.from = 0;
    if (w.re.test(terminal.text.slice(w.from))) {
      serialWaits.splice(i, 1);
      w.resolve({ at, instructions: instructions() });
    }
  }
}

// ------------------------------------------------------------------------------------------------ status/log

function setState(s: PageState, text: string): void {
  state = s;
  ui.status.textContent = text;
  ui.status.className = s === "error" ? "error" : "";
  refresh();
}

function log(line: string): void {
  ui.log.textContent += `${new Date().toLocaleTimeString()} ${line}\n`;
  ui.log.scrollTop = ui.log.scrollHeight;
}

function fail(what: string, e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  lastError = `${what}: ${msg}`;
  log(`error: ${lastError}`);
  console.error(what, e);
}

function refresh(): void {
  const ready = state !== "loading" && !!host && !busy;
  const running = !!session;
  ui.demoBtn.disabled = !ready || !config?.os;
  ui.upload.disabled = !ready;
  ui.bootBtn.disabled = !ready || !ui.imageSelect.value;
  ui.removeBtn.disabled = !ready || !ui.imageSelect.value || session?.file === ui.imageSelect.value;
  ui.resumeBtn.disabled = !ready;
  ui.downloadBtn.disabled = !ready || !(running || ui.imageSelect.value);
  ui.closeBtn.disabled = !ready || !running;
  ui.savevmBtn.disabled = !ready || !running;
  ui.snapBody.querySelectorAll("button").forEach((b) => (b.disabled = !ready || !running));
}

/** One page operation at a time; errors are logged and shown. */
async function operation<T>(what: string, fn: () => Promise<T>): Promise<T | undefined> {
  if (busy) {
    log(`busy: ${what} waits for the running operation`);
    return undefined;
  }
  busy = true;
  refresh();
  try {
    return await fn();
  } catch (e) {
    fail(what, e);
    if (!session) setState("error", lastError!);
    return undefined;
  } finally {
    busy = false;
    refresh();
  }
}

function progress(text: string): void {
  ui.progress.textContent = text;
}

function mib(bytes: number): string {
  return bytes >= 10 * 1024 * MiB ? `${(bytes / 1024 / MiB).toFixed(1)} GiB` : `${(bytes / MiB).toFixed(1)} MiB`;
}

// --------------------------------------------------------------------------------------------------- images

async function refreshImages(select?: string): Promise<void> {
  const files = (await listFiles()).filter((f) => !f.name.startsWith("."));
  const current = select ?? ui.imageSelect.value;
  ui.imageSelect.replaceChildren(...files.map((f) => new Option(`${f.name} (${mib(f.size)})`, f.name)));
  if (files.some((f) => f.name === current)) ui.imageSelect.value = current;
  refresh();
}

async function closeSession(): Promise<void> {
  const s = session;
  if (!s) return;
  session = undefined;
  await s.close();
  ui.snapBody.replaceChildren();
}

async function boot(file: string, startedAt = performance.now()): Promise<void> {
  if (!host || !firmware || !config) throw new Error("the page has not started");
  times = { start: startedAt };
  await closeSession();
  const diskType = ui.diskSelect.value === "virtio" ? "virtio" : "ide";
  const memoryMiB = Math.round(Number(ui.memInput.value)) || 128;
  terminal.clear();
  const n = ++bootCount;
  setState("busy", `booting ${file} (${diskType === "virtio" ? "virtio-blk" : "IDE"}, ${memoryMiB} MiB RAM)…`);
  const t0 = performance.now();
  // The machine, once open (its end may be reported before open() has returned).
  let resolveOpened!: (s: OsSession) => void;
  const s0 = new Promise<OsSession>((r) => (resolveOpened = r));
  const s = await OsSession.open({
    host,
    file,
    diskType,
    memoryMiB,
    firmware,
    wasmUrl: config.files.wasm,
    screen: ui.screen,
    onSerial: serialOutput,
    onBiosLine: (line) => log(`BIOS: ${line}`),
    onNoBootableDevice: (line) => {
      if (bootCount !== n) return;
      fail("boot", new Error(`the BIOS found nothing to boot on ${file} ("${line.trim()}")`));
      void machineEnded(s0, "error", lastError!);
    },
    httpCacheBytes,
    onPowerOff: () => {
      if (bootCount !== n) return;
      log(`the guest powered off; ${file} closed`);
      void machineEnded(s0, "idle", `the guest powered off; ${file} is closed`);
    },
  });
  times.loaded = performance.now();
  session = s;
  resolveOpened(s);
  // The PS/2 keyboard takes keys only while the screen has the focus (v86 would take them page-wide).
  s.machine.emulator.keyboard_set_enabled(document.activeElement === ui.screenWrap);
  bootMs = performance.now() - t0;
  localStorage.setItem(LAST_KEY, JSON.stringify({ file, diskType, memoryMiB }));
  ui.resume.hidden = true;
  setState("running", `running ${file}: ${mib(s.size)} disk on ${diskType === "virtio" ? "virtio-blk" : "IDE"}, ${memoryMiB} MiB RAM`);
  log(`booting ${file} (${diskType}, ${memoryMiB} MiB RAM)`);
  await refreshImages(file);
  await refreshSnapshots();
}

/** The guest ended its machine (power off, nothing to boot): it is closed, the page says why. */
async function machineEnded(which: Promise<OsSession>, st: PageState, text: string): Promise<void> {
  const s = await which;
  while (busy) await new Promise((r) => setTimeout(r, 50)); // the boot's own operation ends first
  busy = true;
  try {
    if (session === s) session = undefined;
    await s.close().catch((e) => fail("closing the machine", e));
    ui.snapBody.replaceChildren();
  } finally {
    busy = false;
  }
  setState(st, text);
  await offerResume();
}

async function bootDemo(): Promise<void> {
  const os = config?.os;
  if (!os || !host) return;
  await closeSession();
  const res = await fetch(os.url);
  if (!res.ok || !res.body) throw new Error(`${os.url}: HTTP ${res.status}`);
  const t0 = performance.now();
  const bytes = await writeStream(os.name, res.body, (done) => progress(`copying the demo OS into the browser: ${mib(done)} of ${mib(os.fileSize)}`));
  progress(`demo OS copied: ${mib(bytes)} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  log(`demo OS written to ${os.name} (${mib(bytes)} qcow2, ${mib(os.virtualSize)} virtual)`);
  await refreshImages(os.name);
  await boot(os.name);
}

async function upload(file: File): Promise<void> {
  if (!host) return;
  const name = checkFileName(/\.qcow2$/i.test(file.name) ? file.name : `${file.name.replace(/\.(img|raw|bin)$/i, "")}.qcow2`);
  if ((await fileExists(name)) && !confirm(`Replace ${name} in the browser's storage?`)) return;
  // The worker serves one image at a time, and the upload is booted next anyway.
  await closeSession();
  const t0 = performance.now();
  const format = await importImage(host, file, name, (p) => progress(`importing ${file.name}: ${mib(p.done)} of ${mib(p.total)}`));
  const s = (performance.now() - t0) / 1000;
  progress(`${file.name} imported as ${name} in ${s.toFixed(1)} s`);
  log(format === "qcow2" ? `uploaded ${name} (qcow2, ${mib(file.size)})` : `uploaded ${file.name} (raw, ${mib(file.size)}) into ${name} (qcow2)`);
  await refreshImages(name);
  await boot(name);
}

// ------------------------------------------------------------------------------------------- remote images

/** The OPFS overlay's name for a remote image: stable per URL (FNV-1a of it). */
function overlayName(url: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < url.length; i++) h = Math.imul(h ^ url.charCodeAt(i), 0x01000193) >>> 0;
  return `remote-${h.toString(16).padStart(8, "0")}.qcow2`;
}

/** Boots `url` under its OPFS overlay, made first when missing; refuses an overlay made over another version. */
async function bootRemote(url: string): Promise<void> {
  if (!host) return;
  const startedAt = performance.now();
  await closeSession();
  const name = overlayName(url);
  const probe = await probeRemoteImage(url);
  if (!(await fileExists(name))) {
    // The record first: an overlay never exists without it (a crash in between leaves only a record,
    // rewritten when the overlay is made again).
    await writeOverlayPin(name, probe.layers);
    await host.create(name, { size: probe.size, backingFile: url, backingFormat: probe.format });
    log(`made the overlay ${name} over ${url} (${probe.format}, ${mib(probe.size)}): the guest's writes stay in it`);
  } else {
    const records = await readOverlayPin(name, url);
    const refusal = records && probe.layers.map((layer) => pinRefusal(records, layer, name)).find((r) => r !== undefined);
    if (refusal) {
      ui.resetBtn.classList.add("offer");
      throw new Error(`${refusal}. Reset drops the overlay (the guest's writes) and boots the image as it is now.`);
    }
    log(`reusing the overlay ${name} over ${url}`);
  }
  await refreshImages(name);
  await boot(name, startedAt);
}

/** v86=MODE: the disk served by v86's own buffers (no refcow worker involved), on the same page and PC. */
async function bootOwn(mode: NonNullable<ReturnType<typeof parseV86OwnMode>>): Promise<void> {
  if (!firmware || !config) throw new Error("the page has not started");
  const source = mode === "xhr" ? remoteImage : params.get("file");
  if (!source) throw new Error(`v86=${mode} needs ${mode === "xhr" ? "image=URL" : "file=NAME"}`);
  const memoryMiB = Math.round(Number(ui.memInput.value)) || 128;
  terminal.clear();
  times = { start: performance.now() };
  setState("busy", `booting ${source} with v86's own ${mode} buffer (IDE, ${memoryMiB} MiB RAM)…`);
  ownMachine = await bootV86Own({
    mode,
    source,
    size: Number(params.get("size")) || undefined,
    chunkBytes: Number(params.get("chunk")) || undefined,
    memoryMiB,
    firmware,
    wasmUrl: config.files.wasm,
    screen: ui.screen,
    onSerial: serialOutput,
  });
  times.loaded = performance.now();
  setState("running", `running ${source} served by v86's own ${mode} buffer (IDE, ${memoryMiB} MiB RAM)`);
  log(`booting ${source} with v86's own ${mode} buffer`);
}

/**
 * Removes an OPFS file that may still be locked for a moment (the worker of a page just left lets go of its
 * access handle shortly after); a missing file is fine.
 */
async function removeFileRetrying(name: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await removeFile(name);
    } catch (e) {
      const why = (e as { name?: string })?.name;
      if (why === "NotFoundError") return;
      if (why !== "NoModificationAllowedError" || attempt >= 60) throw e;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** Drops the remote image's overlay (the guest's writes) and boots the image afresh. */
async function resetRemote(url: string): Promise<void> {
  await closeSession();
  await removeFileRetrying(overlayName(url));
  await removeOverlayPin(overlayName(url));
  ui.resetBtn.classList.remove("offer");
  log(`reset: the overlay over ${url} is dropped`);
  await bootRemote(url);
}

/**
 * Downloads an image without reading it into memory: a disk-backed File from OPFS behind an object URL.
 * The running machine's image is first closed cleanly and copied (it changes again once the guest resumes,
 * and a File of a changed file cannot be read).
 */
async function download(): Promise<void> {
  const name = session?.file ?? ui.imageSelect.value;
  if (!name) return;
  let from = name;
  if (session) {
    const t0 = performance.now();
    const n = await session.copyImage(DOWNLOAD_COPY);
    from = DOWNLOAD_COPY;
    log(`download: ${name} closed cleanly and copied (${mib(n)}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  const blob = await fileBlob(from);
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  // Revoked later: the browser reads the file while the download runs.
  setTimeout(() => URL.revokeObjectURL(url), 10 * 60_000);
  log(`download: ${name}, ${mib(blob.size)}`);
}

async function remove(): Promise<void> {
  const name = ui.imageSelect.value;
  if (!name || session?.file === name) return;
  if (!confirm(`Delete ${name} from the browser's storage?`)) return;
  await removeFile(name);
  log(`deleted ${name}`);
  await refreshImages();
  await offerResume();
}

// ------------------------------------------------------------------------------------------------ snapshots

async function refreshSnapshots(): Promise<SnapshotInfo[]> {
  const s = session;
  if (!s) {
    ui.snapBody.replaceChildren();
    return [];
  }
  const list = await s.snapshots();
  ui.snapBody.replaceChildren(
    ...list.map((sn) => {
      const tr = document.createElement("tr");
      const cells = [sn.id, sn.name, sn.vmStateSize ? mib(sn.vmStateSize) : "–", new Date(sn.dateSec * 1000).toLocaleTimeString()];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 2) td.className = "num";
        tr.append(td);
      });
      const td = document.createElement("td");
      const load = document.createElement("button");
      load.textContent = "loadvm";
      load.dataset.loadvm = sn.name;
      load.disabled = !sn.vmStateSize;
      load.addEventListener("click", () => void operation(`loadvm ${sn.name}`, () => loadvm(sn.name)));
      const del = document.createElement("button");
      del.textContent = "delvm";
      del.dataset.delvm = sn.name;
      del.addEventListener("click", () => void operation(`delvm ${sn.name}`, () => delvm(sn.name)));
      td.append(load, " ", del);
      tr.append(td);
      return tr;
    }),
  );
  refresh();
  return list;
}

async function savevm(): Promise<void> {
  const s = session;
  const name = ui.snapName.value.trim();
  if (!s || !name) return;
  const t0 = performance.now();
  const info = await s.savevm(name);
  log(`savevm ${info.name}: id ${info.id}, VM state ${mib(info.vmStateSize)}, in ${(performance.now() - t0).toFixed(0)} ms`);
  const m = /^(.*?)(\d+)$/.exec(name);
  ui.snapName.value = m ? `${m[1]}${Number(m[2]) + 1}` : `${name}2`;
  await refreshSnapshots();
}

async function loadvm(name: string): Promise<void> {
  const s = session;
  if (!s) return;
  const t0 = performance.now();
  await s.loadvm(name);
  log(`loadvm ${name}: disk and machine state restored in ${(performance.now() - t0).toFixed(0)} ms`);
  await refreshSnapshots();
}

async function delvm(name: string): Promise<void> {
  const s = session;
  if (!s) return;
  await s.delvm(name);
  log(`delvm ${name}`);
  await refreshSnapshots();
}

// -------------------------------------------------------------------------------------------------- startup

function lastBooted(): { file: string; diskType?: string; memoryMiB?: number } | undefined {
  try {
    const v = JSON.parse(localStorage.getItem(LAST_KEY) ?? "null") as { file?: unknown; diskType?: string; memoryMiB?: number } | null;
    return v && typeof v.file === "string" ? { file: v.file, diskType: v.diskType, memoryMiB: v.memoryMiB } : undefined;
  } catch {
    return undefined;
  }
}

/** Offers to boot the image booted last, when it is still stored. */
async function offerResume(): Promise<void> {
  const last = lastBooted();
  if (!last || !(await fileExists(last.file).catch(() => false))) {
    ui.resume.hidden = true;
    return;
  }
  const size = (await fileBlob(last.file)).size;
  ui.resumeText.textContent = `${last.file} (${mib(size)}), booted last${last.diskType ? ` from ${last.diskType === "virtio" ? "virtio-blk" : "IDE"}` : ""}: the guest's writes are in it.`;
  ui.resume.hidden = false;
}

const pageApi = {
  get state(): PageState {
    return state;
  },
  get busy(): boolean {
    return busy;
  },
  get error(): string | undefined {
    return lastError;
  },
  get file(): string | undefined {
    return session?.file;
  },
  get bootMs(): number {
    return bootMs;
  },
  /** Everything the serial console showed since the last boot. */
  serialText: () => terminal.text,
  /** The text on the VGA screen (text modes). */
  screenText: () => (ui.screen.firstElementChild as HTMLElement | null)?.innerText ?? "",
  snapshots: () => refreshSnapshots(),
  /** Page clock at the start of the last boot and when its v86 had loaded. */
  get times(): { start?: number; loaded?: number } {
    return { ...times };
  },
  /** Resolves with the page's clock (and the instruction count) when `pattern` shows on the serial console after this call. */
  waitSerial: (pattern: string): Promise<SerialSeen> =>
    new Promise<SerialSeen>((resolve) => serialWaits.push({ re: new RegExp(pattern), from: terminal.text.length, resolve })),
  /** Instructions the running machine has retired since it was built (v86's counter, extended past 32 bits). */
  instructions,
  /** Keys for the serial console, as typed. */
  sendSerial: (text: string) => sendKeys(new TextEncoder().encode(text)),
};
(globalThis as unknown as { refcowOs: typeof pageApi }).refcowOs = pageApi;

function wire(): void {
  ui.demoBtn.addEventListener("click", () => void operation("demo OS", bootDemo));
  ui.upload.addEventListener("change", () => {
    const f = ui.upload.files?.[0];
    ui.upload.value = "";
    if (f) void operation(`upload ${f.name}`, () => upload(f));
  });
  ui.bootBtn.addEventListener("click", () => void operation("boot", () => boot(ui.imageSelect.value)));
  ui.resumeBtn.addEventListener("click", () =>
    void operation("boot", async () => {
      const last = lastBooted();
      if (!last) return;
      if (last.diskType === "ide" || last.diskType === "virtio") ui.diskSelect.value = last.diskType;
      if (last.memoryMiB) ui.memInput.value = String(last.memoryMiB);
      await boot(last.file);
    }),
  );
  ui.imageSelect.addEventListener("change", refresh);
  ui.removeBtn.addEventListener("click", () => void operation("delete", remove));
  ui.downloadBtn.addEventListener("click", () => void operation("download", download));
  ui.resetBtn.addEventListener("click", () => remoteImage && void operation("reset", () => resetRemote(remoteImage!)));
  ui.closeBtn.addEventListener("click", () =>
    void operation("stop", async () => {
      const file = session?.file;
      await closeSession();
      setState("idle", `machine stopped; ${file} closed cleanly`);
      log(`machine stopped, ${file} closed`);
      await offerResume();
    }),
  );
  ui.savevmBtn.addEventListener("click", () => void operation("savevm", savevm));
  ui.snapName.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !ui.savevmBtn.disabled) void operation("savevm", savevm);
  });
  // v86's PS/2 keyboard takes keys only while the screen has the focus; the serial console has its own.
  ui.screenWrap.addEventListener("focus", () => session?.machine.emulator.keyboard_set_enabled(true));
  ui.screenWrap.addEventListener("blur", () => session?.machine.emulator.keyboard_set_enabled(false));
  ui.screenWrap.addEventListener("mousedown", () => ui.screenWrap.focus());
}

async function start(): Promise<void> {
  wire();
  // Leaving the page ends the worker at once, so that its access handle on the image does not outlive the
  // page (the next load opens the image again). Whatever the guest synced is in the file already.
  addEventListener("pagehide", () => host?.terminate());
  const disk = params.get("disk");
  if (disk === "ide" || disk === "virtio") ui.diskSelect.value = disk;
  if (params.get("mem")) ui.memInput.value = params.get("mem")!;
  if (!globalThis.crossOriginIsolated) {
    setState("error", "This page is not cross-origin isolated, so SharedArrayBuffer is unavailable: serve it with `npm run web` (COOP same-origin + COEP require-corp).");
    return;
  }
  try {
    const res = await fetch("guest/config.json");
    if (!res.ok) throw new Error(`guest/config.json: HTTP ${res.status}`);
    config = (await res.json()) as ServerConfig;
    const get = async (url: string) => {
      const r = await fetch(url);
      if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
      return r.arrayBuffer();
    };
    firmware = { bios: await get(config.files.bios), vgaBios: await get(config.files.vgaBios) };
    host = await WebImageHost.start(new URL("web-worker.js", location.href));
  } catch (e) {
    fail("starting", e);
    setState("error", `cannot start: ${lastError}`);
    return;
  }
  ui.demoInfo.textContent = config.os ? `Debian ${config.os.kernelRelease}, ${mib(config.os.virtualSize)} disk` : "(the server has no demo OS disk)";
  // A download copy left by an earlier visit.
  await removeFile(DOWNLOAD_COPY).catch(() => undefined);
  await refreshImages(lastBooted()?.file);
  await offerResume();
  setState("idle", "ready: boot the demo OS, upload a disk image, or boot a stored one");
  let ownMode: ReturnType<typeof parseV86OwnMode>;
  try {
    ownMode = parseV86OwnMode(params.get("v86"));
  } catch (e) {
    fail("v86 mode", e);
    setState("error", lastError!);
    return;
  }
  if (ownMode) {
    await operation(`v86=${ownMode}`, () => bootOwn(ownMode));
    return;
  }
  if (remoteImage) {
    ui.resetBtn.hidden = false;
    await operation(`remote image ${remoteImage}`, () => bootRemote(remoteImage));
  }
}

void start();
