/**
 * The guest's disk device as the harness sees it: the device (the IDE's HdaAdapter or the virtio-blk
 * device, src/v86) together with the request recorder it reports to, behind one object — the phase label
 * the runner sets, the records and per-phase summaries, and the device's idle and error state.
 */
import type { DiskDevice, DiskOp } from "../v86/disk-device.js";
import { RequestRecorder, type DiskRequestRecord, type PhaseSummary } from "./request-recorder.js";

export class GuestDiskDevice {
  readonly recorder: RequestRecorder;

  constructor(
    readonly device: DiskDevice,
    recorder?: RequestRecorder,
  ) {
    this.recorder = recorder ?? new RequestRecorder();
    device.observer = this.recorder;
  }

  get byteLength(): number {
    return this.device.byteLength;
  }

  /** Label recorded with each request from now on. */
  get phase(): string {
    return this.recorder.phase;
  }
  set phase(name: string) {
    this.recorder.phase = name;
  }

  get records(): DiskRequestRecord[] {
    return this.recorder.records;
  }

  get phases(): Map<string, PhaseSummary> {
    return this.recorder.phases;
  }

  summary(phase: string): PhaseSummary {
    return this.recorder.summary(phase);
  }

  takeRecords(): DiskRequestRecord[] {
    return this.recorder.takeRecords();
  }

  get failure(): Error | undefined {
    return this.device.failure;
  }

  get onError(): ((err: Error, op: DiskOp, offset: number, length: number) => void) | undefined {
    return this.device.onError;
  }
  set onError(f: ((err: Error, op: DiskOp, offset: number, length: number) => void) | undefined) {
    this.device.onError = f;
  }

  get pending(): number {
    return this.device.pending;
  }

  get idle(): boolean {
    return this.device.idle;
  }

  whenIdle(): Promise<void> {
    return this.device.whenIdle();
  }

  pollFromEmulator(halted: boolean): void {
    this.device.pollFromEmulator(halted);
  }

  invalidateCallbacks(): void {
    this.device.invalidateCallbacks();
  }
}
