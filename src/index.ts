/**
 * refcow's library API.
 *
 *  - The synchronous engine, for in-process use: `Qcow2Image` on any `BlockFile` (Node file, memory...), or
 *    `openImagePath` / `createImagePath` on paths (format probing, backing chains).
 *  - The worker-served images (`openServedImage`, `DiskClient`), for callers that must not block.
 */
export { Qcow2Image } from "./open/qcow2.js";
export { openImagePath, createImagePath, compactImagePath, probeFormat, RawDisk, type OpenedImage, type ImageFormat } from "./open/open-path.js";
export { compactImage } from "./open/qcow2.js";
export type { CompactOptions, CompactResult, MovedClusters } from "./engine/tools/compact.js";
export type { OpenOptions } from "./engine/open/open-options.js";
export { allocationPolicy, type AllocationPolicy } from "./engine/allocation/alloc-policy.js";
export * from "./engine/types.js";
export * from "./engine/errors.js";
export type { BlockFile, IoPurpose } from "./io/block-file.js";
export { IoError } from "./io/block-file.js";
export { IO_PURPOSES } from "./open/qcow2.js";
export { MemoryFile } from "./io/memory-file.js";
export { NodeFile } from "./io/node-file.js";
export { AccountingFile, diffCosts } from "./io/accounting-file.js";
export { SCHEME_NAMES, createScheme, type RefcountScheme } from "./schemes/index.js";
export { openServedImage, closeAllWorkers, ImagePool, ImageLockError, DiskClient, WorkerError } from "./worker/index.js";
export type { ServedImageOptions, RequestTiming } from "./worker/index.js";
export { asPromise, type AsyncDisk, type DiskDone, type DiskTiming, type WriteData } from "./disk/async-disk.js";
// v86: a refcow-served image as the IDE or virtio-blk disk of any `new V86({...})` (src/v86/v86-disk.ts).
export { RefcowV86Disk, hookDiskPolling, type V86DiskOptions, type V86DiskType } from "./v86/v86-disk.js";
export { openV86Disk, type OpenV86DiskOptions } from "./v86/v86-disk-node.js";
export { chooseWasmTiering, wasmTieringLoaded, type WasmTiering } from "./v86/wasm-tiering.js";
export { openV86DiskOpfs, type OpenV86DiskOpfsOptions } from "./v86/v86-disk-web.js";
export { VirtioBlk, type VirtioBlkOptions } from "./v86/virtio-blk.js";
export type { DiskDevice, DiskOp, DiskRequestObserver, RequestCompletion, RequestSubmission } from "./v86/disk-device.js";
// What the research harness measures the guest's requests with, for an embedder who wants the same.
export { RequestRecorder, type RequestRecorderOptions, type DiskRequestRecord, type VirtioRequestRecord, type PhaseSummary, type VirtioPhaseSummary } from "./guest/request-recorder.js";
export { attachVirtioBlk, type VirtioAttachOptions } from "./v86/virtio-blk-v86.js";
