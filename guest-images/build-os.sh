#!/usr/bin/env bash
# Builds the refcow demo OS disk into .cache/os/ (or $REFCOW_OS_DIR): a raw disk image that SeaBIOS boots
# by itself — from IDE or from virtio-blk — with the root file system on the disk. `refcow os-image` copies
# it into a qcow2 (or raw) image of the size asked.
#
#   os.img          raw, sparse, OS_SIZE (1 GiB) virtual:
#                     sector 0         MBR: syslinux's mbr.bin boot code (boots the active partition) and
#                                      the partition table
#                     partition 1      FAT16, 32 MiB from 1 MiB, active, label REFCOW-BOOT: syslinux
#                                      (ldlinux.sys, ldlinux.c32, syslinux.cfg), vmlinuz, initrd.img
#                     partition 2      ext4 from 34 MiB to the end, label refcow-root: the root file system
#   manifest.json   recipe hash, the test guest's manifest it was made from, partition layout, kernel
#                   command line, file sizes, the tools' versions
#
# Made from what guest-images/build.sh builds (run first; its packages are reused, nothing is downloaded
# again): Debian's i386 kernel (its bzImage), and from its initramfs.cpio busybox-static, the modules (IDE,
# virtio-blk, ext4; signatures removed) in load order, and refcow-io. Nothing is mounted: the FAT partition
# is made with mkfs.fat --offset and filled with mtools, syslinux (Debian's, the mtools installer) writes
# its boot sector and ldlinux.sys into it at its offset, and `mke2fs -d` fills the ext4 partition from a
# folder at its offset.
#
#   initrd.img      busybox, the modules and guest-images/os/initramfs-init as /init: loads the disk
#                   drivers (virtio-blk when a virtio PCI device is present, else IDE) and ext4, mounts
#                   LABEL=refcow-root read-write, switch_root to its /sbin/init. Uncompressed: gunzip
#                   would cost the emulated CPU more than reading the extra bytes does.
#   root (ext4)     busybox (applet links in /bin), /sbin/init = busybox init with guest-images/os/inittab
#                   (root shells on ttyS0 and tty1, a sync and read-only remount at poweroff),
#                   /etc/init.d/rcS, /etc/profile (prompt 'refcow:/root# '), /bin/refcow-io when built.
#
# Idempotent (recipe hash of this script, guest-images/os/* and the test guest's manifest). Needs root only
# to install missing host tools: syslinux, syslinux-common, mtools, dosfstools, fdisk (sfdisk), e2fsprogs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
GUEST="${REFCOW_GUEST_DIR:-$ROOT/.cache/guest}"
OUT="${REFCOW_OS_DIR:-$ROOT/.cache/os}"
WORK="$OUT/work"
OSFILES="$HERE/os"

OS_SIZE_MIB=1024
BOOT_START_MIB=1
BOOT_SIZE_MIB=32
ROOT_START_MIB=$((BOOT_START_MIB + BOOT_SIZE_MIB + 1))
ROOT_LABEL=refcow-root
# Kept lean for the emulated CPU (the test guest's measured choices, guest-runner.ts DEFAULT_CMDLINE):
# quiet, no clocksource watchdog, no delay-loop calibration, no crypto self-tests, no ISA PnP scan, one CPU,
# no lockup timers. console=ttyS0 last: /dev/console is the serial line; kernel messages go to both.
CMDLINE="root=LABEL=$ROOT_LABEL rw console=tty0 console=ttyS0 quiet loglevel=3 tsc=reliable lpj=4000000 cryptomgr.notests noisapnp nr_cpus=1 mitigations=off nowatchdog nmi_watchdog=0"

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "usage: bash guest-images/build-os.sh [--force]" >&2; exit 2 ;;
  esac
done

TAG=os
# shellcheck source=guest-images/lib.sh
source "$HERE/lib.sh"

