/**
 * Browser stand-in for the one use of Node's `process` global in the engine (the web build injects it into
 * the worker bundle only): `process.hrtime.bigint()`, the accounting clock, in nanoseconds. In a
 * cross-origin isolated page `performance.now()` has a 5 µs resolution.
 */
export const process = {
  hrtime: {
    bigint: (): bigint => BigInt(Math.round(performance.now() * 1e6)),
  },
};
