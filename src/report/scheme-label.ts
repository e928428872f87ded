import type { ResultRow } from "./results.js";

/** A refcow scheme with its allocation policy when that is not the default ("eager+append"). */
export function schemeLabel(r: Pick<ResultRow, "scheme" | "alloc">): string {
  return r.alloc && r.alloc !== "first-fit" ? `${r.scheme}+${r.alloc}` : r.scheme;
}
