/**
 * One run of the demo OS benchmark (boot-os.ts), in the process that calls it: a v86 PC boots the demo OS
 * (`refcow os-image`) from its disk to the shell prompt, then the guest copies 64 MiB with O_DIRECT onto
 * the disk past its partitions and reads them back (busybox dd, iflag/oflag=direct), and the process's peak
 * RSS is read.
 *
 * Sources of the disk, everything else the same (v86 build, firmware, RAM, no kernel handed to v86):
 *   refcow-ide      the qcow2 image served by refcow from a worker thread (BootSession, as `refcow boot`),
 *                   v86's IDE primary master
 *   refcow-ide-uncached  the same with the IDE drive's caches off (no write cache: every write waits for the
 *                   engine; no read-ahead; as in `refcow run`): what the caches change, in the same run
 *   refcow-virtio   the same through refcow's virtio-blk device
 *   refcow-virtio-uncached  the same with virtio-blk's caches off
 *   v86-buffer      the raw image read into an ArrayBuffer that v86 serves itself (`hda: { buffer }`), IDE
 *   v86-file        the raw image as v86's own async file buffer (`hda: { url, async: true }`: in Node it
 *                   reads ranges with fs/promises; writes stay in its memory), IDE
 *
 * Clocks: host wall time (performance.now) from v86 having loaded (its CPU starts: `emulator-loaded`) to the
 * prompt on the serial console — the host's preparation before that (opening the image in its worker, or
 * reading it into the ArrayBuffer; v86 compiling its wasm) is reported apart — and from typing a dd command
 * to the marker the shell echoes after it; v86's instruction counter
 * beside each (a 32-bit counter: it is sampled often enough that it cannot wrap twice between samples), and
 * the process's CPU time (all threads: v86's and refcow's worker), which the host's load moves less;
 * and the guest's uptime around each dd (its own clock) as a cross-check of the host's.
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync } from "node:fs";
import type { V86 } from "v86";
import { SerialConsole } from "../guest/serial-console.js";
import { BootSession } from "../v86/boot-session.js";
import { chooseWasmTiering, wasmTieringLoaded, type WasmTiering } from "../v86/wasm-tiering.js";
import type { DiskDevice } from "../v86/disk-device.js";
import { EmulatorClock, type EmulatorTime } from "../v86/emulator-clock.js";
import { DiskBootMachine } from "../v86/disk-boot-machine.js";
import { v86OwnDisk, type V86OwnHda } from "../v86/v86-own-disk.js";

export const OS_BENCH_SOURCES = ["refcow-ide", "refcow-ide-uncached", "refcow-virtio", "refcow-virtio-uncached", "v86-buffer", "v86-file"] as const;
export type OsBenchSource = (typeof OS_BENCH_SOURCES)[number];

export interface OsBenchRunOptions {
  source: OsBenchSource;
  /** qcow2 for the refcow sources, raw for v86's. */
  image: string;
  memoryMiB: number;
  firmware: { bios: ArrayBuffer; vgaBios: ArrayBuffer };
  wasmPath: string;
  /** Where the copy goes on the disk, in MiB (past the partitions). */
  ddOffsetMiB: number;
  ddMiB: number;
  onProgress?: (message: string) => void;
}

/**
 * A timed step: host ms, the process's CPU ms (user + system, all threads; absent from the browser's runs),
 * and guest instructions.
 */
export interface TimedStep {
  ms: number;
  cpuMs?: number;
  instructions?: number;
  /** The dd steps: the emulator thread's time by category (EmulatorClock). */
  emulatorTime?: EmulatorTime;
}

export interface OsBenchRun {
  source: OsBenchSource;
  image: string;
  /** Start of the run → v86 loaded (image opened or read, emulator built), ms. */
  prepMs: number;
  /** v86 loaded → the shell prompt. */
  boot: TimedStep;
  write: TimedStep & { guestSeconds?: number; bytes?: number };
  read: TimedStep & { guestSeconds?: number; bytes?: number };
  /** VmHWM of the process at the end of the run, bytes (absent from the browser's runs). */
  peakRssBytes?: number;
  /** How the process compiled WebAssembly (wasm-tiering.ts; absent from the browser's runs). */
  wasm?: WasmTiering;
}

/** The demo OS's prompt (guest-images/os/profile). */
export const PROMPT = /refcow:[^\n]*# /;
const BOOT_TIMEOUT_MS = 600_000;
const DD_TIMEOUT_MS = 600_000;

