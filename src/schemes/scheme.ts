/**
 * A refcount scheme decides how reference counts are maintained while an image is open. The interface it
 * implements and the handle it gets on the image (SchemeHost) are the engine's seam, in
 * src/engine/scheme-seam.ts; a scheme uses nothing of the engine beyond them. Adding a scheme means adding one
 * module that implements RefcountScheme and one line in the registry (`index.ts`).
 */
export type { ClusterKind, RefcountScheme, SchemeHost, SnapshotTools } from "../engine/scheme-seam.js";
