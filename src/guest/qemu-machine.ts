/**
 * QemuMachine: the refcow test guest (the same kernel, initramfs and /init as under v86; guest-images/)
 * booted under `qemu-system-i386`, headless, its serial console on QEMU's stdio and its machine protocol on
 * a Unix socket (qmp-client.ts). The console speaks the same control protocol as under v86
 * (serial-console.ts: REFCOW-READY, one command line, REFCOW-DONE <code>, REFCOW-PHASE announcements).
 *
 *   const m = await QemuMachine.boot({ drive: { kind: "file", path: "t.qcow2", cache: "writeback" }, diskType: "ide", workDir });
 *   await m.check("dd if=/dev/zero of=$DISK bs=4k count=1 oflag=direct");
 *   await m.qmp.execute("blockdev-snapshot-internal-sync", { device: QEMU_DRIVE_ID, name: "s1" });
 *   await m.quit();                       // QEMU closes the image cleanly, then exits
 *
 * The machine: QEMU's `pc` (i440FX, PIIX3 IDE: the guest's ata_piix, as for v86's IDE) with -nodefaults (no
 * network card, no VGA), the disk as the primary IDE master (/dev/sda) or as a virtio-blk PCI device
 * (/dev/vda; /init loads the virtio modules when it sees vendor 0x1af4).
 *
 * The disk ("drive"): an image file on QEMU's own block driver (qcow2, with lazy refcounts or not), or an
 * NBD export (a `refcow nbd` serving the image) through QEMU's nbd driver.
 *
 * Accelerator: KVM when /dev/kvm can be opened, else TCG. A KVM that QEMU cannot run this guest on (some
 * nested set-ups fail with "KVM internal error" or refuse the CPU's MSRs) falls back to TCG, and `accel`
 * says so.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import type { CacheMode } from "../engine/types.js";
import { DEFAULT_CMDLINE, DEFAULT_MEMORY_MIB } from "./guest-runner.js";
import { guestImagePaths, type GuestImagePaths } from "./guest-image.js";
import type { GuestDiskType, RunOptions, RunResult } from "./guest-machine.js";
import { QmpClient } from "./qmp-client.js";
import { DONE_LINE, READY_LINE, SerialConsole } from "./serial-console.js";

export const QEMU_SYSTEM = "qemu-system-i386";
/** The drive's id: QMP commands name the disk by it. */
export const QEMU_DRIVE_ID = "disk0";

export type QemuDrive =
  | { kind: "file"; path: string; cache: CacheMode; lazyRefcounts?: boolean }
  /** An NBD export on a Unix socket; QEMU passes the guest's flushes on (its cache mode is the server's). */
  | { kind: "nbd"; socket: string; exportName?: string };

export type QemuAccel = "auto" | "kvm" | "tcg";

export interface QemuMachineOptions {
  drive: QemuDrive;
  diskType?: GuestDiskType;
  /** Where QEMU's QMP socket goes (a private directory). */
  workDir: string;
  image?: GuestImagePaths;
  memoryMiB?: number;
  cmdline?: string;
  accel?: QemuAccel;
  /** Time allowed to reach the command prompt, ms (default 180 s: TCG boots in about 7 s when idle). */
  bootTimeoutMs?: number;
  onConsoleLine?: (line: string) => void;
  onProgress?: (message: string) => void;
}

/** The -drive and -device arguments of the guest's disk. */
export function qemuDiskArgs(drive: QemuDrive, diskType: GuestDiskType): string[] {
  let spec: string;
  if (drive.kind === "file") {
    if (drive.path.includes(",")) throw new Error(`QEMU's -drive cannot take a file name with a comma: ${drive.path}`);
    spec = `file=${drive.path},format=qcow2,cache=${drive.cache}`;
    if (drive.lazyRefcounts !== undefined) spec += `,lazy-refcounts=${drive.lazyRefcounts ? "on" : "off"}`;
  } else {
    spec = `driver=nbd,server.type=unix,server.path=${drive.socket},export=${drive.exportName ?? ""},cache.direct=off,cache.no-flush=off`;
  }
  const device = diskType === "virtio" ? `virtio-blk-pci,drive=${QEMU_DRIVE_ID}` : `ide-hd,drive=${QEMU_DRIVE_ID},bus=ide.0,unit=0`;
  return ["-drive", `${spec},if=none,id=${QEMU_DRIVE_ID},aio=threads`, "-device", device];
}

