#!/usr/bin/env bash
# The copy-free COW tests (test/engine/reflink-cow.test.ts) and `npm run bench:reflink` make an XFS file
# system with reflink on a loop device (src/harness/scratch-fs.ts): they need mkfs.xfs, from Debian's
# xfsprogs. Install it when missing.
set -u
. "$(dirname "$0")/apt-ensure.sh"
ensure_package xfsprogs "copy-free COW tests" mkfs.xfs