export async function runOsBench(o: OsBenchRunOptions): Promise<OsBenchRun> {
  // Every source alike, before v86 compiles anything.
  const wasm = chooseWasmTiering();
  const os = await bootOsToPrompt(o.source, (onSerial) => startMachine(o, onSerial), o.onProgress);
  const { machine, serial, counter } = os;
  let clock: EmulatorClock | undefined;
  try {
    const commands = ddCommands(o.source.startsWith("refcow-virtio") ? "/dev/vda" : "/dev/sda", o.ddOffsetMiB, o.ddMiB);
    let at = os.promptEnd;
    // Installed at the prompt: the boot runs uninstrumented.
    clock = new EmulatorClock(machine.emulator, os.device);
    const step = async (name: string, command: string) => {
      const typed = ddStepLine(name, command, o.ddMiB);
      const startInstr = counter.total();
      const startCpu = process.cpuUsage();
      const start = performance.now();
      clock!.take();
      machine.sendSerial(new TextEncoder().encode(typed.line));
      const m = await serial.waitFor(typed.marker, at, DD_TIMEOUT_MS);
      const ms = performance.now() - start;
      const emulatorTime = clock!.take();
      const cpu = cpuMs(process.cpuUsage(startCpu));
      const instructions = counter.total() - startInstr;
      const text = serial.textBetween(at, m.start);
      at = (await serial.waitFor(PROMPT, m.end, 60_000)).end;
      return { ms, cpuMs: cpu, instructions, emulatorTime, ...parseDdReport(text, name) };
    };
    const write = await step("W", commands.write);
    o.onProgress?.(`  ${o.source}: wrote ${o.ddMiB} MiB in ${(write.ms / 1000).toFixed(2)} s`);
    const read = await step("R", commands.read);
    o.onProgress?.(`  ${o.source}: read ${o.ddMiB} MiB in ${(read.ms / 1000).toFixed(2)} s`);
    await machine.stop();
    return { source: o.source, image: o.image, prepMs: os.prepMs, boot: os.boot, write, read, peakRssBytes: peakRss(), wasm };
  } finally {
    clock?.uninstall();
    await os.close();
  }
}

async function startMachine(o: OsBenchRunOptions, onSerial: (bytes: Uint8Array) => void): Promise<StartedMachine> {
  if (o.source.startsWith("refcow-")) {
    const diskType = o.source.startsWith("refcow-virtio") ? "virtio" : "ide";
    return startRefcowMachine({ ...o, diskType, writeCache: !o.source.endsWith("-uncached"), onProgress: undefined }, onSerial);
  }
  const hda = o.source === "v86-buffer" ? { buffer: readWholeFile(o.image) } : { url: o.image, async: true, size: fstatSize(o.image) };
  return startV86OwnMachine(hda, o, onSerial);
}

/** What the benchmarks' machines share: the v86 build and firmware, and the guest RAM. */
export interface BenchMachineSettings {
  memoryMiB: number;
  firmware: { bios: ArrayBuffer; vgaBios: ArrayBuffer };
  wasmPath: string;
}

/** The image served by refcow (BootSession, as `refcow boot`, eager, writeback), optionally under a kept overlay. */
export async function startRefcowMachine(
  o: BenchMachineSettings & { image: string; overlay?: string; diskType: "ide" | "virtio"; writeCache?: boolean; onProgress?: (message: string) => void },
  onSerial: (bytes: Uint8Array) => void,
): Promise<StartedMachine> {
  const session = await BootSession.open({
    image: o.image,
    overlay: o.overlay,
    diskType: o.diskType,
    writeCache: o.writeCache,
    cache: "writeback",
    scheme: "eager",
    memoryMiB: o.memoryMiB,
    firmware: o.firmware,
    wasmPath: o.wasmPath,
    onSerial,
    onProgress: o.onProgress,
  });
  return { machine: session.machine, device: session.device, close: () => session.close() };
}

/** v86 serving its disk itself, from `hda` (IDE). */
export function startV86OwnMachine(hda: V86OwnHda, o: BenchMachineSettings, onSerial: (bytes: Uint8Array) => void): Promise<StartedMachine> {
  const machine = new DiskBootMachine({ disk: v86OwnDisk(hda), firmware: o.firmware, wasmPath: o.wasmPath, memoryMiB: o.memoryMiB, onSerial });
  return Promise.resolve({ machine, close: () => machine.destroy() });
}

/** A machine built on its disk, not yet necessarily loaded, and how to end it. */
export interface StartedMachine {
  machine: DiskBootMachine;
  /** refcow's disk device (for the emulator clock); absent when v86 serves the disk itself. */
  device?: DiskDevice;
  close(): Promise<void>;
}

/** A machine at its shell prompt: the serial console read so far, its counters, and the boot's figures. */
export interface OsAtPrompt extends StartedMachine {
  serial: SerialConsole;
  counter: InstructionCounter;
  /** Start → v86 loaded (disk opened, emulator built), ms. */
  prepMs: number;
  /** v86 loaded → the prompt. */
  boot: TimedStep;
  /** Where the prompt ends in the console's text. */
  promptEnd: number;
}

/**
 * Starts a machine with `start` (given the console's byte sink) and waits for the demo OS's prompt; see the
 * top for the clocks. `close` of the result stops the counter and ends the machine; on failure it is done here.
 */
