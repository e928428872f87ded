/**
 * refcow convert — qemu-img convert for raw and qcow2: copies the guest-visible contents of one or more
 * source images (concatenated), or of one internal snapshot (-l / -s), into a new image. Like qemu-img it
 * skips ranges the source reports as zero and, inside data, runs of at least -S bytes (default 4 KiB) of
 * zeroes, so the output stays sparse; with -n it writes into an existing image and zeroes those ranges
 * explicitly instead. The output is written with cache=unsafe unless -t says otherwise and flushed at close.
 * With --bitmaps (one qcow2 source, a qcow2 v3 output) the source's persistent bitmaps are copied once the
 * data is: same names, granularity, enabled state and dirty bits; an inconsistent one stops the convert
 * before anything is written unless --skip-broken-bitmaps leaves it out.
 */
import * as fs from "node:fs";
import { allValues, hasFlag, lastValue } from "../args.js";
import type { CliIo } from "../command.js";
import {
  CreateOptionError,
  CreateOptionSet,
  isValidOptionList,
  optionsHelp,
  qcow2CreateOptions,
  wantsHelp,
} from "../create-options.js";
import { type CacheMode, NodeFile, Qcow2Image, type SnapshotInfo } from "../engine.js";
import { CliError, messageOf } from "../errors.js";
import { type Disk, formatForOpen, formatProblem, openImage, type OpenedImage, parseAllocPolicy, parseCacheMode, parseFormat } from "../open.js";
import { OverlayFile } from "../overlay-file.js";
import { imgNumber } from "../sizes.js";
import { ALLOC_LONG, HELP_LONG, ioOf, parseCommandArgs, SCHEME_LONG, SCHEME_OPT_LONG, schemeChoice, FORCE_SHARE_LONG } from "./common.js";

const IO_BUF_SIZE = 2 * 1024 * 1024;
const MAX_SPARSE = 32768 * 512;

/** A snapshot selector from -l: "snapshot.id=ID,snapshot.name=NAME" or a bare ID_OR_NAME. */
export interface SnapshotSelector {
  id?: string;
  name?: string;
  idOrName?: string;
}

export function parseSnapshotParam(s: string): SnapshotSelector {
  if (!s.startsWith("snapshot.")) return { idOrName: s };
  const sel: SnapshotSelector = {};
  for (const part of s.split(",")) {
    const eq = part.indexOf("=");
    const key = eq >= 0 ? part.slice(0, eq) : part;
    const value = eq >= 0 ? part.slice(eq + 1) : "";
    if (key === "snapshot.id") sel.id = value;
    else if (key === "snapshot.name") sel.name = value;
    else throw new CliError(`Failed in parsing snapshot param '${s}' (invalid parameter '${key}')`);
  }
  return sel;
}

/** bdrv_snapshot_load_tmp's lookup: by id and/or name, or id first then name for a bare value. */
export function selectSnapshot(list: readonly SnapshotInfo[], sel: SnapshotSelector): SnapshotInfo | undefined {
  if (sel.idOrName !== undefined) return list.find((s) => s.id === sel.idOrName) ?? list.find((s) => s.name === sel.idOrName);
  return list.find((s) => (sel.id === undefined || s.id === sel.id) && (sel.name === undefined || s.name === sel.name));
}

/** Splits [0, buf.length) into runs to write: blocks of `sparse` bytes (aligned to absolute offsets) that are not all zero. */
export function nonZeroRuns(buf: Uint8Array, offset: number, sparse: number): [number, number][] {
  if (sparse === 0) return buf.length ? [[0, buf.length]] : [];
  const runs: [number, number][] = [];
  let i = 0;
  while (i < buf.length) {
    const blockEnd = Math.min(buf.length, i + (sparse - ((offset + i) % sparse)));
    let zero = true;
    for (let j = i; j < blockEnd; j++) {
      if (buf[j] !== 0) {
        zero = false;
        break;
      }
    }
    if (!zero) {
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === i) last[1] += blockEnd - i;
      else runs.push([i, blockEnd - i]);
    }
    i = blockEnd;
  }
  return runs;
}

interface Source {
  name: string;
  opened: OpenedImage;
  disk: Disk;
}

