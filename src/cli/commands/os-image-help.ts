/** The text of `refcow os-image --help` and its line in `refcow --help`, kept apart so that the CLI loads the command only when it runs. */

export const OS_IMAGE_SUMMARY = "write the demo OS (Debian i386 kernel, busybox, syslinux) into a new bootable image";

export const OS_IMAGE_USAGE = "os-image [-f raw|qcow2] [--size SIZE] FILE";

export const OS_IMAGE_HELP = `
Writes the demo OS disk into FILE (which must not exist): an MBR partition table, a FAT16 boot
partition with syslinux, Debian's i386 kernel and an initrd (IDE, virtio-blk and ext4 drivers), and an
ext4 root file system (busybox, refcow-io) that gives a root shell on the serial console and on the VGA
console. 'refcow boot FILE' boots it, from IDE or virtio-blk.

  -f FMT       qcow2 (default; written through refcow's engine, 64 KiB clusters) or raw (sparse)
  --size SIZE  virtual size (default 1G, the disk's own; larger leaves free space after the partitions)

The disk is built first when missing (guest-images/build-os.sh; it builds the test guest too and reuses
its Debian packages). Progress goes to stderr.
`;
