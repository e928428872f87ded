/** Registry of refcount schemes, by the name used on the command line (`--scheme`). */
import { UnsupportedFeatureError } from "../engine/errors.js";
import { EagerScheme } from "./eager.js";
import { LazyScheme } from "./lazy.js";
import { LazyCountScheme } from "./lazy-count.js";
import { JournalScheme } from "./journal.js";
import { OwnerScheme } from "./owner.js";
import type { RefcountScheme } from "./scheme.js";

const SCHEMES: Record<string, () => RefcountScheme> = {
  eager: () => new EagerScheme(),
  lazy: () => new LazyScheme(),
  "lazy-count": () => new LazyCountScheme(),
  journal: () => new JournalScheme(),
  owner: () => new OwnerScheme(),
};

export const SCHEME_NAMES = Object.keys(SCHEMES);

export function createScheme(name = "eager"): RefcountScheme {
  const make = SCHEMES[name];
  if (!make) throw new UnsupportedFeatureError(`unknown refcount scheme '${name}' (available: ${SCHEME_NAMES.join(", ")})`);
  return make();
}

export type { RefcountScheme } from "./scheme.js";

export { hasJournalToReplay, recoverAfterLoad, recoverBeforeLoad } from "./recovery.js";
