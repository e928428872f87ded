#!/usr/bin/env bash
# The interop tests use QEMU's qemu-img and qemu-io as the oracle. Install Debian's qemu-utils when missing.
set -u
if command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "qemu-img/qemu-io not found and not root: install qemu-utils (apt-get install qemu-utils)" >&2
  exit 1
fi
echo "installing qemu-utils (test oracle)..." >&2
# apt-get update may exit non-zero when one mirror index is mid-sync; judge by the install.
apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils >/dev/null
if ! command -v qemu-img >/dev/null 2>&1; then
  echo "could not install qemu-utils" >&2
  exit 1
fi
