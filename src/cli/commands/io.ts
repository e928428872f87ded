/**
 * refcow io — qemu-io: `refcow io -c 'write -P 0xaa 0 64k' -c 'read -P 0xaa 0 64k' disk.qcow2`.
 * Without -c, commands are read from stdin with qemu-io's "qemu-io> " prompt. The exit status is 1 when any
 * command failed (as qemu-io 7.2), a read -P pattern mismatch included.
 */
import * as readline from "node:readline";
import { allValues, hasFlag, lastValue } from "../args.js";
import type { CliIo } from "../command.js";
import { type AllocPolicyName, type CacheMode, Qcow2Image, type SchemeOptionValues } from "../engine.js";
import type { CostBreakdown, ImageOpenOptions } from "../../engine/types.js";
import { closeAllWorkers, openServedImage } from "../../worker/index.js";
import { CliError, UsageError } from "../errors.js";
import { qcow2SpecificHuman } from "../info-output.js";
import { AioRequests } from "../io/aio-requests.js";
import type { IoContext, IoFileOptions, IoFiles, IoTarget } from "../io/context.js";
import { runIoCommand } from "../io/table.js";
import { type Disk, formatForOpen, openImage, parseAllocPolicy, parseCacheMode, probedRawWarning } from "../open.js";
import { OverlayFile } from "../overlay-file.js";
import { statsTable } from "../stats-output.js";
import { ALLOC_LONG, closing, HELP_LONG, ioOf, NO_REFLINK_LONG, parseCommandArgs, SCHEME_LONG, SCHEME_OPT_LONG, schemeChoice } from "./common.js";
import { qcow2Specific } from "./info.js";

/** qemu-io's open: the open options (ImageOpenOptions) and its own. */
export interface IoOpenOptions extends Omit<ImageOpenOptions, "order"> {
  format?: "qcow2" | "raw";
  readOnly: boolean;
  cache: CacheMode;
  /** qemu-io -s: writes go to a private in-memory view and are dropped at exit. */
  snapshot: boolean;
  /** --in-process: serve the image in this thread even when a worker could serve it. */
  inProcess: boolean;
}

export interface OpenedIoTarget {
  target: IoTarget;
  /** Cost breakdown since open, when the engine keeps one. */
  stats?: () => ReturnType<Qcow2Image["stats"]>;
  /** Text for stderr (QEMU's probed-raw warning), if any. */
  warning?: string;
  close(): void | Promise<void>;
}

/** Adapts an engine disk (qcow2 or raw, opened in this thread) to the qemu-io command set. */
export function diskTarget(disk: Disk, readOnly: boolean): IoTarget {
  return {
    get size() {
      return disk.size;
    },
    readOnly,
    read: (offset, length) => {
      const buf = new Uint8Array(length);
      disk.readInto(buf, offset);
      return buf;
    },
    write: (offset, data) => disk.write(offset, data),
    writeZeroes: (offset, length, opts) => disk.writeZeroes(offset, length, opts),
    discard: (offset, length) => disk.discard(offset, length),
    flush: () => disk.flush(),
    allocation: (offset, length) => disk.allocation(offset, length),
    resize: (size) => disk.resize(size),
    ...(disk instanceof Qcow2Image
      ? {
          readVmState: (pos: number, length: number) => {
            const buf = new Uint8Array(length);
            disk.readVmStateArea(buf, pos);
            return buf;
          },
          writeVmState: (pos: number, data: Uint8Array) => disk.writeVmStateArea(pos, data),
        }
      : {}),
    describe: () => {
      if (!(disk instanceof Qcow2Image)) return { formatName: "raw", clusterSize: 0, vmStateOffset: 0 };
      const info = disk.info();
      return {
        formatName: "qcow2",
        clusterSize: info.clusterSize,
        vmStateOffset: vmStateOffset(info.virtualSize, info.clusterSize, info.extendedL2),
        specific: qcow2SpecificHuman(qcow2Specific(info)),
      };
    },
  };
}

/** QEMU's vm_state_offset: the disk size rounded up to what one L1 entry maps. */
function vmStateOffset(size: number, clusterSize: number, extendedL2: boolean): number {
  const perL1 = clusterSize * (clusterSize / (extendedL2 ? 16 : 8));
  return Math.ceil(size / perL1) * perL1;
}

/**
 * Opens the image `io` runs its commands against: served by a worker thread through the request ring by
 * default, in this thread with --in-process (or -s).
 */
