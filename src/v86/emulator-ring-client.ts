/**
 * How the ring client of a disk that v86's thread drives waits for completions — one rule for every v86
 * disk (openV86Disk, the OPFS disk, `refcow boot`, the research harness).
 *
 * The device reaps its disk's completions from inside v86's run loop (`pollFromEmulator`), spinning there
 * while the guest is halted; the client also spins in its own continuation (the microtask after the turn of
 * v86's loop that submitted), then waits with Atomics.waitAsync. With a virtio disk many requests are in
 * flight: the client spins only for a lone one, and leaves the thread to the guest when several are queued.
 *
 * Measured: never spinning in the client when the device polls (only the halted poll's spin, then waitAsync)
 * was slower — guest IOPS this/before per repetition 0.41, 0.87, 1.02 at IDE depth 1 and 1.56, 0.59, 0.50 at
 * virtio depth 16 (`node dist/bench/emulator-time.js --reps 3 --clusters 1024 --cache writeback --sources
 * refcow --cases ide/1,virtio/16 --compare-bin`, eager, in place): on two loaded cores a thread that sleeps
 * waits to be scheduled again, and the client's spin keeps the emulator's thread on its core.
 */
import type { RingClientOptions } from "../worker/ring-client.js";

export function emulatorRingClientOptions(diskType: "ide" | "virtio"): Pick<RingClientOptions, "spinMaxInFlight"> {
  return diskType === "virtio" ? { spinMaxInFlight: 1 } : {};
}
