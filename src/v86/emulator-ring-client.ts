/**
 * How the ring client of a disk that v86's thread drives waits for completions.
 *
 * The device reaps its disk's completions from inside v86's run loop (`pollFromEmulator`, hooked on the CPU's
 * hardware-timer step), and spins there, for as long as most requests take, only when the guest has halted.
 * The client's own spin runs elsewhere: in the microtask after the turn of v86's loop that submitted, i.e.
 * after every ~1 ms slice with a request in flight. There it holds the emulator's thread while the guest could
 * run (the next slice would poll anyway), and after a halt it spins a second time for the request whose poll
 * spin has just missed. So when the device polls, the client never spins: it reaps in `poll`, or after
 * Atomics.waitAsync wakes it (a completion raising the guest's interrupt wakes a sleeping v86 at once).
 *
 * Without polling from the run loop, the client spins for a lone request only (a virtio disk with many in
 * flight leaves the thread to the guest).
 */
import type { RingClientOptions } from "../worker/ring-client.js";

export function emulatorRingClientOptions(pollsFromRunLoop: boolean, diskType: "ide" | "virtio"): Pick<RingClientOptions, "spinMaxInFlight"> {
  if (pollsFromRunLoop) return { spinMaxInFlight: 0 };
  return diskType === "virtio" ? { spinMaxInFlight: 1 } : {};
}