export async function openForIo(path: string, opts: IoOpenOptions): Promise<OpenedIoTarget> {
  // Served from a worker thread through the request ring, unless asked otherwise (or -s, whose private
  // in-memory view lives in this thread).
  if (!opts.inProcess && !opts.snapshot) return openServedForIo(path, opts);
  const opened = openImage({
    path,
    format: opts.format,
    readOnly: opts.readOnly || opts.snapshot,
    cache: opts.cache,
    scheme: opts.scheme,
    schemeOptions: opts.schemeOptions,
    alloc: opts.alloc,
    noReflink: opts.noReflink,
    wrapFile: opts.snapshot ? (f) => new OverlayFile(f) : undefined,
  });
  const disk = opened.disk;
  return {
    target: diskTarget(disk, opts.readOnly),
    stats: disk instanceof Qcow2Image ? () => disk.stats() : undefined,
    warning: probedRawWarning(opened, opts.readOnly || opts.snapshot),
    close: () => disk.close(),
  };
}

/**
 * Opens the image read-only in this thread. An image a crashed process left needing recovery that only a
 * writable open does (a refcow journal to replay) is opened writable once here, under the scheme asked
 * for, as the worker would have opened it, and closed cleanly; then probed.
 */
function probeForServing(path: string, opts: IoOpenOptions): ReturnType<typeof openImage> {
  const open = (readOnly: boolean) => openImage({ path, format: opts.format, readOnly, cache: opts.cache, scheme: readOnly ? undefined : opts.scheme, schemeOptions: readOnly ? undefined : opts.schemeOptions, alloc: opts.alloc, noReflink: opts.noReflink });
  try {
    return open(true);
  } catch (e) {
    if (opts.readOnly) throw e;
    let recovered;
    try {
      recovered = open(false);
    } catch {
      throw e;
    }
    recovered.disk.close();
    return open(true);
  }
}

async function openServedForIo(path: string, opts: IoOpenOptions): Promise<OpenedIoTarget> {
  // Probe in this thread first (read-only): the same open errors and warning as in-process, and `info`.
  const probe = probeForServing(path, opts);
  const warning = probedRawWarning(probe, opts.readOnly);
  const description = diskTarget(probe.disk, true).describe();
  const extendedL2 = probe.disk instanceof Qcow2Image && probe.disk.extendedL2;
  const format = probe.disk instanceof Qcow2Image ? "qcow2" : "raw";
  probe.disk.close();
  const client = await openServedImage(path, { scheme: opts.scheme, schemeOptions: opts.schemeOptions, alloc: opts.alloc, noReflink: opts.noReflink, cache: opts.cache, readOnly: opts.readOnly, format });
  let lastStats: CostBreakdown | undefined;
  return {
    target: {
      get size() {
        return client.size;
      },
      readOnly: opts.readOnly,
      read: (offset, length) => client.read(offset, length),
      write: (offset, data) => client.write(offset, data),
      writeZeroes: (offset, length, o) => client.writeZeroes(offset, length, o),
      discard: (offset, length) => client.discard(offset, length),
      flush: () => client.flush(),
      allocation: (offset, length) => client.allocation(offset, length),
      resize: (size) => client.resize(size),
      ...(format === "qcow2"
        ? {
            readVmState: (pos: number, length: number) => client.readVmStateArea(pos, length),
            writeVmState: (pos: number, data: Uint8Array) => client.writeVmStateArea(pos, data),
          }
        : {}),
      inFlight: () => client.pendingRequests,
      // The format's fields do not change in a session; the VM-state offset follows the size (truncate).
      describe: () =>
        format === "qcow2" ? { ...description, vmStateOffset: vmStateOffset(client.size, description.clusterSize, extendedL2) } : description,
    },
    // The worker's counters as of just before close (the write-back at close is not in them).
    stats: format === "qcow2" ? () => lastStats ?? {} : undefined,
    warning,
    close: async () => {
      try {
        if (format === "qcow2") lastStats = (await client.stats()) as CostBreakdown;
        await client.close();
      } finally {
        await closeAllWorkers();
      }
    },
  };
}

async function* stdinLines(): AsyncGenerator<string> {
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
  try {
    for await (const line of rl) yield line;
  } finally {
    rl.close();
  }
}

