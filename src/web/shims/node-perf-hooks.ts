/** Browser stand-in for `node:perf_hooks` (the web build aliases it here): the platform's own clock. */
export const performance = globalThis.performance;
