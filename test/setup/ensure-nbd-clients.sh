#!/usr/bin/env bash
# The NBD interop tests drive `refcow nbd` with real clients: QEMU's qemu-io / qemu-img / qemu-nbd
# (qemu-utils), libnbd's nbdinfo / nbdcopy (libnbd-bin) and fio; the TLS tests make their certificates
# with openssl. Install the Debian packages that are missing.
set -u
. "$(dirname "$0")/apt-ensure.sh"
why="NBD clients for the interop tests"
ensure_package qemu-utils "$why" qemu-nbd
ensure_package libnbd-bin "$why" nbdinfo nbdcopy
ensure_package fio "$why" fio
ensure_package openssl "$why" openssl
