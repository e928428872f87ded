/**
 * refcow boot — boots the OS installed on IMAGE (qcow2 or raw) in v86, the image served by refcow from a
 * worker thread, with the machine's serial console on the terminal, as `qemu-system-i386 -nographic` does:
 * the terminal in raw mode (keys to the guest, its output to stdout; stdin may be a pipe), Ctrl-A escapes
 * (escape-keys.ts) and a monitor (monitor.ts) with savevm / loadvm / delvm / info / stop / cont / quit.
 *
 * Ends: the guest powers off (exit 0); Ctrl-A x, the monitor's quit, SIGTERM, SIGHUP or SIGINT (exit 0, as
 * QEMU); SeaBIOS finds nothing to boot (exit 1). Every end stops the CPU, waits for the disk's requests,
 * and closes the image cleanly ('qemu-img check' passes).
 */
import { existsSync, readFileSync } from "node:fs";
import { type ImageOpenOptions, isHttpUrl } from "../engine.js";
import { hasFlag, lastValue, parseArgs } from "../args.js";
import type { CliIo } from "../command.js";
import { CliError, messageOf, UsageError } from "../errors.js";
import { sizeToStr } from "../human-size.js";
import { parseCacheMode } from "../open.js";
import { snapshotHeader, snapshotRow } from "../snapshot-output.js";
import { SCHEME_NAMES } from "../../schemes/index.js";
import { applyNoReflink, NO_REFLINK_LONG, SCHEME_OPT_LONG, schemeChoice } from "./common.js";
import { BootSession, type BlockInfo } from "../../v86/boot-session.js";
import { ESCAPE_HELP, EscapeParser } from "../../v86/escape-keys.js";
import { ensureGuestImage, v86WasmPath } from "../../guest/guest-image.js";
import { Monitor } from "../../v86/monitor.js";
import { BOOT_USAGE, BOOT_HELP } from "./boot-help.js";

const LONG = [
  { name: "help", arg: false, key: "h" },
  { name: "disk", arg: true },
  { name: "cache", arg: true, key: "t" },
  { name: "scheme", arg: true },
  SCHEME_OPT_LONG,
  NO_REFLINK_LONG,
  { name: "memory", arg: true, key: "m" },
  { name: "snapshot", arg: false },
  { name: "overlay", arg: true },
  { name: "loadvm", arg: true },
];

export interface BootOptions {
  image: string;
  disk: "ide" | "virtio";
  cache: ReturnType<typeof parseCacheMode>;
  scheme: string;
  schemeOptions?: ImageOpenOptions["schemeOptions"];
  memoryMiB: number;
  snapshot: boolean;
  overlay?: string;
  loadvm?: string;
  /** --no-reflink: copy every COW (REFCOW_REFLINK=0 for the worker that opens the image). */
  noReflink: boolean;
}

/** The options of `refcow boot` (QEMU's single-dash -snapshot is taken as --snapshot). */
export function parseBootArgs(argv: string[]): BootOptions | "help" {
  const parsed = parseArgs(
    argv.map((a) => (a === "-snapshot" ? "--snapshot" : a)),
    { short: "ht:m:", long: LONG },
  );
  if (hasFlag(parsed, "h")) return "help";
  if (parsed.operands.length !== 1) throw new UsageError("Expecting one image file name");
  const disk = lastValue(parsed, "disk") ?? "ide";
  if (disk !== "ide" && disk !== "virtio") throw new UsageError(`--disk must be ide or virtio, got '${disk}'`);
  const scheme = lastValue(parsed, "scheme") ?? "eager";
  if (!SCHEME_NAMES.includes(scheme)) throw new UsageError(`unknown refcount scheme '${scheme}' (available: ${SCHEME_NAMES.join(", ")})`);
  const { schemeOptions } = schemeChoice(parsed);
  const memArg = lastValue(parsed, "m") ?? "128";
  const memoryMiB = Number(memArg);
  if (!/^\d+$/.test(memArg) || memoryMiB < 16 || memoryMiB > 3072) throw new UsageError(`-m takes the guest RAM in MiB, 16 to 3072; got '${memArg}'`);
  const cacheArg = lastValue(parsed, "t");
  return {
    image: parsed.operands[0]!,
    disk,
    cache: cacheArg === undefined ? "writeback" : parseCacheMode(cacheArg),
    scheme,
    schemeOptions,
    memoryMiB,
    snapshot: hasFlag(parsed, "snapshot"),
    overlay: lastValue(parsed, "overlay"),
    loadvm: lastValue(parsed, "loadvm"),
    noReflink: hasFlag(parsed, "no-reflink"),
  };
}