export async function bootOsToPrompt(label: string, start: (onSerial: (bytes: Uint8Array) => void) => Promise<StartedMachine>, onProgress?: (message: string) => void): Promise<OsAtPrompt> {
  const serial = new SerialConsole();
  const t0 = performance.now();
  const started = await start((bytes) => {
    for (const b of bytes) serial.push(b);
  });
  const counter = new InstructionCounter(started.machine.emulator);
  const close = async () => {
    counter.stop();
    await started.close();
  };
  try {
    await started.machine.loaded;
    wasmTieringLoaded();
    const loadedAt = performance.now();
    const cpuAtLoad = process.cpuUsage();
    const prompt = await serial.waitFor(PROMPT, 0, BOOT_TIMEOUT_MS);
    const boot = { ms: performance.now() - loadedAt, cpuMs: cpuMs(process.cpuUsage(cpuAtLoad)), instructions: counter.total() };
    onProgress?.(`  ${label}: shell prompt after ${(boot.ms / 1000).toFixed(1)} s`);
    return { machine: started.machine, device: started.device, close, serial, counter, prepMs: loadedAt - t0, boot, promptEnd: prompt.end };
  } catch (e) {
    await close();
    throw e;
  }
}

/** The two copies, on the disk past its partitions: written first (one FLUSH CACHE at the end), then read back. */
export function ddCommands(device: string, offsetMiB: number, mib: number): { write: string; read: string } {
  const geometry = `bs=1M count=${mib}`;
  return {
    write: `dd if=/dev/zero of=${device} ${geometry} seek=${offsetMiB} oflag=direct conv=fsync`,
    read: `dd if=${device} of=/dev/null ${geometry} skip=${offsetMiB} iflag=direct`,
  };
}

/**
 * The line typed for a timed step (`command` between two readings of /proc/uptime: the guest's own clock,
 * 10 ms steps, as a cross-check of the host's) and the marker the shell prints after it. The marker is
 * computed by the shell, so the echo of the typed line does not match it.
 */
export function ddStepLine(name: string, command: string, mib: number): { line: string; marker: RegExp } {
  const uptime = "$(cut -d' ' -f1 /proc/uptime)";
  return {
    line: `U0=${uptime}; ${command}; U1=${uptime}; echo GUEST-UPTIME $U0 $U1; echo ${name}-$((${mib}))-END\r`,
    marker: new RegExp(`\\n${name}-${mib}-END\\r?\\n`),
  };
}

/**
 * What the guest said of a dd: the records it copied (busybox dd's "N+0 records out") and the seconds of
 * its uptime around it ("GUEST-UPTIME U0 U1"). A dd error is an error.
 */
export function parseDdReport(text: string, what: string): { guestSeconds?: number; bytes?: number } {
  if (/dd: /.test(text)) throw new Error(`dd (${what}) failed in the guest:\n${text.slice(-800)}`);
  const records = /(\d+)\+0 records out/.exec(text);
  const uptime = /GUEST-UPTIME ([0-9.]+) ([0-9.]+)/.exec(text);
  return {
    bytes: records ? Number(records[1]) * 2 ** 20 : undefined,
    guestSeconds: uptime ? Number(uptime[2]) - Number(uptime[1]) : undefined,
  };
}

const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

/** The process's peak resident set (VmHWM of /proc/self/status), or resourceUsage's maxRSS without it. */
export function peakRss(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync("/proc/self/status", "utf8"));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS * 1024;
}

function fstatSize(file: string): number {
  const fd = openSync(file, "r");
  try {
    return fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
}

/** The whole file in an ArrayBuffer of its own (readFileSync's Buffer stops at 2 GiB). */
function readWholeFile(file: string): ArrayBuffer {
  const fd = openSync(file, "r");
  try {
    const size = fstatSync(fd).size;
    const buffer = new ArrayBuffer(size);
    const view = new Uint8Array(buffer);
    for (let pos = 0; pos < size; ) {
      const n = readSync(fd, view, pos, Math.min(64 << 20, size - pos), pos);
      if (n === 0) throw new Error(`${file}: unexpected end of file at ${pos}`);
      pos += n;
    }
    return buffer;
  } finally {
    closeSync(fd);
  }
}

/**
 * v86's instruction counter (32 bits, wrapping) extended to a running total: sampled every 100 ms, and at
 * each reading; v86 retires well under 2^32 instructions in 100 ms.
 */
export class InstructionCounter {
  private last = 0;
  private sum = 0;
  private readonly timer: ReturnType<typeof setInterval>;

  constructor(private readonly emulator: V86) {
    this.timer = setInterval(() => this.total(), 100);
  }

  total(): number {
    const now = this.emulator.get_instruction_counter() >>> 0;
    this.sum += (now - this.last) >>> 0;
    this.last = now;
    return this.sum;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
