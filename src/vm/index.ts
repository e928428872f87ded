/**
 * v86 integration: the real Linux guest whose IDE disk is an AsyncDisk (a worker-served qcow2 image, or a
 * raw disk in memory).
 */
export type { AsyncDisk, ServiceTimedDisk } from "./async-disk.js";
export { MemoryAsyncDisk } from "./memory-async-disk.js";
export { HdaAdapter, type DiskOp, type DiskRequestRecord, type HdaAdapterOptions, type PhaseSummary } from "./hda-adapter.js";
export { installHonestFlush, type HonestFlushHandle } from "./ide-flush.js";
export { SerialConsole, READY_MARKER, DONE_MARKER, PHASE_MARKER, type ConsoleMatch } from "./serial-console.js";
export { GuestRunner, DEFAULT_CMDLINE, DEFAULT_MEMORY_MIB, MACHINE_SETTINGS_ID, type GuestRunnerOptions, type RunResult } from "./guest-runner.js";
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
export { ServedAsyncDisk } from "./served-async-disk.js";
export { ZeroAsyncDisk } from "./zero-async-disk.js";
export { GuestSession, DEFAULT_DISK_SIZE, DEFAULT_CLUSTER_SIZE, probeQcow2, type GuestSessionOptions, type SnapshotTimings, type LoadvmTimings } from "./guest-session.js";
export { runGuestWorkload, resolveSnapshotPhase, type GuestWorkloadOptions, type GuestWorkloadResult } from "./run-workload.js";
export { buildWorkload, patternBytes, applyContent, smokeLayout, rand4kTargets, WORKLOAD_NAMES, type Workload, type WorkloadName, type WorkloadParams, type WorkloadPhase, type ContentExtent } from "./workloads.js";
export { latencyStats, phaseStats, percentile, type LatencyStats, type PhaseStats } from "./latency-stats.js";
export { readTrace, writeTrace, parseTrace, formatTrace, traceFromRecords, TraceFormatError, TRACE_FORMAT, TRACE_VERSION, type Trace, type TraceEvent, type TraceHeader, type TraceOp } from "./trace.js";
export { obtainWarmState, prepareWarmState, loadWarmState, storeWarmState, warmStateInputs, warmStateKey, type WarmStateInputs, type WarmStateOptions } from "./warm-state.js";
