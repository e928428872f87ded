#!/usr/bin/env bash
# The NBD interop tests drive `refcow nbd` with real clients: QEMU's qemu-io / qemu-img / qemu-nbd
# (qemu-utils), libnbd's nbdinfo / nbdcopy (libnbd-bin) and fio; the TLS tests make their certificates
# with openssl. Install the Debian packages that are missing.
set -u
missing=()
command -v qemu-nbd >/dev/null 2>&1 || missing+=(qemu-utils)
{ command -v nbdinfo >/dev/null 2>&1 && command -v nbdcopy >/dev/null 2>&1; } || missing+=(libnbd-bin)
command -v fio >/dev/null 2>&1 || missing+=(fio)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "missing ${missing[*]} and not root: install them (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing ${missing[*]} (NBD clients for the interop tests)..." >&2
# apt-get update may exit non-zero when one mirror index is mid-sync; judge by the install.
apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
for tool in qemu-nbd nbdinfo nbdcopy fio openssl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "could not install $tool (${missing[*]})" >&2
    exit 1
  fi
done
