/**
 * refcow snapshot — qemu-img snapshot: -l lists (nothing at all when there are no snapshots), -c creates
 * (dated now, VM clock 0, as qemu-img does), -a applies by ID or name, -d deletes by name.
 */
import { hasFlag, lastValue } from "../args.js";
import type { CliIo } from "../command.js";
import { Qcow2Image, type SnapshotInfo } from "../engine.js";
import { CliError, messageOf, UsageError } from "../errors.js";
import { formatForOpen, openImage, parseAllocPolicy, parseCacheMode, probedRawWarning } from "../open.js";
import { snapshotTable } from "../snapshot-output.js";
import { ALLOC_LONG, closing, FORCE_SHARE_LONG, HELP_LONG, ioOf, NO_REFLINK_LONG, oneFilename, parseCommandArgs, SCHEME_LONG, SCHEME_OPT_LONG, schemeChoice } from "./common.js";
import { snapshotRows } from "./info.js";

type Action = { kind: "list" } | { kind: "create" | "apply" | "delete"; name: string };

/** find_snapshot_by_id_or_name: an ID match first, then a name match. */
export function findByIdOrName(list: readonly SnapshotInfo[], s: string): SnapshotInfo | undefined {
  return list.find((sn) => sn.id === s) ?? list.find((sn) => sn.name === s);
}

export async function snapshotCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const parsed = parseCommandArgs(
    "snapshot",
    argv,
    { short: "la:c:d:f:hqt:U", long: [HELP_LONG, SCHEME_LONG, SCHEME_OPT_LONG, ALLOC_LONG, NO_REFLINK_LONG, FORCE_SHARE_LONG] },
    io,
  );
  if (!parsed) return 0;
  let action: Action | undefined;
  for (const o of parsed.options) {
    let next: Action | undefined;
    if (o.key === "l") next = { kind: "list" };
    else if (o.key === "c") next = { kind: "create", name: o.value! };
    else if (o.key === "a") next = { kind: "apply", name: o.value! };
    else if (o.key === "d") next = { kind: "delete", name: o.value! };
    if (!next) continue;
    if (action) throw new UsageError("Cannot mix '-l', '-a', '-c', '-d'");
    action = next;
  }
  const filename = oneFilename(parsed);
  const quiet = hasFlag(parsed, "q");
  const cacheArg = lastValue(parsed, "t");
  const cache = cacheArg === undefined ? undefined : parseCacheMode(cacheArg);
  const format = formatForOpen(lastValue(parsed, "f"), filename);
  const readOnly = action === undefined || action.kind === "list";
  const opened = openImage({ path: filename, format, readOnly, cache, ...schemeChoice(parsed), alloc: parseAllocPolicy(lastValue(parsed, "alloc")), noReflink: hasFlag(parsed, "no-reflink") || undefined });
  const warning = probedRawWarning(opened, readOnly);
  if (warning) io.err(warning);
  const img = opened.disk;
  return closing(img, filename, () => {
    if (!action) return 0;
    if (!(img instanceof Qcow2Image)) {
      // raw has no snapshots: listing prints nothing, the others fail with ENOTSUP as in qemu-img.
      if (action.kind === "list") return 0;
      const verb = { create: "create", apply: "apply", delete: "delete" }[action.kind];
      throw new CliError(`Could not ${verb} snapshot '${action.name}': -95 (Operation not supported)`);
    }
    switch (action.kind) {
      case "list": {
        if (!quiet) io.out(snapshotTable(snapshotRows(img.snapshotList())));
        return 0;
      }
      case "create": {
        try {
          // qemu-img records icount 0 (its QEMUSnapshotInfo is zero-filled); passed through a variable so
          // that an engine whose SnapshotCreateOptions has no `icount` yet still compiles and ignores it.
          const createOpts = { date: new Date(), vmClockNsec: 0, icount: 0 };
          img.snapshotCreate(action.name, createOpts);
        } catch (e) {
          throw new CliError(`Could not create snapshot '${action.name}': ${messageOf(e)}`);
        }
        return 0;
      }
      case "apply": {
        const sn = findByIdOrName(img.snapshotList(), action.name);
        if (!sn) throw new CliError(`Could not apply snapshot '${action.name}': Failed to load snapshot: No such file or directory`);
        try {
          img.snapshotApply(sn.id);
        } catch (e) {
          throw new CliError(`Could not apply snapshot '${action.name}': ${messageOf(e)}`);
        }
        return 0;
      }
      case "delete": {
        // qemu-img -d matches the name only (bdrv_snapshot_delete(bs, NULL, name)), the first one that matches.
        const sn = img.snapshotList().find((s) => s.name === action.name);
        if (!sn) throw new CliError(`Could not delete snapshot '${action.name}': snapshot not found`);
        try {
          img.snapshotDelete(sn.id);
        } catch (e) {
          throw new CliError(`Could not delete snapshot '${action.name}': ${messageOf(e)}`);
        }
        return 0;
      }
    }
  });
}