export async function convertCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const parsed = parseCommandArgs(
    "convert",
    argv,
    {
      short: "hf:O:b:B:CcF:o:l:s:S:pt:T:qnm:WUr:",
      long: [HELP_LONG, SCHEME_LONG, SCHEME_OPT_LONG, ALLOC_LONG, FORCE_SHARE_LONG, { name: "target-is-zero", arg: false }, { name: "salvage", arg: false }, { name: "bitmaps", arg: false }, { name: "skip-broken-bitmaps", arg: false }],
    },
    io,
  );
  if (!parsed) return 0;
  const outFmtArg = lastValue(parsed, "O") ?? "raw";
  const outFmt = parseFormat(outFmtArg);
  const optionLists = allValues(parsed, "o");
  for (const list of optionLists) {
    if (!isValidOptionList(list)) throw new CliError(`Invalid option list: ${list}`);
  }
  if (optionLists.some(wantsHelp)) {
    if (!outFmt) throw new CliError(formatProblem(outFmtArg).replace(/^Unknown driver/, "Unknown file format"));
    io.out(optionsHelp(outFmt));
    return 0;
  }
  if (hasFlag(parsed, "c")) throw new CliError("Compression not supported for this file format");
  if (hasFlag(parsed, "B") || hasFlag(parsed, "b")) throw new CliError("refcow convert does not support a backing file for the output (-B)");
  // -q, -p, -U, -W, -m, -C, -r are accepted: convert prints nothing but errors and writes in order.
  const skipCreate = hasFlag(parsed, "n");
  const bitmaps = hasFlag(parsed, "bitmaps");
  const skipBroken = hasFlag(parsed, "skip-broken-bitmaps");
  if (skipBroken && !bitmaps) throw new CliError("Use of --skip-broken-bitmaps requires --bitmaps");
  const targetIsZero = hasFlag(parsed, "target-is-zero");
  let sparse = 4096;
  const S = lastValue(parsed, "S");
  if (S !== undefined) {
    const r = imgNumber("buffer size for sparse output", S);
    if (!r.ok || r.value % 512n !== 0n || r.value > BigInt(MAX_SPARSE)) {
      throw new CliError(
        `Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to ${MAX_SPARSE}. ` +
          "Select 0 to disable sparse detection (fully allocates output).",
      );
    }
    sparse = Number(r.value);
  }
  const cacheArg = lastValue(parsed, "t");
  const cache: CacheMode = cacheArg === undefined ? "unsafe" : parseCacheMode(cacheArg);
  const srcCacheArg = lastValue(parsed, "T");
  if (srcCacheArg !== undefined) parseCacheMode(srcCacheArg, "source cache");
  // Checked before the output is created.
  const scheme = schemeChoice(parsed);

  const snapshotParam = lastValue(parsed, "l") ?? lastValue(parsed, "s");
  const selector = snapshotParam === undefined ? undefined : parseSnapshotParam(snapshotParam);

  if (parsed.operands.length < 2) throw new CliError("Must specify image file name");
  const outName = parsed.operands[parsed.operands.length - 1]!;
  const srcNames = parsed.operands.slice(0, -1);
  if (selector && srcNames.length > 1) throw new CliError("No support for concatenating multiple snapshot");
  if (!outFmt) throw new CliError(formatProblem(outFmtArg).replace(/^Unknown driver/, "Unknown file format"));

  const outOpts = new CreateOptionSet(outFmt);
  try {
    for (const list of optionLists) outOpts.addList(list);
  } catch (e) {
    if (e instanceof CreateOptionError) throw new CliError(e.message);
    throw e;
  }
  if (outOpts.has("backing_file")) {
    if (!outOpts.has("backing_fmt")) throw new CliError("Use of backing file requires explicit backing format");
    throw new CliError("refcow convert does not support a backing file for the output");
  }

  const srcFmt = lastValue(parsed, "f");
  const sources: Source[] = [];
  let target: Disk | undefined;
  /** The source as it is on disk, when -l made the source a private view: where --bitmaps reads. */
  let bitmapView: Disk | undefined;
  try {
    for (const name of srcNames) {
      const format = formatForOpen(srcFmt, name);
      let opened: OpenedImage;
      if (selector) {
        // A private copy-on-write view of the source, in which the snapshot is applied.
        opened = openImage({ path: name, format, readOnly: true, cache: "unsafe", wrapFile: (f) => new OverlayFile(f) });
        sources.push({ name, opened, disk: opened.disk });
        const img = opened.disk;
        const sn = img instanceof Qcow2Image ? selectSnapshot(img.snapshotList(), selector) : undefined;
        if (!(img instanceof Qcow2Image) || !sn) throw new CliError("Failed to load snapshot: Can't find snapshot");
        try {
          // The view is private: its bitmaps go first (the engine, as QEMU, applies no snapshot under
          // bitmaps); --bitmaps copies them from the source as it is on disk.
          for (const b of img.bitmapList()) img.bitmapRemove(b.name);
          img.snapshotApply(sn.id);
        } catch (e) {
          throw new CliError(`Failed to load snapshot: ${messageOf(e)}`);
        }
      } else {
        opened = openImage({ path: name, format, readOnly: true });
        sources.push({ name, opened, disk: opened.disk });
      }
    }
    const total = sources.reduce((sum, s) => sum + s.disk.size, 0);
    // qemu-img's checks of --bitmaps, before the output exists.
    let bitmapSource: Qcow2Image | undefined;
    if (bitmaps) {
      if (sources.length > 1) throw new CliError("Copying bitmaps only possible with single source");
      const src = sources[0]!;
      bitmapSource = selector ? (openImage({ path: src.name, format: formatForOpen(srcFmt, src.name), readOnly: true, noBacking: true }).disk as Qcow2Image) : (src.disk as Qcow2Image);
      if (selector) bitmapView = bitmapSource;
      if (!(bitmapSource instanceof Qcow2Image) || bitmapSource.info().version !== 3) throw new CliError("Source lacks bitmap support");
      // QEMU walks them newest first.
      for (const b of [...bitmapSource.bitmapList()].reverse()) {
        if (!b.inUse) continue;
        if (!skipBroken) throw new CliError(`Cannot copy inconsistent bitmap '${b.name}'\nTry --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it`);
        io.err(`refcow: warning: Skipping inconsistent bitmap '${b.name}'\n`);
      }
    }

    // The output image.
    if (!skipCreate) {
      const size = Math.ceil(total / 512) * 512;
      try {
        if (outFmt === "raw") {
          const fd = fs.openSync(outName, "w");
          try {
            fs.ftruncateSync(fd, size);
          } finally {
            fs.closeSync(fd);
          }
        } else {
          const createOpts = qcow2CreateOptions(outOpts, size);
          const file = NodeFile.open(outName, { create: true });
          try {
            Qcow2Image.create(file, createOpts);
          } finally {
            file.close();
          }
        }
      } catch (e) {
        throw new CliError(`${outName}: error while converting ${outFmt}: ${messageOf(e)}`);
      }
    }
    const out = openImage({ path: outName, format: outFmt, readOnly: false, cache, ...scheme, alloc: parseAllocPolicy(lastValue(parsed, "alloc")) });
    target = out.disk;
    if (skipCreate && target.size < total) throw new CliError("output file is smaller than input file");
    const writeZeroes = skipCreate && !targetIsZero;
    const t = target;
    if (bitmaps && !(t instanceof Qcow2Image && t.info().version === 3)) throw new CliError(`Format driver '${out.format}' does not support bitmaps`);

    let base = 0;
    for (const src of sources) {
      const d = src.disk;
      for (const e of d.map()) {
        const end = Math.min(e.start + e.length, d.size);
        for (let off = e.start; off < end; ) {
          const n = Math.min(IO_BUF_SIZE, end - off);
          if (e.zero && sparse !== 0) {
            if (writeZeroes) t.writeZeroes(base + off, n);
            off += n;
            continue;
          }
          const buf = new Uint8Array(n);
          try {
            d.readInto(buf, off);
          } catch (err) {
            throw new CliError(`error while reading at byte ${base + off}: ${messageOf(err)}`);
          }
          let pos = 0;
          for (const [s, len] of nonZeroRuns(buf, base + off, sparse)) {
            try {
              if (writeZeroes && s > pos) t.writeZeroes(base + off + pos, s - pos);
              t.write(base + off + s, buf.subarray(s, s + len));
            } catch (err) {
              throw new CliError(`error while writing at byte ${base + off + s}: ${messageOf(err)}`);
            }
            pos = s + len;
          }
          if (writeZeroes && pos < n) t.writeZeroes(base + off + pos, n - pos);
          off += n;
        }
      }
      base += d.size;
    }
    if (bitmapSource && t instanceof Qcow2Image) {
      // Created once the data is in, so the copy's own writes leave no mark; then filled from the source.
      for (const b of bitmapSource.bitmapList()) {
        if (b.inUse) continue;
        try {
          t.bitmapAdd(b.name, { granularity: b.granularity, disabled: !b.enabled });
        } catch (err) {
          throw new CliError(`Failed to create bitmap ${b.name}: ${messageOf(err)}`);
        }
        try {
          t.bitmapMerge(b.name, b.name, bitmapSource);
        } catch (err) {
          throw new CliError(`Failed to populate bitmap ${b.name}: ${messageOf(err)}`);
        }
      }
    }
    try {
      t.flush();
    } catch (err) {
      throw new CliError(`error while flushing ${outName}: ${messageOf(err)}`);
    }
  } finally {
    for (const s of sources) {
      try {
        s.disk.close();
      } catch {
        // read-only sources (or private views): nothing of value is lost
      }
    }
    bitmapView?.close();
    if (target) target.close();
  }
  return 0;
}
