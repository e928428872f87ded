#!/usr/bin/env bash
# The benchmark tests (test/bench/baselines.test.ts, oracles.test.ts) count fdatasync and pwrite64 calls with
# strace, the kernel as the oracle of the accounting; fio comes with the
# NBD clients (ensure-nbd-clients.sh). Install Debian's strace when missing.
set -u
. "$(dirname "$0")/apt-ensure.sh"
ensure_package strace "benchmark test oracle" strace