/** `info block`, in QEMU's layout. */
export function formatBlockInfo(b: BlockInfo): string {
  let out = `${b.device}: ${b.file} (${b.format})\n`;
  out += `    Cache mode:       ${b.cache}\n`;
  if (b.backingFile) out += `    Backing file:     ${b.backingFile} (chain depth: 1)\n`;
  out += `    Refcount scheme:  ${b.scheme}\n`;
  out += `    Virtual size:     ${sizeToStr(b.size)} (${b.size} bytes)\n`;
  return out;
}

/** Writes to a stream that may be gone (a closed terminal): errors are dropped, the close goes on. */
function safeWriter(stream: NodeJS.WriteStream): (data: string | Uint8Array) => void {
  let broken = false;
  stream.on("error", () => {
    broken = true;
  });
  return (data) => {
    if (broken) return;
    try {
      stream.write(data);
    } catch {
      broken = true;
    }
  };
}

function readBuffer(file: string): ArrayBuffer {
  const b = readFileSync(file);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

export async function bootCommand(argv: string[], io?: CliIo): Promise<number> {
  const opts = parseBootArgs(argv);
  if (opts === "help") {
    (io?.out ?? ((t: string) => process.stdout.write(t)))(`usage: refcow ${BOOT_USAGE}\n${BOOT_HELP}`);
    return 0;
  }
  const out = safeWriter(process.stdout);
  const err = safeWriter(process.stderr);
  const stdin = process.stdin;
  const raw = Boolean(stdin.isTTY);
  // Lines end in "\n" alone, even with the terminal raw: Node's raw mode leaves the terminal's output
  // processing (ONLCR) on.
  const note = (message: string) => err(`refcow: ${message}\n`);

  if (!isHttpUrl(opts.image) && !existsSync(opts.image)) throw new CliError(`boot: Could not open '${opts.image}': No such file or directory`);
  let firmware: { bios: ArrayBuffer; vgaBios: ArrayBuffer };
  try {
    // Its progress only when it builds something.
    const guest = await ensureGuestImage({ onProgress: (m) => /up to date/.test(m) || note(m) });
    firmware = { bios: readBuffer(guest.bios), vgaBios: readBuffer(guest.vgaBios) };
  } catch (e) {
    throw new CliError(`boot: the firmware (SeaBIOS, built by guest-images/build.sh) is missing: ${messageOf(e).split("\n")[0]}`);
  }

  let finish!: (code: number, message?: string) => void;
  const finished = new Promise<{ code: number; message?: string }>((resolve) => {
    let done = false;
    finish = (code, message) => {
      if (done) return;
      done = true;
      resolve({ code, message });
    };
  });

  // The image is opened in a worker thread, which inherits it.
  applyNoReflink(opts.noReflink);
  note(`opening ${opts.image}${opts.snapshot ? " (-snapshot)" : ""}: scheme ${opts.scheme}, cache ${opts.cache}...`);
  let session: BootSession;
  try {
    session = await BootSession.open({
      image: opts.image,
      diskType: opts.disk,
      cache: opts.cache,
      scheme: opts.scheme,
      schemeOptions: opts.schemeOptions,
      memoryMiB: opts.memoryMiB,
      snapshotMode: opts.snapshot,
      overlay: opts.overlay,
      loadvm: opts.loadvm,
      firmware,
      wasmPath: v86WasmPath(),
      onProgress: note,
      onSerial: (bytes) => out(bytes),
      onBiosLine: (line) => out(`${line}\n`),
      onNoBootableDevice: () => finish(1, `boot: no bootable device: the BIOS found nothing to boot on ${opts.image}`),
      onPowerOff: () => finish(0),
    });
  } catch (e) {
    throw new CliError(`boot: ${messageOf(e)}`);
  }
  const b = session.block;
  // As QEMU reports (werror=report): the guest sees the failed request; the user is told which and why.
  session.device.onError = (err, op, offset, length) =>
    note(`block I/O error in device '${b.device}': ${op}${op === "flush" ? "" : ` of ${length} bytes at offset ${offset}`}: ${err.message}`);
  note(
    `${opts.loadvm !== undefined ? "resuming" : "booting"} ${opts.image} (${b.format}, ${sizeToStr(b.size)}) on its ${opts.disk === "virtio" ? "virtio-blk" : "IDE"} disk, ` +
      `${opts.memoryMiB} MiB RAM; Ctrl-A h: help, Ctrl-A x: quit`,
  );

  const monitor = new Monitor({
    write: (text) => out(text),
    formatSnapshots: (list) => `${snapshotHeader()}\n${list.map((s) => snapshotRow({ ...s, id: "--" })).join("\n")}\n`,
    target: {
      savevm: (name) => session.savevm(name),
      loadvm: (name) => session.loadvm(name),
      delvm: (name) => session.delvm(name),
      snapshots: () => session.snapshots(),
      blockInfo: () => formatBlockInfo(session.block),
      get stopped() {
        return session.machine.stopped;
      },
      stop: () => session.machine.stop(),
      cont: () => session.machine.cont(),
      quit: () => finish(0),
    },
  });
  const escapes = new EscapeParser();
  let syncing: Promise<void> = Promise.resolve();
  let inMonitor = false;
  const onInput = (chunk: Buffer) => {
    for (const ev of escapes.feed(chunk)) {
      if (ev.type === "data") {
        if (inMonitor) monitor.input(ev.bytes);
        else session.machine.sendSerial(ev.bytes);
        continue;
      }
      switch (ev.command) {
        case "quit":
          finish(0, "Terminated");
          break;
        case "switch":
          inMonitor = !inMonitor;
          out("\n");
          if (inMonitor) monitor.enter();
          break;
        case "help":
          out("\n" + ESCAPE_HELP);
          break;
        case "sync":
          // One at a time: a second Ctrl-A s during a commit waits for it.
          syncing = syncing.then(async () => {
            try {
              const bytes = await session.commit();
              if (opts.snapshot) note(`committed ${sizeToStr(bytes)} of the temporary overlay into ${opts.image}`);
            } catch (e) {
              note(`commit failed: ${messageOf(e)}`);
            }
          });
          break;
      }
    }
  };
  const signals: NodeJS.Signals[] = ["SIGTERM", "SIGHUP", "SIGINT"];
  const onSignal = (sig: NodeJS.Signals) => finish(0, `terminating on signal ${sig}`);
  for (const s of signals) process.on(s, onSignal);

  if (raw) stdin.setRawMode(true);
  stdin.on("data", onInput);
  stdin.resume();

  const { code, message } = await finished;
  await syncing;
  stdin.removeListener("data", onInput);
  stdin.pause();
  if (raw) {
    try {
      stdin.setRawMode(false);
    } catch {
      // the terminal is gone (SIGHUP)
    }
  }
  err("\n");
  if (message) note(message);
  let closeError: unknown;
  try {
    await session.close();
  } catch (e) {
    closeError = e;
  } finally {
    for (const s of signals) process.removeListener(s, onSignal);
  }
  if (closeError) throw new CliError(`boot: closing ${opts.image}: ${messageOf(closeError)}`);
  return code;
}
