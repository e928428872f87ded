#!/usr/bin/env bash
# test/bench/oracles.test.ts counts the benchmark's fdatasync and pwrite64 calls with strace (the kernel as
# the oracle of the accounting). Install Debian's strace when missing; without it that test is skipped.
set -u
if command -v strace >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "strace not found and not root: install it (apt-get install strace); the bench oracle test is skipped" >&2
  exit 0
fi
echo "installing strace (bench oracle)..." >&2
# apt-get update may exit non-zero when one mirror index is mid-sync; judge by the install.
apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null || echo "could not install strace; the bench oracle test is skipped" >&2
exit 0
