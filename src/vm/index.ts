/**
 * v86 integration: the real Linux guest whose IDE disk is an AsyncDisk (a worker-served qcow2 image, or a
 * raw disk in memory).
 */
export type { AsyncDisk } from "./async-disk.js";
export { MemoryAsyncDisk } from "./memory-async-disk.js";
export { HdaAdapter, type DiskOp, type DiskRequestRecord, type HdaAdapterOptions, type PhaseSummary } from "./hda-adapter.js";
export { installHonestFlush, type HonestFlushHandle } from "./ide-flush.js";
export { SerialConsole, READY_MARKER, DONE_MARKER, type ConsoleMatch } from "./serial-console.js";
export { GuestRunner, DEFAULT_CMDLINE, type GuestRunnerOptions, type RunResult } from "./guest-runner.js";
export {
  ensureGuestImage,
  guestImageExists,
  guestImagePaths,
  readGuestManifest,
  v86WasmPath,
  type GuestImagePaths,
  type GuestManifest,
} from "./guest-image.js";
export { measureBoot, type BootMeasurement } from "./measure-boot.js";
