/**
 * The CLI's one door into the engine: every command imports the engine from here, so the CLI depends on
 * exactly this surface (Qcow2Image, RawDisk via openImagePath, probeFormat, the engine's types).
 */
export { Qcow2Image } from "../open/qcow2.js";
export { openImagePath, openLayerFile, probeFileFormat, probeFormat, RawDisk, remoteWriteRefusal, resolveBackingName } from "../open/open-path.js";
export { pinPath, writePin } from "../open/remote-pin.js";
export { isHttpUrl } from "../io/http-object.js";
export type {
  ImageOpenOptions,
  AllocPolicyName,
  BlockFile,
  CacheMode,
  CheckResult,
  CostBreakdown,
  CreateOptions,
  ImageInfo,
  MapExtent,
  RepairMode,
  SchemeOptionValues,
  SnapshotInfo,
} from "../engine/types.js";
export type { SyncDisk } from "../disk/sync-disk.js";
export type { OpenOptions } from "../engine/open/open-options.js";
export { NodeFile } from "../io/node-file.js";
export { ALLOC_POLICIES } from "../engine/types.js";
export { compactImage } from "../open/qcow2.js";
export type { CompactResult } from "../engine/tools/compact.js";
