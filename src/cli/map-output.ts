/**
 * `qemu-img map` output (qemu-img.c img_map, dump_map_entry, entry_mergeable; QEMU 7.2).
 *
 * JSON: one "{ start, length, depth, present, zero, data[, offset] }" line per merged extent inside "[...]".
 * Human: a table of the extents that hold data ("Offset Length Mapped to File", "%#-16x" columns); it
 * treats zero, unallocated and zero-with-data alike so that more extents merge, and refuses extents that
 * have data but no host offset (compressed clusters).
 */
import { hexAlt } from "./printf.js";
import { padRight } from "./text.js";

export interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
  /** The file holding the data, set when `offset` is (QEMU: file->filename). */
  filename?: string;
}

/** An extent as the engine reports it (MapExtent in engine/types.ts, structurally). */
export interface MapExtentLike {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

export type MapFormat = "human" | "json";

/**
 * Clips the engine's extents to [start, end) and attaches the file name of the layer at each depth.
 * Extents must be sorted and cover the range.
 */
export function clipExtents(
  extents: readonly MapExtentLike[],
  start: number,
  end: number,
  filenameAtDepth: (depth: number) => string | undefined,
): MapEntry[] {
  const out: MapEntry[] = [];
  for (const e of extents) {
    const s = Math.max(e.start, start);
    const t = Math.min(e.start + e.length, end);
    if (t <= s) continue;
    const entry: MapEntry = { start: s, length: t - s, depth: e.depth, present: e.present, zero: e.zero, data: e.data };
    if (e.offset !== undefined) {
      entry.offset = e.offset + (s - e.start);
      entry.filename = filenameAtDepth(e.depth);
    }
    out.push(entry);
  }
  return out;
}

function mergeable(curr: MapEntry, next: MapEntry): boolean {
  if (curr.length === 0) return false;
  if (
    curr.zero !== next.zero ||
    curr.data !== next.data ||
    curr.depth !== next.depth ||
    curr.present !== next.present ||
    (curr.filename === undefined) !== (next.filename === undefined) ||
    (curr.offset === undefined) !== (next.offset === undefined)
  ) {
    return false;
  }
  if (curr.filename !== undefined && curr.filename !== next.filename) return false;
  if (curr.offset !== undefined && curr.offset + curr.length !== next.offset) return false;
  return true;
}

function jsonEntry(e: MapEntry): string {
  let s =
    `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, ` +
    `"present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}`;
  if (e.offset !== undefined) s += `, "offset": ${e.offset}`;
  return `${s}}`;
}

export const MAP_HUMAN_HEADER = `${padRight("Offset", 16)}${padRight("Length", 16)}${padRight("Mapped to", 16)}File\n`;
export const MAP_COMPRESSED_ERROR = "File contains external, encrypted or compressed clusters.";

export interface MapRender {
  /** Everything printed to stdout (also when an error stopped the listing). */
  text: string;
  /** Set when the listing stopped with an error (exit code 1). */
  error?: string;
}

/**
 * Runs img_map's merge-and-dump loop over `entries` (consecutive, starting at `startOffset`).
 */
export function renderMap(entries: readonly MapEntry[], format: MapFormat, startOffset = 0): MapRender {
  let text = format === "json" ? "[" : MAP_HUMAN_HEADER;
  // dump_map_entry; in human mode it may rewrite `next` so that more extents coalesce.
  const dump = (e: MapEntry, next: MapEntry | undefined): string | undefined => {
    if (format === "json") {
      text += jsonEntry(e);
      if (next) text += ",\n";
      return undefined;
    }
    if (e.data && e.offset === undefined) return MAP_COMPRESSED_ERROR;
    if (e.data && !e.zero) {
      text += `${padRight(hexAlt(e.start), 16)}${padRight(hexAlt(e.length), 16)}${padRight(hexAlt(e.offset ?? 0), 16)}${e.filename ?? ""}\n`;
    }
    if (next && (!next.data || next.zero)) {
      next.data = false;
      next.zero = true;
    }
    return undefined;
  };
  let curr: MapEntry = { start: startOffset, length: 0, depth: 0, present: false, zero: false, data: false };
  for (const original of entries) {
    const next = { ...original };
    if (mergeable(curr, next)) {
      curr.length += next.length;
      continue;
    }
    if (curr.length > 0) {
      const err = dump(curr, next);
      if (err) return { text, error: err };
    }
    curr = next;
  }
  const err = dump(curr, undefined);
  if (err) return { text, error: err };
  if (format === "json") text += "]\n";
  return { text };
}
