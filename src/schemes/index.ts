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
import { LogScheme } from "./log.js";
import { hasDataLogToReplay, recoverDataLog, refuseReadOnlyDataLog } from "./log-recovery.js";
import { hasJournalToReplay, recoverAfterLoad, recoverBeforeLoad } from "./recovery.js";
import type { RefcountScheme } from "./scheme.js";

/** The schemes, in the order help, reports and the page list them; the first is the default. */
const SCHEMES: Record<string, () => RefcountScheme> = {
  eager: () => new EagerScheme(),
  lazy: () => new LazyScheme(),
  "lazy-count": () => new LazyCountScheme(),
  owner: () => new OwnerScheme(),
  journal: () => new JournalScheme(),
  log: () => new LogScheme(),
};

export const SCHEME_NAMES: readonly string[] = Object.keys(SCHEMES);

/** The flush orderings (`--order`): refcow's own, or QEMU 7.2's (eager only). */
export const FLUSH_ORDERS: readonly FlushOrder[] = ["refcow", "qemu"];

export function createScheme(name = "eager", order: FlushOrder = "refcow"): RefcountScheme {
  const make = Object.hasOwn(SCHEMES, name) ? SCHEMES[name] : undefined;
  if (!make) throw new UnsupportedFeatureError(`unknown refcount scheme '${name}' (available: ${SCHEME_NAMES.join(", ")})`);
  if (!FLUSH_ORDERS.includes(order)) throw new UnsupportedFeatureError(`unknown flush order '${order}' (available: ${FLUSH_ORDERS.join(", ")})`);
  if (order === "qemu") {
    if (name !== "eager") throw new UnsupportedFeatureError(`flush order 'qemu' applies to the eager scheme only, not '${name}'`);
    return new EagerScheme("qemu");
  }
  return make();
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

export { hasJournalToReplay, recoverAfterLoad, recoverBeforeLoad } from "./recovery.js";