# The test guest first (its packages and outputs are this image's inputs); a no-op when it is current.
REFCOW_GUEST_DIR="$GUEST" bash "$HERE/build.sh" $([ "$FORCE" = 1 ] && echo --force) >&2 ||
  die "the test guest (guest-images/build.sh) did not build"

RECIPE=$( (cat "${BASH_SOURCE[0]}" "$HERE/lib.sh" "$OSFILES"/*; cat "$GUEST/manifest.json") | sha256sum | cut -c1-16)
up_to_date() {
  [ -s "$OUT/os.img" ] && [ -s "$OUT/manifest.json" ] && grep -q "\"recipe\": \"$RECIPE\"" "$OUT/manifest.json"
}
exit_if_up_to_date "demo OS image"

# ---- host tools ----------------------------------------------------------------------------------------
export PATH="$PATH:/sbin:/usr/sbin"
need_tool syslinux syslinux
need_tool mcopy mtools
need_tool mkfs.fat dosfstools
need_tool sfdisk fdisk
need_tool mke2fs e2fsprogs
need_tool cpio cpio
SYSLINUX_VERSION=$(syslinux --version 2>&1 | sed -n 1p || true)
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin
LDLINUX_C32=/usr/lib/syslinux/modules/bios/ldlinux.c32
if [ ! -f "$MBR_BIN" ] || [ ! -f "$LDLINUX_C32" ]; then
  [ "$(id -u)" = 0 ] || die "syslinux's boot files are missing and not root: install the 'syslinux-common' package"
  log "installing syslinux-common..."
  apt_install syslinux-common || die "could not install syslinux-common"
fi
[ -f "$MBR_BIN" ] || die "no $MBR_BIN (package syslinux-common)"
# mke2fs -d (fill from a folder) came with e2fsprogs 1.43.
MKE2FS_VERSION=$(mke2fs -V 2>&1 | sed -n 's/^mke2fs \([0-9][0-9.]*\).*/\1/p')
printf '%s\n1.43\n' "$MKE2FS_VERSION" | sort -V -C -r || die "mke2fs ${MKE2FS_VERSION:-?} is too old for -d (1.43 or later)"

# ---- inputs from the test guest ------------------------------------------------------------------------
for f in bzImage initramfs.cpio manifest.json; do [ -s "$GUEST/$f" ] || die "no $GUEST/$f"; done
rm -rf "$WORK"
mkdir -p "$WORK"
G="$WORK/guest-initramfs"
mkdir -p "$G"
(cd "$G" && cpio -idm --quiet <"$GUEST/initramfs.cpio") || die "cannot unpack $GUEST/initramfs.cpio"
[ -x "$G/bin/busybox" ] || die "no bin/busybox in the test guest's initramfs"
KVER=$(sed -n 's/.*"kernelRelease": "\([^"]*\)".*/\1/p' "$GUEST/manifest.json")

# busybox and its applet links (as the test guest has them: made at build time when the i386 binary runs
# here, else by `busybox --install -s` at boot).
copy_busybox() { # destination root
  mkdir -p "$1/bin" "$1/sbin" "$1/usr/bin" "$1/usr/sbin"
  cp "$G/bin/busybox" "$1/bin/busybox"
  (cd "$G" && find bin sbin usr -type l) | while read -r l; do
    [ -L "$1/$l" ] || ln -s /bin/busybox "$1/$l"
  done
  [ -L "$1/bin/sh" ] || ln -s busybox "$1/bin/sh"
}

# ---- initrd.img ----------------------------------------------------------------------------------------
I="$WORK/initrd"
mkdir -p "$I"/{etc,proc,sys,dev,newroot,lib/modules}
copy_busybox "$I"
cp "$G"/lib/modules/*.ko "$I/lib/modules/"
cp "$G"/etc/modules.order "$G"/etc/modules-fs.order "$G"/etc/modules-virtio.order "$I/etc/"
install -m 0755 "$OSFILES/initramfs-init" "$I/init"
if [ "$(id -u)" = 0 ]; then
  mknod -m 600 "$I/dev/console" c 5 1
  mknod -m 666 "$I/dev/null" c 1 3
fi
find "$I" -exec touch -h -d @0 {} +
CPIO_OPTS=(-o -H newc -R 0:0 --quiet)
cpio --help 2>/dev/null | grep -q -- --reproducible && CPIO_OPTS+=(--reproducible)
(cd "$I" && find . -mindepth 1 | LC_ALL=C sort | cpio "${CPIO_OPTS[@]}") >"$WORK/initrd.img"

# ---- root file system tree -----------------------------------------------------------------------------
R="$WORK/root"
mkdir -p "$R"/{etc/init.d,proc,sys,dev,run,tmp,mnt,root,var/log,lib/modules}
chmod 1777 "$R/tmp"
chmod 0700 "$R/root"
copy_busybox "$R"
ln -sf /bin/busybox "$R/sbin/init"
[ -x "$G/bin/refcow-io" ] && install -m 0755 "$G/bin/refcow-io" "$R/bin/refcow-io"
install -m 0644 "$OSFILES/inittab" "$R/etc/inittab"
install -m 0755 "$OSFILES/rcS" "$R/etc/init.d/rcS"
install -m 0644 "$OSFILES/profile" "$R/etc/profile"
echo refcow >"$R/etc/hostname"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
printf 'LABEL=%s / ext4 rw 0 1\n' "$ROOT_LABEL" >"$R/etc/fstab"
printf 'refcow demo OS (Debian %s kernel, busybox)\n' "$KVER" >"$R/etc/issue"
if [ "$(id -u)" = 0 ]; then
  mknod -m 600 "$R/dev/console" c 5 1
  mknod -m 666 "$R/dev/null" c 1 3
fi
find "$R" -exec touch -h -d @0 {} +

# ---- the disk ------------------------------------------------------------------------------------------
TMP="$OUT/.build.$$"
rm -rf "$TMP"
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
DISK="$TMP/os.img"
MiB=$((1024 * 1024))
truncate -s $((OS_SIZE_MIB * MiB)) "$DISK"

# Partition table: 1 = FAT16 (type 0x06), active; 2 = Linux (0x83) to the end of the disk.
sfdisk --quiet --label dos --no-reread --no-tell-kernel "$DISK" >"$WORK/sfdisk.log" 2>&1 <<EOF ||
label-id: 0x7266636f
start=$((BOOT_START_MIB * 2048)), size=$((BOOT_SIZE_MIB * 2048)), type=6, bootable
start=$((ROOT_START_MIB * 2048)), type=83
EOF
  { cat "$WORK/sfdisk.log" >&2; die "sfdisk failed"; }
# syslinux's MBR boot code: the first 440 bytes (the partition table and its signature stay).
dd if="$MBR_BIN" of="$DISK" bs=440 count=1 conv=notrunc status=none

# Partition 1: FAT16 at its offset (hidden sectors = its start, as a partitioned disk's FAT must say).
BOOT_OFF=$((BOOT_START_MIB * MiB))
mkfs.fat -F 16 -n REFCOW-BOOT -i 7266636f --offset $((BOOT_OFF / 512)) -h $((BOOT_OFF / 512)) \
  "$DISK" $((BOOT_SIZE_MIB * 1024)) >"$WORK/mkfs.fat.log" 2>&1 || { cat "$WORK/mkfs.fat.log" >&2; die "mkfs.fat failed"; }
cat >"$WORK/syslinux.cfg" <<EOF
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND $CMDLINE
EOF
export MTOOLS_SKIP_CHECK=1
mcopy -i "$DISK@@$BOOT_OFF" "$GUEST/bzImage" ::/vmlinuz
mcopy -i "$DISK@@$BOOT_OFF" "$WORK/initrd.img" ::/initrd.img
mcopy -i "$DISK@@$BOOT_OFF" "$WORK/syslinux.cfg" ::/syslinux.cfg
# The mtools installer writes the FAT boot sector and ldlinux.sys (and ldlinux.c32) into the file system at
# that offset: no mount, no loop device.
syslinux --offset "$BOOT_OFF" --install "$DISK" >"$WORK/syslinux.log" 2>&1 || { cat "$WORK/syslinux.log" >&2; die "syslinux --install failed"; }
BOOT_FILES=$(mdir -i "$DISK@@$BOOT_OFF" -a -b ::/ 2>/dev/null || true)
case "$BOOT_FILES" in
  *[Ll][Dd][Ll][Ii][Nn][Uu][Xx].[Cc]32*) ;;
  *) mcopy -i "$DISK@@$BOOT_OFF" "$LDLINUX_C32" ::/ldlinux.c32 ;;
esac

# Partition 2: ext4 filled from the tree, at its offset. Inode tables and journal are zeroed now
# (lazy_*_init=0): otherwise the guest's kernel would zero them in the background after every first mount.
ROOT_OFF=$((ROOT_START_MIB * MiB))
ROOT_KIB=$(((OS_SIZE_MIB - ROOT_START_MIB) * 1024))
mke2fs -q -F -t ext4 -L "$ROOT_LABEL" -U 7266636f-7700-4000-8000-000000000001 -E "offset=$ROOT_OFF,lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0" \
  -d "$R" "$DISK" "${ROOT_KIB}k" >"$WORK/mke2fs.log" 2>&1 || { cat "$WORK/mke2fs.log" >&2; die "mke2fs failed"; }
[ "$(stat -c %s "$DISK")" = $((OS_SIZE_MIB * MiB)) ] || die "the disk changed size while being made"

# ---- manifest ------------------------------------------------------------------------------------------
json_str() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
{
  echo "{"
  echo "  \"recipe\": \"$RECIPE\","
  echo "  \"built\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"kernelRelease\": \"$KVER\","
  echo "  \"guestManifestSha256\": \"$(sha256sum "$GUEST/manifest.json" | cut -d' ' -f1)\","
  echo "  \"size\": $((OS_SIZE_MIB * MiB)),"
  echo "  \"partitions\": ["
  echo "    { \"number\": 1, \"type\": \"0x06\", \"fs\": \"vfat\", \"label\": \"REFCOW-BOOT\", \"start\": $BOOT_OFF, \"size\": $((BOOT_SIZE_MIB * MiB)), \"bootable\": true },"
  echo "    { \"number\": 2, \"type\": \"0x83\", \"fs\": \"ext4\", \"label\": \"$ROOT_LABEL\", \"start\": $ROOT_OFF, \"size\": $((ROOT_KIB * 1024)) }"
  echo "  ],"
  echo "  \"cmdline\": \"$(json_str "$CMDLINE")\","
  echo "  \"files\": {"
  echo "    \"vmlinuz\": { \"size\": $(stat -c %s "$GUEST/bzImage") },"
  echo "    \"initrd.img\": { \"size\": $(stat -c %s "$WORK/initrd.img") }"
  echo "  },"
  echo "  \"refcowIo\": $([ -x "$R/bin/refcow-io" ] && echo true || echo false),"
  echo "  \"tools\": { \"syslinux\": \"$(json_str "$SYSLINUX_VERSION")\", \"mke2fs\": \"$MKE2FS_VERSION\" }"
  echo "}"
} >"$TMP/manifest.json"

mv -f "$DISK" "$OUT/os.img"
mv -f "$TMP/manifest.json" "$OUT/manifest.json"
rm -rf "$G" "$I" "$R"
log "built $OUT/os.img: $OS_SIZE_MIB MiB virtual, $(du -k "$OUT/os.img" | cut -f1) KiB allocated; kernel $KVER, initrd $(stat -c %s "$WORK/initrd.img") bytes"
