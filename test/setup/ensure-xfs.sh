#!/usr/bin/env bash
# The copy-free COW tests (test/io/reflink.test.ts, test/engine/reflink-cow.test.ts) make an XFS file system
# with reflink on a loop device: they need mkfs.xfs (Debian's xfsprogs). Install it when missing. apt-get
# update may fail while a mirror is mid-sync: what counts is whether the install succeeds.
set -u
command -v mkfs.xfs >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != "0" ]; then
  echo "mkfs.xfs not found and not root: install xfsprogs (apt-get install xfsprogs)" >&2
  exit 1
fi
echo "installing xfsprogs (copy-free COW tests)..." >&2
apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xfsprogs >/dev/null
command -v mkfs.xfs >/dev/null 2>&1 || { echo "could not install xfsprogs" >&2; exit 1; }
