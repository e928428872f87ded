#!/usr/bin/env bash
# `refcow run --emulator qemu` boots the guest under qemu-system-i386. Install Debian's qemu-system-x86 when missing.
set -u
if command -v qemu-system-i386 >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "qemu-system-i386 not found and not root: install qemu-system-x86 (apt-get install qemu-system-x86)" >&2
  exit 1
fi
echo "installing qemu-system-x86 (guest runs under QEMU)..." >&2
# apt-get update may exit non-zero when one mirror index is mid-sync; judge by the install.
apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
if ! command -v qemu-system-i386 >/dev/null 2>&1; then
  echo "could not install qemu-system-x86" >&2
  exit 1
fi
