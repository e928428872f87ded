/**
 * The research harness: the refcow test guest (guest-images/) on v86 with its disk on an AsyncDisk (a
 * worker-served qcow2 image, or a raw disk in memory), its workloads, and the measurement of its disk
 * requests. The devices and disks it runs on are src/v86's.
 */
export { RequestRecorder, type RequestRecorderOptions, type DiskRequestRecord, type VirtioRequestRecord, type PhaseSummary, type VirtioPhaseSummary } from "./request-recorder.js";
export { GuestDiskDevice } from "./guest-disk-device.js";
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
export { GuestSession, DEFAULT_DISK_SIZE, DEFAULT_CLUSTER_SIZE, type GuestSessionOptions, type SnapshotTimings, type LoadvmTimings } from "./guest-session.js";
export { runGuestWorkload, resolveSnapshotPhase, type GuestWorkloadOptions, type GuestWorkloadResult } from "./run-workload.js";
export { buildWorkload, patternBytes, applyContent, smokeLayout, rand4kTargets, WORKLOAD_NAMES, type Workload, type WorkloadName, type WorkloadParams, type WorkloadPhase, type ContentExtent } from "./workloads.js";
export { latencyStats, phaseStats, percentile, type LatencyStats, type PhaseStats } from "./latency-stats.js";
export { readTrace, writeTrace, parseTrace, formatTrace, traceFromRecords, TraceFormatError, TRACE_FORMAT, TRACE_VERSION, type Trace, type TraceEvent, type TraceHeader, type TraceOp } from "./trace.js";
export { obtainWarmState, prepareWarmState, loadWarmState, storeWarmState, warmStateInputs, warmStateKey, type WarmStateInputs, type WarmStateOptions } from "./warm-state.js";
