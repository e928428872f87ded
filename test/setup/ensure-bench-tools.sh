#!/usr/bin/env bash
# The benchmark tests (test/bench/baselines.test.ts, oracles.test.ts) count fdatasync and pwrite64 calls with
# strace, the kernel as the oracle of the accounting; fio comes with the
# NBD clients (ensure-nbd-clients.sh). Install Debian's strace when missing.
set -u
command -v strace >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != "0" ]; then
  echo "strace not found and not root: install it (apt-get install strace)" >&2
  exit 1
fi
echo "installing strace (benchmark test oracle)..." >&2
apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null
command -v strace >/dev/null 2>&1 || { echo "could not install strace" >&2; exit 1; }
