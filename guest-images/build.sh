#!/usr/bin/env bash
# Builds the refcow test guest into .cache/guest/ (or $REFCOW_GUEST_DIR):
#
#   bzImage            Debian bookworm i386 linux-image-6.1.0-*-686 (/boot/vmlinuz-*)
#   initramfs.cpio     busybox-static (i386) + the IDE modules (loaded by /init), the virtio-blk ones (loaded
#                      by /init when there is a virtio PCI device) and the ext4 ones (loaded on demand)
#                      (uncompressed, signatures removed, dependency order) + /init + /bin/refcow-io
#                      (refcow-io.c, when the host has a C compiler).
#                      Not compressed: gunzip of ~4 MB costs the emulated CPU ~2.5 s of boot time; a local
#                      4 MB file costs nothing.
#   bios.bin           Debian seabios  /usr/share/seabios/bios.bin
#   vgabios.bin        Debian seabios  /usr/share/seabios/vgabios-stdvga.bin
#   manifest.json      package versions, file sizes and sha256, kernel release, module load order
#
# The .debs are fetched for i386 without touching the host's dpkg/apt configuration: apt-get runs with
# APT::Architecture=i386 and private Dir::State::Lists / Dir::Cache folders under the cache, reusing the
# host's sources (/etc/apt/sources.list*). They are kept in the cache, so a rebuild (after this script or
# guest-images/init changed) does not download again. `--force` fetches the current packages anew.
#
# Idempotent: when manifest.json exists and records the same recipe hash (this script + init), the
# script exits at once. Needs: apt-get, dpkg-deb, xz, cpio, sha256sum, depmod (kmod); cpio, xz-utils
# and kmod are installed with apt-get when missing (root only).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT="${REFCOW_GUEST_DIR:-$ROOT/.cache/guest}"
WORK="$OUT/work"

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "usage: bash guest-images/build.sh [--force]" >&2; exit 2 ;;
  esac
done

TAG=guest
# shellcheck source=guest-images/lib.sh
source "$HERE/lib.sh"

# The modules /init loads at boot, in this order (each preceded by its missing dependencies from modules.dep):
# the IDE stack (libata + ata_piix + sd_mod and the CRC/T10-PI helpers sd_mod needs; the crc64-rocksoft and
# crct10dif "generic" modules register the crypto algorithms the libraries look up) -> /etc/modules.order.
MODULES=(scsi_common scsi_mod libata ata_piix crct10dif_common crc-t10dif crct10dif_generic crc64
  crc64-rocksoft crc64_rocksoft_generic t10-pi sd_mod)
# ext4 and what it needs beyond those, loaded on demand (by the fs workload, src/guest/workloads.ts) from
# /etc/modules-fs.order: loading them costs the boot over a second and only that workload mounts anything.
FS_MODULES=(crc16 mbcache jbd2 crc32c_generic ext4)
# The virtio-blk disk (refcow's own device, src/v86/virtio-blk.ts: a legacy virtio-pci device), loaded by /init
# only when a virtio PCI device (vendor 0x1af4) is present -> /etc/modules-virtio.order. Debian's 686 kernel
# builds virtio, virtio_ring, virtio_pci (with legacy support, CONFIG_VIRTIO_PCI_LEGACY=y) and virtio_blk as
# modules.
VIRTIO_MODULES=(virtio virtio_ring virtio_pci virtio_blk)

RECIPE=$(cat "${BASH_SOURCE[0]}" "$HERE/lib.sh" "$HERE/init" "$HERE/refcow-io.c" | sha256sum | cut -c1-16)
OUTPUTS=(bzImage initramfs.cpio bios.bin vgabios.bin manifest.json)

up_to_date() {
  local f
  for f in "${OUTPUTS[@]}"; do [ -s "$OUT/$f" ] || return 1; done
  grep -q "\"recipe\": \"$RECIPE\"" "$OUT/manifest.json"
}

