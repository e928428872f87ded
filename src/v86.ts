/**
 * refcow for v86 embedders in the browser (no Node built-ins): `import { openV86DiskOpfs } from "refcow/v86"`.
 * The same API as the package root's v86 part (src/v86/v86-disk.ts).
 */
export { RefcowV86Disk, hookDiskPolling, type V86DiskOptions, type V86DiskType } from "./v86/v86-disk.js";
export { openV86DiskOpfs, type OpenV86DiskOpfsOptions } from "./v86/v86-disk-web.js";
export { VirtioBlk, type VirtioBlkOptions } from "./v86/virtio-blk.js";
export { attachVirtioBlk } from "./v86/virtio-blk-v86.js";
export type { DiskDevice, DiskOp, DiskRequestObserver, RequestCompletion, RequestSubmission } from "./v86/disk-device.js";
export { asPromise, type AsyncDisk, type DiskDone, type DiskTiming, type WriteData } from "./disk/async-disk.js";