function kvmUsable(): boolean {
  try {
    fs.accessSync("/dev/kvm", fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** What QEMU prints when KVM cannot run the guest: then TCG is tried. */
const KVM_FAILURE = /KVM internal error|failed to set MSR|kvm_init_vcpu failed|Could not access KVM kernel module|failed to initialize kvm/i;

/** Why KVM could not run the guest in this process, once seen: later boots go to TCG at once. */
let kvmFailure: string | undefined;

export class QemuMachine {
  readonly console = new SerialConsole();
  /** "kvm", "tcg", or "tcg (kvm failed: ...)". */
  accel = "";
  /** Host ms from starting QEMU to the command prompt (the last attempt's). */
  readyMs = 0;
  private proc!: ChildProcess;
  private stderr = "";
  private exited: Promise<number | null> = Promise.resolve(null);
  private exitCode: number | null | undefined;
  qmp!: QmpClient;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly o: QemuMachineOptions) {
    if (o.onConsoleLine) this.console.onLine = o.onConsoleLine;
  }

  /** Starts QEMU and resolves at the guest's command prompt. */
  static async boot(o: QemuMachineOptions): Promise<QemuMachine> {
    const want = o.accel ?? "auto";
    const kvm = want === "kvm" || (want === "auto" && kvmUsable() && kvmFailure === undefined);
    const m = new QemuMachine(o);
    if (!kvm) {
      await m.start("tcg");
      if (want === "auto" && kvmFailure) m.accel = `tcg (kvm failed: ${kvmFailure})`;
      return m;
    }
    try {
      await m.start("kvm");
      return m;
    } catch (e) {
      const why = KVM_FAILURE.exec(m.stderr)?.[0];
      await m.kill();
      if (want === "kvm" || !why) throw e;
      kvmFailure = why;
      const again = new QemuMachine(o);
      await again.start("tcg");
      again.accel = `tcg (kvm failed: ${why})`;
      return again;
    }
  }

  private async start(accel: "kvm" | "tcg"): Promise<void> {
    const o = this.o;
    const img = o.image ?? guestImagePaths();
    const qmpPath = path.join(o.workDir, `qmp-${process.pid}-${Date.now()}.sock`);
    const args = [
      "-nodefaults",
      "-no-user-config",
      "-machine",
      `pc,accel=${accel}`,
      "-m",
      String(o.memoryMiB ?? DEFAULT_MEMORY_MIB),
      "-display",
      "none",
      "-vga",
      "none",
      "-no-reboot",
      "-kernel",
      img.bzImage,
      "-initrd",
      img.initrd,
      "-append",
      o.cmdline ?? DEFAULT_CMDLINE,
      "-chardev",
      "stdio,id=console0,signal=off",
      "-serial",
      "chardev:console0",
      "-qmp",
      `unix:${qmpPath},server=on,wait=off`,
      ...qemuDiskArgs(o.drive, o.diskType ?? "ide"),
    ];
    this.accel = accel;
    this.o.onProgress?.(`[guest] booting guest (QEMU ${accel}, Debian i386 kernel, busybox initramfs)...`);
    const t0 = performance.now();
    const proc = spawn(QEMU_SYSTEM, args, { stdio: ["pipe", "pipe", "pipe"] });
    this.proc = proc;
    this.exited = new Promise((resolve) => {
      proc.on("exit", (code) => {
        this.exitCode = code;
        this.console.close(new Error(`QEMU exited (status ${code})${this.stderr ? `: ${this.stderr.trim().split("\n").slice(0, 3).join(" / ")}` : ""}`));
        resolve(code);
      });
      proc.on("error", (e) => {
        this.exitCode = null;
        this.console.close(new Error(`could not start ${QEMU_SYSTEM}: ${e.message} (install Debian's qemu-system-x86)`));
        resolve(null);
      });
    });
    proc.stdout!.on("data", (b: Buffer) => {
      for (const byte of b) this.console.push(byte);
    });
    proc.stderr!.on("data", (b: Buffer) => {
      if (this.stderr.length < 65536) this.stderr += b.toString("utf8");
      if (KVM_FAILURE.test(this.stderr)) this.console.close(new Error(`QEMU: ${KVM_FAILURE.exec(this.stderr)![0]}`));
    });
    proc.stdin!.on("error", () => undefined);
    const timeout = o.bootTimeoutMs ?? 180_000;
    await this.console.waitFor(READY_LINE, 0, timeout);
    this.qmp = await QmpClient.connect(qmpPath, 30_000);
    fs.rmSync(qmpPath, { force: true });
    this.readyMs = performance.now() - t0;
    this.o.onProgress?.(`[guest] booted to the command prompt in ${(this.readyMs / 1000).toFixed(2)} s (QEMU ${this.qmp.version}, ${accel})`);
  }

  /** Sends raw text to the guest's serial console. */
  send(text: string): void {
    this.proc.stdin!.write(text);
  }

  /** Runs one shell command line in the guest (one at a time, in call order). */
  run(command: string, options: RunOptions = {}): Promise<RunResult> {
    if (command.includes("\n")) return Promise.reject(new Error("one command line, without newlines"));
    const p = this.queue.then(() => this.runNow(command, options));
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Runs `command` and throws when it exits non-zero. Returns its output. */
  async check(command: string, options: RunOptions = {}): Promise<string> {
    const r = await this.run(command, options);
    if (r.exitCode !== 0) throw new Error(`guest command failed (exit ${r.exitCode}): ${command}\n${r.output}`);
    return r.output;
  }

  private async runNow(command: string, options: RunOptions): Promise<RunResult> {
    const from = this.console.position;
    const t = performance.now();
    this.send(command + "\n");
    const m = await this.console.waitFor(DONE_LINE, from, options.timeoutMs ?? 60_000);
    const end = m.match[0].startsWith("\n") ? m.start + 1 : m.start;
    return { exitCode: Number(m.match[1]), output: this.console.textBetween(from, end).replace(/\r/g, ""), ms: performance.now() - t };
  }

  /**
   * Asks QEMU to quit over QMP (it drains and closes the disk cleanly) and waits for it to exit; kills it
   * when it has not exited within `timeoutMs`. Resolves with its exit status.
   */
  async quit(timeoutMs = 60_000): Promise<number | null> {
    if (this.exitCode !== undefined) return this.exitCode;
    try {
      await this.qmp?.execute("quit");
    } catch {
      /* the connection closes as QEMU exits */
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const code = await Promise.race([this.exited, new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), timeoutMs)))]);
    clearTimeout(timer);
    this.qmp?.close();
    if (code === "timeout") {
      await this.kill();
      throw new Error(`QEMU did not exit within ${timeoutMs} ms of 'quit'`);
    }
    return code;
  }

  /** Ends QEMU at once (the image may be left dirty: for failures only). */
  async kill(): Promise<void> {
    this.qmp?.close();
    if (this.exitCode === undefined && this.proc) {
      this.proc.kill("SIGKILL");
      await this.exited;
    }
  }
}