exit_if_up_to_date "guest image"

# ---- host tools ----------------------------------------------------------------------------------------
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: the guest build needs a Debian/Ubuntu host"
need_tool dpkg-deb dpkg
need_tool xz xz-utils
need_tool cpio cpio
need_tool sha256sum coreutils
if ! command -v depmod >/dev/null 2>&1 && [ ! -x /sbin/depmod ] && [ ! -x /usr/sbin/depmod ]; then
  need_tool depmod kmod
fi
DEPMOD=$(command -v depmod || echo /sbin/depmod)
[ -x "$DEPMOD" ] || DEPMOD=/usr/sbin/depmod
# A C compiler builds refcow-io (below), so that every machine's workloads issue their requests back to back;
# installed when we can, and only missed (busybox dd fallback) when we cannot.
if ! command -v cc >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  log "installing gcc (for refcow-io)..."
  apt_install gcc 2>/dev/null || log "warning: could not install gcc: refcow-io will not be built"
fi

# ---- fetch the .debs (i386, private apt state) -------------------------------------------------------------
DEBS="$WORK/debs"
APTDIR="$WORK/apt"
APT_OPTS=(-o APT::Architecture=i386 -o APT::Architectures=i386
  -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache")
[ "$(id -u)" = 0 ] && APT_OPTS+=(-o APT::Sandbox::User=root)

have_debs() {
  compgen -G "$DEBS/linux-image-6.1.0-*-686_*_i386.deb" >/dev/null &&
    compgen -G "$DEBS/busybox-static_*_i386.deb" >/dev/null &&
    compgen -G "$DEBS/seabios_*_all.deb" >/dev/null
}

if [ "$FORCE" = 1 ] || ! have_debs; then
  rm -rf "$DEBS"
  mkdir -p "$DEBS" "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
  log "apt-get update (i386 indexes from $(ls /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null | tr '\n' ' '))..."
  if ! apt-get "${APT_OPTS[@]}" update >"$WORK/apt-update.log" 2>&1; then
    log "apt-get update reported errors (often one mirror mid-sync); carrying on if the packages are found:"
    grep -E '^(E|W):' "$WORK/apt-update.log" | head -5 | sed 's/^/[guest]   /' >&2 || true
  fi
  # The current 686 kernel: the one the linux-image-686 metapackage depends on, else the highest ABI.
  KPKG=$(apt-cache "${APT_OPTS[@]}" depends linux-image-686 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-686\)$/\1/p' | head -1 || true)
  if [ -z "$KPKG" ]; then
    KPKG=$(apt-cache "${APT_OPTS[@]}" pkgnames linux-image-6.1.0- 2>/dev/null |
      grep -E '^linux-image-6\.1\.0-[0-9]+-686$' | sort -V | tail -1 || true)
  fi
  [ -n "$KPKG" ] || die "no linux-image-6.1.0-*-686 package in the i386 index (see $WORK/apt-update.log; is bookworm main in /etc/apt/sources.list*?)"
  for p in "$KPKG" busybox-static seabios; do
    apt-cache "${APT_OPTS[@]}" show "$p" >/dev/null 2>&1 ||
      die "package '$p' not found in the i386 index (see $WORK/apt-update.log)"
  done
  log "downloading $KPKG busybox-static seabios..."
  (cd "$DEBS" && apt-get "${APT_OPTS[@]}" -q download "$KPKG" busybox-static seabios >"$WORK/apt-download.log" 2>&1) ||
    { sed 's/^/[guest]   /' "$WORK/apt-download.log" >&2; die "apt-get download failed"; }
  have_debs || die "download finished but the .debs are missing in $DEBS"
else
  log "using cached packages in $DEBS"
fi

KDEB=$(ls "$DEBS"/linux-image-6.1.0-*-686_*_i386.deb | sort -V | tail -1)
BDEB=$(ls "$DEBS"/busybox-static_*_i386.deb | tail -1)
SDEB=$(ls "$DEBS"/seabios_*_all.deb | tail -1)

# ---- extract ------------------------------------------------------------------------------------------------
X="$WORK/x"
rm -rf "$X"
mkdir -p "$X/kernel" "$X/busybox" "$X/seabios"
log "extracting packages..."
dpkg-deb -x "$KDEB" "$X/kernel"
dpkg-deb -x "$BDEB" "$X/busybox"
dpkg-deb -x "$SDEB" "$X/seabios"

VMLINUZ=$(ls "$X"/kernel/boot/vmlinuz-* | head -1)
[ -f "$VMLINUZ" ] || die "no /boot/vmlinuz-* in $KDEB"
KVER=${VMLINUZ##*/vmlinuz-}
MODROOT="$X/kernel/lib/modules/$KVER"
[ -d "$MODROOT" ] || MODROOT="$X/kernel/usr/lib/modules/$KVER"
[ -d "$MODROOT" ] || die "no lib/modules/$KVER in $KDEB"
BUSYBOX="$X/busybox/bin/busybox"
[ -x "$BUSYBOX" ] || die "no /bin/busybox in $BDEB"
for f in bios.bin vgabios-stdvga.bin; do
  [ -f "$X/seabios/usr/share/seabios/$f" ] || die "no /usr/share/seabios/$f in $SDEB"
done

# The Debian package ships no modules.dep (its postinst runs depmod): generate it in the extracted tree.
if [ ! -s "$MODROOT/modules.dep" ]; then
  log "depmod $KVER (modules.dep)..."
  "$DEPMOD" -b "${MODROOT%/lib/modules/$KVER}" "$KVER" || die "depmod failed"
fi

# ---- module load order --------------------------------------------------------------------------------------
# modules.dep: "kernel/.../a.ko.xz: kernel/.../dep1.ko.xz kernel/.../dep2.ko.xz" with the whole dependency
# closure listed, deepest last. Load order: dependencies (depth first, each once), then the module itself.
declare -A DEPLINE=() PATHOF=() LOADED=()
while IFS= read -r line; do
  mpath=${line%%:*}
  base=${mpath##*/}
  name=${base%%.ko*}
  name=${name//-/_}
  PATHOF[$name]=$mpath
  DEPLINE[$name]=${line#*:}
done <"$MODROOT/modules.dep"

ORDER=()
add_module() { # name (dashes or underscores)
  local n=${1//-/_} d dn deps i
  [ -n "${LOADED[$n]:-}" ] && return 0
  [ -n "${PATHOF[$n]:-}" ] || die "module '$1' not found in $KVER's modules.dep (built in? renamed?)"
  read -r -a deps <<<"${DEPLINE[$n]}"
  for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
    d=${deps[$i]##*/}
    dn=${d%%.ko*}
    add_module "$dn"
  done
  LOADED[$n]=1
  ORDER+=("$n")
}
for m in "${MODULES[@]}"; do add_module "$m"; done
BOOT_COUNT=${#ORDER[@]}
for m in "${FS_MODULES[@]}"; do add_module "$m"; done
FS_END=${#ORDER[@]}
for m in "${VIRTIO_MODULES[@]}"; do add_module "$m"; done

# ---- initramfs ----------------------------------------------------------------------------------------------
STAGE="$WORK/initramfs"
rm -rf "$STAGE"
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt,lib/modules}
cp "$BUSYBOX" "$STAGE/bin/busybox"
ln -s busybox "$STAGE/bin/sh"
# Applet links at build time when the i386 binary runs here; otherwise /init runs `busybox --install -s`.
if APPLETS=$("$BUSYBOX" --list-full 2>/dev/null) && [ -n "$APPLETS" ]; then
  while IFS= read -r a; do
    [ -e "$STAGE/$a" ] || ln -s /bin/busybox "$STAGE/$a"
  done <<<"$APPLETS"
  DD_USAGE=$("$BUSYBOX" dd --help 2>&1 | sed -n '/^Usage/,/^$/p' | tr -s ' \t\n' ' ' | sed 's/ $//')
else
  log "note: cannot run the i386 busybox on this host; /init will install the applet links at boot"
  DD_USAGE=""
fi
# Debian signs its modules: [ELF][PKCS#7 signature][struct module_signature: 12 bytes, sig_len a big-endian
# u32 in its last 4]["~Module signature appended~\n", 28 bytes]. The guest kernel does not enforce signatures
# (no Secure Boot lockdown under v86), and checking them — hashing every module on the emulated CPU, with a
# cold JIT — costs over a second of boot. So the signature is cut off; the kernel logs one "module
# verification failed ... tainting kernel" line, harmless here.
strip_module_signature() { # file.ko
  local f=$1 size siglen
  [ "$(tail -c 28 "$f")" = "~Module signature appended~" ] || return 0
  size=$(stat -c %s "$f")
  siglen=$(tail -c 32 "$f" | head -c 4 | od -A n -t u1 | awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 }')
  [ "$siglen" -gt 0 ] && [ $((siglen + 40)) -lt "$size" ] || die "$f: malformed module signature"
  truncate -s $((size - 40 - siglen)) "$f"
}

log "modules at boot (${BOOT_COUNT}): ${ORDER[*]:0:$BOOT_COUNT}"
log "modules on demand ($((FS_END - BOOT_COUNT))): ${ORDER[*]:$BOOT_COUNT:$((FS_END - BOOT_COUNT))}"
log "modules for a virtio disk ($((${#ORDER[@]} - FS_END))): ${ORDER[*]:$FS_END}"
: >"$STAGE/etc/modules.order"
: >"$STAGE/etc/modules-fs.order"
: >"$STAGE/etc/modules-virtio.order"
for i in "${!ORDER[@]}"; do
  n=${ORDER[$i]}
  src="$MODROOT/${PATHOF[$n]}"
  case "$src" in
    *.ko.xz) xz -dc "$src" >"$STAGE/lib/modules/$n.ko" ;;
    *.ko.zst) command -v zstd >/dev/null || need_tool zstd zstd; zstd -qdc "$src" >"$STAGE/lib/modules/$n.ko" ;;
    *.ko.gz) gzip -dc "$src" >"$STAGE/lib/modules/$n.ko" ;;
    *.ko) cp "$src" "$STAGE/lib/modules/$n.ko" ;;
    *) die "unknown module format: $src" ;;
  esac
  strip_module_signature "$STAGE/lib/modules/$n.ko"
  if [ "$i" -lt "$BOOT_COUNT" ]; then echo "$n" >>"$STAGE/etc/modules.order"
  elif [ "$i" -lt "$FS_END" ]; then echo "$n" >>"$STAGE/etc/modules-fs.order"
  else echo "$n" >>"$STAGE/etc/modules-virtio.order"; fi
done
install -m 0755 "$HERE/init" "$STAGE/init"

# refcow-io (refcow-io.c): back-to-back O_DIRECT requests at listed offsets, for the workloads. Built with the
# host's C compiler when there is one (freestanding i386: no 32-bit libc needed); without it the workloads
# fall back to one busybox dd process per request.
REFCOW_IO=false
if command -v cc >/dev/null 2>&1; then
  if cc -m32 -Os -static -nostdlib -ffreestanding -fno-pic -fno-pie -no-pie -fno-stack-protector \
    -fno-asynchronous-unwind-tables -Wl,--build-id=none -o "$STAGE/bin/refcow-io" "$HERE/refcow-io.c" \
    >"$WORK/refcow-io.log" 2>&1; then
    REFCOW_IO=true
  else
    log "warning: refcow-io did not build (see $WORK/refcow-io.log): the workloads fall back to busybox dd"
  fi
else
  log "note: no C compiler (cc): refcow-io not built; the workloads fall back to busybox dd (one process per request)"
fi
# The kernel opens /dev/console for /init before devtmpfs is mounted: give it a node when we can.
if [ "$(id -u)" = 0 ]; then
  mknod -m 600 "$STAGE/dev/console" c 5 1
  mknod -m 666 "$STAGE/dev/null" c 1 3
fi

log "writing initramfs.cpio..."
TMP="$OUT/.build.$$"
rm -rf "$TMP"
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
# Reproducible: fixed mtimes, owners and (with GNU cpio) inode numbers; the same packages give the same bytes.
find "$STAGE" -exec touch -h -d @0 {} +
CPIO_OPTS=(-o -H newc -R 0:0 --quiet)
cpio --help 2>/dev/null | grep -q -- --reproducible && CPIO_OPTS+=(--reproducible)
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio "${CPIO_OPTS[@]}") >"$TMP/initramfs.cpio"
cp "$VMLINUZ" "$TMP/bzImage"
cp "$X/seabios/usr/share/seabios/bios.bin" "$TMP/bios.bin"
cp "$X/seabios/usr/share/seabios/vgabios-stdvga.bin" "$TMP/vgabios.bin"

# ---- manifest -----------------------------------------------------------------------------------------------
json_str() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
pkg_json() { # deb
  local p v
  p=$(dpkg-deb -f "$1" Package)
  v=$(dpkg-deb -f "$1" Version)
  printf '    { "package": "%s", "version": "%s", "architecture": "%s", "deb": "%s", "sha256": "%s" }' \
    "$p" "$v" "$(dpkg-deb -f "$1" Architecture)" "$(json_str "${1##*/}")" "$(sha256sum "$1" | cut -d' ' -f1)"
}
file_json() { # name
  printf '    "%s": { "size": %s, "sha256": "%s" }' "$1" "$(stat -c %s "$TMP/$1")" "$(sha256sum "$TMP/$1" | cut -d' ' -f1)"
}
mods_json=$(printf '"%s", ' "${ORDER[@]:0:$BOOT_COUNT}")
fs_mods_json=$(printf '"%s", ' "${ORDER[@]:$BOOT_COUNT:$((FS_END - BOOT_COUNT))}")
virtio_mods_json=$(printf '"%s", ' "${ORDER[@]:$FS_END}")
{
  echo "{"
  echo "  \"recipe\": \"$RECIPE\","
  echo "  \"built\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"kernelRelease\": \"$KVER\","
  echo "  \"packages\": ["
  pkg_json "$KDEB"; echo ","
  pkg_json "$BDEB"; echo ","
  pkg_json "$SDEB"; echo
  echo "  ],"
  echo "  \"files\": {"
  file_json bzImage; echo ","
  file_json initramfs.cpio; echo ","
  file_json bios.bin; echo ","
  file_json vgabios.bin; echo
  echo "  },"
  echo "  \"modules\": [${mods_json%, }],"
  echo "  \"fsModules\": [${fs_mods_json%, }],"
  echo "  \"virtioModules\": [${virtio_mods_json%, }],"
  echo "  \"refcowIo\": $REFCOW_IO,"
  echo "  \"busyboxDdUsage\": \"$(json_str "$DD_USAGE")\""
  echo "}"
} >"$TMP/manifest.json"

for f in "${OUTPUTS[@]}"; do mv -f "$TMP/$f" "$OUT/$f"; done
rm -rf "$X" # ~200 MB of extracted kernel package; a rebuild extracts the cached .debs again
log "built in $OUT: kernel $KVER ($(dpkg-deb -f "$KDEB" Version)), busybox $(dpkg-deb -f "$BDEB" Version), seabios $(dpkg-deb -f "$SDEB" Version)"
log "initramfs $(stat -c %s "$OUT/initramfs.cpio") bytes, bzImage $(stat -c %s "$OUT/bzImage") bytes"
