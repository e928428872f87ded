/**
 * qemu-io's asynchronous requests (aio_read, aio_write, aio_flush). A request starts when its command runs
 * and is left in flight: through the worker's request ring several of them are outstanding at once. What a
 * request prints when it completes (its report, or its failure) is held until the session next waits for
 * I/O, as qemu-io prints completions only when its event loop runs: during a later synchronous request
 * (read, write, flush, map, truncate, ...), sleep, aio_flush, and at exit. A completion never changes the
 * exit status (qemu-io's callbacks cannot).
 */
import type { CliIo } from "./command.js";

export class AioRequests {
  private readonly inFlight = new Set<Promise<void>>();
  /** Output of completed requests, in completion order, not yet printed. */
  private readonly completed: string[] = [];

  /** Starts a request; `run` resolves with what its completion prints (and never rejects). */
  submit(run: () => Promise<string>): void {
    const p: Promise<void> = run().then(
      (text) => {
        this.completed.push(text);
        this.inFlight.delete(p);
      },
      (e: unknown) => {
        this.completed.push(`aio request failed: ${(e as Error).message}\n`);
        this.inFlight.delete(p);
      },
    );
    this.inFlight.add(p);
  }

  /** Requests started and not yet reported. */
  get outstanding(): number {
    return this.inFlight.size + this.completed.length;
  }

  /**
   * Waits for every request in flight, then prints the completions. The ring serves an image's requests in
   * submission order, so after a synchronous request has completed every earlier one has too: the wait
   * ends at once there.
   */
  async drain(io: CliIo): Promise<void> {
    while (this.inFlight.size) await Promise.all([...this.inFlight]);
    for (const text of this.completed.splice(0)) io.out(text);
  }
}
