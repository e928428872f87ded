#!/usr/bin/env bash
# The interop tests use QEMU's qemu-img and qemu-io as the oracle, and QEMU's curl driver (Debian's
# qemu-block-extra: block-curl.so) to read backing files named by URL. Install them when missing.
set -u
curl_driver() { ls /usr/lib/*/qemu/block-curl.so >/dev/null 2>&1; }
if command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1 && curl_driver; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "qemu-img/qemu-io or QEMU's curl driver not found and not root: install qemu-utils and qemu-block-extra (apt-get install qemu-utils qemu-block-extra)" >&2
  exit 1
fi
echo "installing qemu-utils and qemu-block-extra (test oracle)..." >&2
# apt-get update may exit non-zero when one mirror index is mid-sync; judge by the install.
apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils qemu-block-extra >/dev/null
if ! command -v qemu-img >/dev/null 2>&1 || ! curl_driver; then
  echo "could not install qemu-utils and qemu-block-extra" >&2
  exit 1
fi
