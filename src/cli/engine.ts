/**
 * The CLI's one door into the engine: every command imports the engine from here, so the CLI depends on
 * exactly this surface (Qcow2Image, RawDisk via openImagePath, probeFormat, the engine's types).
 */
export { Qcow2Image } from "../engine/qcow2-image.js";
export { openImagePath, probeFormat, RawDisk } from "../engine/open-path.js";
export type {
  AllocPolicyName,
  BlockFile,
  CacheMode,
  CheckResult,
  CostBreakdown,
  CreateOptions,
  ImageInfo,
  MapExtent,
  OpenOptions,
  RepairMode,
  SchemeOptionValues,
  SnapshotInfo,
  VirtualDisk,
} from "../engine/types.js";
export { NodeFile } from "../io/node-file.js";
export { ALLOC_POLICIES } from "../engine/types.js";
export { compactImage, type CompactResult } from "../engine/compact.js";
