/**
 * Allocation policy: where the search for free host clusters starts. It is orthogonal to the refcount
 * scheme: the refcount store (eager, lazy, lazy-count, journal) and the owner scheme (which keeps its own
 * free-space map) ask it, then look for a free run from there as they always do.
 *
 *   first-fit  from the lowest cluster that may be free (QEMU's free-cluster index): free space inside the
 *              file is reused as soon as it is free.
 *   append     from the end of the file, past every cluster handed out: data and metadata (L2 tables, L1
 *              tables, refcount blocks, snapshot tables) always go to the end, free space inside the file
 *              is never reused; `compact` reclaims it.
 *
 * It is an open-time choice, not an image property: nothing of it is stored in the image.
 */
import { RequestError } from "../errors.js";
import { ALLOC_POLICIES, type AllocPolicyName } from "../types.js";

export interface AllocationPolicy {
  readonly name: AllocPolicyName;
  /**
   * The cluster a search for free clusters starts at, given the lowest cluster that may be free and the end
   * of what is in use (first cluster past the file end and past every cluster handed out; computed only
   * when the policy needs it).
   */
  searchStart(lowestFree: number, end: () => number): number;
}

const FIRST_FIT: AllocationPolicy = {
  name: "first-fit",
  searchStart: (lowestFree) => lowestFree,
};

const APPEND: AllocationPolicy = {
  name: "append",
  searchStart: (lowestFree, end) => Math.max(lowestFree, end()),
};

export function allocationPolicy(name: string = "first-fit"): AllocationPolicy {
  switch (name) {
    case "first-fit":
      return FIRST_FIT;
    case "append":
      return APPEND;
    default:
      throw new RequestError(`unknown allocation policy '${name}' (available: ${ALLOC_POLICIES.join(", ")})`);
  }
}
