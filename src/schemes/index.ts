/**
 * Registry of refcount schemes, by the name used on the command line (`--scheme`). Everything that lists the
 * schemes (CLI help, benchmarks, charts, the browser page) takes them from here: adding a scheme is one module
 * and one line below.
 */
import { UnsupportedFeatureError } from "../format/errors.js";
import type { SchemeCatalog } from "../engine/scheme-seam.js";
import type { FlushOrder } from "../engine/types.js";
import { EagerScheme } from "./eager.js";
import { LazyScheme } from "./lazy.js";
import { LazyCountScheme } from "./lazy-count.js";
import { JournalScheme } from "./journal.js";
import { OwnerScheme } from "./owner.js";
import { LOG_SCHEME_OPTIONS, LogScheme, logSchemeOptions } from "./log.js";
import { resolveSchemeOptions, type ResolvedSchemeOptions, type SchemeOptionSpec, type SchemeOptionValues } from "./scheme-options.js";
import { hasDataLogToReplay, recoverDataLog, refuseReadOnlyDataLog } from "./log-recovery.js";
import { hasJournalToReplay, recoverAfterLoad, recoverBeforeLoad } from "./recovery.js";
import type { RefcountScheme } from "./scheme.js";

interface SchemeEntry {
  make(options: ResolvedSchemeOptions): RefcountScheme;
  /** The options the scheme takes (scheme-options.ts); none when absent. */
  options?: readonly SchemeOptionSpec[];
}

/** The schemes, in the order help, reports and the page list them; the first is the default. */
const SCHEMES: Record<string, SchemeEntry> = {
  eager: { make: () => new EagerScheme() },
  lazy: { make: () => new LazyScheme() },
  "lazy-count": { make: () => new LazyCountScheme() },
  owner: { make: () => new OwnerScheme() },
  journal: { make: () => new JournalScheme() },
  log: { make: (o) => new LogScheme(logSchemeOptions(o)), options: LOG_SCHEME_OPTIONS },
};

export const SCHEME_NAMES: readonly string[] = Object.keys(SCHEMES);

function entryOf(name: string): SchemeEntry {
  const entry = Object.hasOwn(SCHEMES, name) ? SCHEMES[name] : undefined;
  if (!entry) throw new UnsupportedFeatureError(`unknown refcount scheme '${name}' (available: ${SCHEME_NAMES.join(", ")})`);
  return entry;
}

/** The options scheme `name` takes (empty for most); throws for an unknown scheme. */
export function schemeOptionSpecs(name: string): readonly SchemeOptionSpec[] {
  return entryOf(name).options ?? [];
}

/** Every scheme that takes options, with them (for --help). */
export function schemesWithOptions(): { scheme: string; options: readonly SchemeOptionSpec[] }[] {
  return SCHEME_NAMES.filter((n) => SCHEMES[n]!.options?.length).map((n) => ({ scheme: n, options: SCHEMES[n]!.options! }));
}

/**
 * Validates options for scheme `name` (default eager) without creating it: what the command line checks
 * before it opens anything. Throws UnsupportedFeatureError with one line.
 */
export function validateSchemeOptions(name = "eager", options?: SchemeOptionValues): ResolvedSchemeOptions {
  return resolveSchemeOptions(name, entryOf(name).options, options);
}

/** The flush orderings (`--order`): refcow's own, or QEMU 7.2's (eager only). */
export const FLUSH_ORDERS: readonly FlushOrder[] = ["refcow", "qemu"];

export function createScheme(name = "eager", order: FlushOrder = "refcow", options?: SchemeOptionValues): RefcountScheme {
  const entry = entryOf(name);
  if (!FLUSH_ORDERS.includes(order)) throw new UnsupportedFeatureError(`unknown flush order '${order}' (available: ${FLUSH_ORDERS.join(", ")})`);
  const resolved = resolveSchemeOptions(name, entry.options, options);
  if (order === "qemu") {
    if (name !== "eager") throw new UnsupportedFeatureError(`flush order 'qemu' applies to the eager scheme only, not '${name}'`);
    return new EagerScheme("qemu");
  }
  return entry.make(resolved);
}

/** What an open uses to choose a scheme and recover schemes' leftovers (the engine's SchemeCatalog). */
export const SCHEME_CATALOG: SchemeCatalog = {
  create: createScheme,
  hasLogToReplay: hasJournalToReplay,
  recoverBeforeLoad,
  recoverAfterLoad,
  recoverAfterAttach: (host) => void recoverDataLog(host),
  refuseReadOnly: refuseReadOnlyDataLog,
  hasWriteLogToReplay: hasDataLogToReplay,
};

export type { RefcountScheme } from "./scheme.js";
export { parseSchemeOptionText, rangeText, type SchemeOptionSpec, type SchemeOptionValues } from "./scheme-options.js";

export { hasJournalToReplay, recoverAfterLoad, recoverBeforeLoad } from "./recovery.js";
