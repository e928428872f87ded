/**
 * The metadata contexts an export offers, and which of them a LIST_META_CONTEXT or SET_META_CONTEXT query
 * names (the messages are in protocol.ts), as qemu-nbd 7.2 answers them (QEMU's docs/interop/nbd.rst and
 * nbd/server.c; the NBD protocol's "Metadata querying" for the base: namespace):
 *
 * - `base:allocation`, always offered;
 * - `qemu:allocation-depth`, with qemu-nbd's -A;
 * - `qemu:dirty-bitmap:NAME`, one per bitmap exported with -B NAME.
 *
 * Queries: a context's full name selects it when it is offered. `base:`, `qemu:` (every qemu context) and
 * `qemu:dirty-bitmap:` (every bitmap) are wildcards for LIST and select nothing in SET; so does a LIST
 * without queries (everything) and a SET without queries (nothing). Any other query, of a known namespace or
 * not, matches nothing and is no error.
 *
 * Ids are fixed per export, so distinct in every connection: 1 base:allocation, 2 qemu:allocation-depth,
 * 3 + i the i-th exported bitmap (0 is left out: LIST replies carry 0, as the protocol advises). Contexts are
 * listed, selected and answered (one BLOCK_STATUS chunk each) in the order of their ids.
 */
import { BASE_ALLOCATION, QEMU_ALLOCATION_DEPTH, QEMU_DIRTY_BITMAP } from "./protocol.js";

export type MetaContext =
  | { readonly kind: "base:allocation"; readonly id: number; readonly name: string }
  | { readonly kind: "qemu:allocation-depth"; readonly id: number; readonly name: string }
  | { readonly kind: "qemu:dirty-bitmap"; readonly id: number; readonly name: string; readonly bitmap: string };

const BASE_ALLOCATION_ID = 1;
const ALLOCATION_DEPTH_ID = 2;
const FIRST_BITMAP_ID = 3;

/** What an export offers beyond base:allocation (qemu-nbd's -A and -B). */
export interface OfferedContexts {
  allocationDepth?: boolean;
  /** Bitmap names, in the order given; a name given twice is offered once. */
  bitmaps?: readonly string[];
}

/** Every context the export offers, in id order. */
export function offeredContexts(exp: OfferedContexts): MetaContext[] {
  const out: MetaContext[] = [{ kind: "base:allocation", id: BASE_ALLOCATION_ID, name: BASE_ALLOCATION }];
  if (exp.allocationDepth) out.push({ kind: "qemu:allocation-depth", id: ALLOCATION_DEPTH_ID, name: QEMU_ALLOCATION_DEPTH });
  [...new Set(exp.bitmaps ?? [])].forEach((bitmap, i) =>
    out.push({ kind: "qemu:dirty-bitmap", id: FIRST_BITMAP_ID + i, name: QEMU_DIRTY_BITMAP + bitmap, bitmap }),
  );
  return out;
}

/**
 * The offered contexts that `queries` name, in id order: for LIST (`list`) wildcards included and no query
 * meaning all; for SET only full names.
 */
export function matchContexts(offered: readonly MetaContext[], queries: readonly string[], list: boolean): MetaContext[] {
  if (queries.length === 0) return list ? [...offered] : [];
  return offered.filter((c) => queries.some((q) => q === c.name || (list && isWildcardFor(q, c))));
}

/** Whether `query` is a LIST wildcard that covers `c`. */
function isWildcardFor(query: string, c: MetaContext): boolean {
  switch (query) {
    case "base:":
      return c.kind === "base:allocation";
    case "qemu:":
      return c.kind !== "base:allocation";
    case QEMU_DIRTY_BITMAP:
      return c.kind === "qemu:dirty-bitmap";
    default:
      return false;
  }
}
