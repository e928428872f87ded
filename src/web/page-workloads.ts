/**
 * Guest workloads the page can run: shell command lines for the guest's control loop (sent over the serial
 * console, as every command), writing a known pattern to /dev/sda with O_DIRECT so that each write reaches
 * the disk as one request of its own.
 *
 * busybox dd keeps O_DIRECT only with bs ≥ 4096 (guest-images/README.md). The region written starts at a
 * quarter of the disk, so the start of the disk (partition table probe) stays untouched.
 */

export interface PageWorkload {
  name: string;
  label: string;
  /** Prepares the pattern file in the guest's RAM (not timed). */
  setup: string;
  /** The timed part. */
  command: string;
}

const CLUSTER = 65536;

/** The workloads for a disk of `diskBytes` (at least 16 MiB). */
export function pageWorkloads(diskBytes: number): PageWorkload[] {
  const base4k = Math.floor(diskBytes / 4 / CLUSTER) * (CLUSTER / 4096); // in 4 KiB blocks, cluster-aligned
  const writes = Math.min(256, Math.floor(diskBytes / 2 / CLUSTER));
  const seq = Math.max(1, Math.floor(writes / 4));
  const pattern = "yes refcow-workload | head -c 4096 > /tmp/wl4k";
  const scattered = (extra: string) =>
    `i=0; while [ $i -lt ${writes} ]; do dd if=/tmp/wl4k of=/dev/sda bs=4096 count=1 seek=$((${base4k} + i * ${CLUSTER / 4096})) oflag=direct${extra} 2>/dev/null || exit 1; i=$((i + 1)); done`;
  return [
    {
      name: "scattered-4k",
      label: `${writes} × 4 KiB O_DIRECT writes, one per 64 KiB cluster`,
      setup: pattern,
      command: scattered(""),
    },
    {
      name: "scattered-4k-fsync",
      label: `${writes} × (4 KiB O_DIRECT write + fsync), one per 64 KiB cluster`,
      setup: pattern,
      command: scattered(" conv=fsync"),
    },
    {
      name: "sequential-64k",
      label: `${seq} × 64 KiB O_DIRECT writes, sequential`,
      setup: "yes refcow-sequential | head -c 65536 > /tmp/wl64k",
      command: `i=0; while [ $i -lt ${seq} ]; do dd if=/tmp/wl64k of=/dev/sda bs=65536 count=1 seek=$((${base4k / 16} + i)) oflag=direct 2>/dev/null || exit 1; i=$((i + 1)); done`,
    },
  ];
}
