#!/usr/bin/env bash
# The demo OS disk (guest-images/build-os.sh, booted by test/v86/boot-os.test.ts) is made with syslinux,
# mtools, dosfstools (mkfs.fat), fdisk (sfdisk) and e2fsprogs (mke2fs -d; the test reads the guest's file
# system back with e2fsck and debugfs). Install the Debian packages that are missing.
set -u
export PATH="$PATH:/sbin:/usr/sbin"
missing=()
command -v syslinux >/dev/null 2>&1 || missing+=(syslinux)
[ -f /usr/lib/syslinux/mbr/mbr.bin ] || missing+=(syslinux-common)
command -v mcopy >/dev/null 2>&1 || missing+=(mtools)
command -v mkfs.fat >/dev/null 2>&1 || missing+=(dosfstools)
command -v sfdisk >/dev/null 2>&1 || missing+=(fdisk)
{ command -v mke2fs >/dev/null 2>&1 && command -v debugfs >/dev/null 2>&1 && command -v e2fsck >/dev/null 2>&1; } || missing+=(e2fsprogs)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "missing ${missing[*]} and not root: install them (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing ${missing[*]} (the demo OS disk's tools)..." >&2
# apt-get update may exit non-zero when one mirror index is mid-sync; judge by the install.
apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for tool in syslinux mcopy mkfs.fat sfdisk mke2fs debugfs e2fsck; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "could not install $tool (${missing[*]})" >&2
    exit 1
  fi
done
