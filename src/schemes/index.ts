/**
 * Registry of refcount schemes, by the name used on the command line (`--scheme`). Everything that lists the
 * schemes (CLI help, benchmarks, charts, the browser page) takes them from here: adding a scheme is one module
 * and one line below.
 */
import { UnsupportedFeatureError } from "../format/errors.js";
import { INCOMPAT_STANDARD, QEMU_FEATURE_NAMES, type FeatureName } from "../format/features.js";
import type { SchemeCatalog } from "../engine/allocation/scheme-seam.js";
import type { FlushOrder } from "../engine/types.js";
import { EAGER_SCHEME } from "./eager.js";
import { LAZY_SCHEME } from "./lazy.js";
import { LAZY_COUNT_SCHEME } from "./lazy-count.js";
import { JOURNAL_SCHEME } from "./journal.js";
import { OWNER_SCHEME } from "./owner.js";
import { LOG_SCHEME } from "./log.js";
import { resolveSchemeOptions, type ResolvedSchemeOptions, type SchemeOptionSpec, type SchemeOptionValues } from "./scheme-options.js";
import type { RefcountScheme, SchemeCostGroup, SchemeDefinition, SchemeExtension, SchemeRecovery } from "./scheme.js";

/** The schemes, in the order help, reports and the page list them; the first is the default. */
const DEFINITIONS: readonly SchemeDefinition[] = [EAGER_SCHEME, LAZY_SCHEME, LAZY_COUNT_SCHEME, OWNER_SCHEME, JOURNAL_SCHEME, LOG_SCHEME];

const SCHEMES: Record<string, SchemeDefinition> = Object.fromEntries(DEFINITIONS.map((d) => [d.name, d]));

export const SCHEME_NAMES: readonly string[] = Object.keys(SCHEMES);

function entryOf(name: string): SchemeDefinition {
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
  }
  return entry.make(resolved, order);
}

/** Feature bits the schemes set, in registry order (each bit once). */
const SCHEME_FEATURES: readonly FeatureName[] = DEFINITIONS.flatMap((d) => d.features ?? []);
for (const f of SCHEME_FEATURES) {
  const twice = SCHEME_FEATURES.filter((g) => g.type === f.type && g.bit === f.bit);
  if (twice.length > 1 || QEMU_FEATURE_NAMES.some((g) => g.type === f.type && g.bit === f.bit)) throw new Error(`feature bit ${f.bit} (type ${f.type}) is declared twice`);
}

/** The header extensions the schemes write, with their names (what `info` may show of an image). */
export const SCHEME_EXTENSIONS: readonly SchemeExtension[] = DEFINITIONS.flatMap((d) => d.extensions ?? []);

/** The I/O purposes the schemes tag their own I/O with, each once, with the cost group reports count it in. */
export const SCHEME_IO_PURPOSES: ReadonlyMap<string, SchemeCostGroup> = (() => {
  const out = new Map<string, SchemeCostGroup>();
  for (const { purpose, costGroup } of DEFINITIONS.flatMap((d) => d.ioPurposes ?? [])) {
    const known = out.get(purpose);
    if (known && known !== costGroup) throw new Error(`I/O purpose '${purpose}' is declared with two cost groups`);
    out.set(purpose, costGroup);
  }
  return out;
})();

const RECOVERIES: readonly SchemeRecovery[] = DEFINITIONS.flatMap((d) => (d.recovery ? [d.recovery] : []));

/** What an open uses to choose a scheme and recover schemes' leftovers (the engine's SchemeCatalog). */
export const SCHEME_CATALOG: SchemeCatalog = {
  create: createScheme,
  knownIncompatible: SCHEME_FEATURES.filter((f) => f.type === 0).reduce((m, f) => m | (1n << BigInt(f.bit)), INCOMPAT_STANDARD),
  featureNames: [...QEMU_FEATURE_NAMES, ...SCHEME_FEATURES],
  hasLogToReplay: (h) => RECOVERIES.some((r) => r.pendingBeforeLoad?.(h)),
  recoverBeforeLoad: (file, h, cs, readOnly) => {
    for (const r of RECOVERIES) r.beforeLoad?.(file, h, cs, readOnly);
  },
  recoverAfterLoad: (host, opts) => {
    for (const r of RECOVERIES) r.afterLoad?.(host, opts);
  },
  recoverAfterAttach: (host) => {
    for (const r of RECOVERIES) r.afterAttach?.(host);
  },
  hasWriteLogToReplay: (h) => RECOVERIES.some((r) => r.pendingAfterAttach?.(h)),
  refuseReadOnly: (h) => {
    for (const r of RECOVERIES) r.refuseReadOnly?.(h);
  },
};

export type { RefcountScheme } from "./scheme.js";
export { parseSchemeOptionText, rangeText, type SchemeOptionSpec, type SchemeOptionValues } from "./scheme-options.js";

export { hasJournalToReplay, recoverAfterLoad, recoverBeforeLoad } from "./recovery.js";