export async function ioCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const parsed = parseCommandArgs(
    "io",
    argv,
    {
      short: "hVc:d:f:rsnCmkt:T:Ui:",
      long: [
        HELP_LONG,
        SCHEME_LONG,
        SCHEME_OPT_LONG,
        ALLOC_LONG,
        NO_REFLINK_LONG,
        { name: "cmd", arg: true, key: "c" },
        { name: "format", arg: true, key: "f" },
        { name: "read-only", arg: false, key: "r" },
        { name: "snapshot", arg: false, key: "s" },
        { name: "nocache", arg: false, key: "n" },
        { name: "copy-on-read", arg: false, key: "C" },
        { name: "misalign", arg: false, key: "m" },
        { name: "native-aio", arg: false, key: "k" },
        { name: "aio", arg: true, key: "i" },
        { name: "discard", arg: true, key: "d" },
        { name: "cache", arg: true, key: "t" },
        { name: "trace", arg: true, key: "T" },
        { name: "force-share", arg: false, key: "U" },
        { name: "version", arg: false, key: "V" },
        { name: "image-opts", arg: false },
        { name: "object", arg: true },
        { name: "stats", arg: false },
        { name: "in-process", arg: false },
      ],
    },
    io,
  );
  if (!parsed) return 0;
  if (hasFlag(parsed, "V")) {
    io.out("refcow io (qemu-io compatible command set of QEMU 7.2)\n");
    return 0;
  }
  if (hasFlag(parsed, "image-opts") || hasFlag(parsed, "object")) throw new CliError("--image-opts and --object are not supported by refcow");
  if (hasFlag(parsed, "C")) throw new CliError("copy-on-read (-C) is not supported by refcow");
  if (parsed.operands.length !== 1) throw new UsageError("Expecting one image file name");
  const path = parsed.operands[0]!;
  let cache: CacheMode = "writethrough"; // qemu-io's default
  for (const o of parsed.options) {
    if (o.key === "n") cache = parseCacheMode("none");
    if (o.key === "t") cache = parseCacheMode(o.value!);
  }
  const { scheme, schemeOptions } = schemeChoice(parsed);
  const alloc = parseAllocPolicy(lastValue(parsed, "alloc"));
  const inProcess = hasFlag(parsed, "in-process");
  const noReflink = hasFlag(parsed, "no-reflink") || undefined;
  /** Opens `file` as the command line or an `open` command asks; the error is QEMU's "can't open device". */
  const openSession = (file: string, o: { format?: "qcow2" | "raw"; readOnly: boolean; snapshot: boolean; cache: CacheMode }) =>
    openForIo(file, { format: o.format, readOnly: o.readOnly, cache: o.cache, scheme, schemeOptions, alloc, noReflink, snapshot: o.snapshot, inProcess }).catch((e: unknown) => {
      throw new CliError(`can't open device ${file}: ${(e as Error).message.replace(`Could not open '${file}': `, "")}`);
    });
  let current: OpenedIoTarget | undefined = await openSession(path, {
    format: formatForOpen(lastValue(parsed, "f"), path),
    readOnly: hasFlag(parsed, "r"),
    cache,
    snapshot: hasFlag(parsed, "s"),
  });
  if (current.warning) io.err(current.warning);
  // The last image opened, for --stats after close.
  let last = current;
  // What the open image was opened as, for reopen.
  let session = { path, readOnly: hasFlag(parsed, "r"), snapshot: hasFlag(parsed, "s"), cache, format: formatForOpen(lastValue(parsed, "f"), path) };
  const files: IoFiles = {
    async open(file, o: IoFileOptions) {
      const next = {
        path: file,
        readOnly: o.readOnly,
        snapshot: o.snapshot,
        format: o.format ?? formatForOpen(undefined, file),
        cache: o.cache ? parseCacheMode(o.cache) : ("writethrough" as CacheMode),
      };
      const opened = await openSession(file, next);
      if (opened.warning) io.err(opened.warning);
      current = last = opened;
      session = next;
      return opened.target;
    },
    async reopen(o) {
      // -s keeps its writes in this session's memory: closing would drop them.
      if (session.snapshot) throw new CliError('qemu-io command "reopen" is not supported by refcow on an image opened with -s');
      const next = { ...session, readOnly: o.readOnly ?? session.readOnly, cache: o.cache ? parseCacheMode(o.cache) : session.cache };
      await files.close();
      let opened: OpenedIoTarget;
      try {
        opened = await openSession(next.path, next);
      } catch (e) {
        // Back as it was, where it can be.
        current = last = await openSession(session.path, session);
        throw e;
      }
      current = last = opened;
      session = next;
      return opened.target;
    },
    isOpen: () => current !== undefined,
    async close() {
      const t = current;
      current = undefined;
      await t?.close();
    },
  };

  const status = await closing({ close: () => current?.close() }, path, async () => {
    const ctx: IoContext = { target: current!.target, io, quit: false, aio: new AioRequests(), files };
    let failed = false;
    const commands = allValues(parsed, "c");
    if (commands.length > 0) {
      for (const line of commands) {
        if ((await runIoCommand(ctx, line)) !== 0) failed = true;
        if (ctx.quit) break;
      }
    } else {
      io.out("qemu-io> ");
      for await (const line of stdinLines()) {
        // While it waits for a command, qemu-io's event loop prints the aio requests that have completed.
        await ctx.aio.poll(io);
        if ((await runIoCommand(ctx, line)) !== 0) failed = true;
        if (ctx.quit) break;
        io.out("qemu-io> ");
      }
    }
    // qemu-io drains the requests still in flight when it closes the image: their completions print.
    await ctx.aio.drain(io);
    return failed ? 1 : 0;
  });
  // After close, so that the metadata written back and flushed at close is counted too.
  if (hasFlag(parsed, "stats")) {
    if (last.stats) io.out(statsTable(last.stats()));
    else io.err("refcow: --stats: no cost accounting for this image format\n");
  }
  return status;
}
