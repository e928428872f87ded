/** The text of `refcow experiment --help` and its line in `refcow --help`, kept apart so that the CLI loads the command only when it runs. */
import { SCHEME_NAMES } from "../../schemes/index.js";
import { WORKLOAD_NAMES } from "../../guest/workloads.js";

export const EXPERIMENT_SUMMARY = "the main job: guest runs on every scheme with a snapshot mid-run, the host matrix with QEMU and a raw file, report.html";

export const EXPERIMENT_USAGE =
  "experiment [--out DIR] [--schemes a,b] [--cache writethrough,writeback] [--workload W] [--clusters N] [--disk ide|virtio] [--iodepth N] [--guest-reps N] [--emulators v86,qemu] [--qemu-backends qemu,qemu-lazy,refcow] [--accel auto|kvm|tcg] [--no-savevm] [--no-guest] [--no-bench] [--full] [--bench-clusters N] [--bench-reps N] [--no-ops] [--no-qemu] [--no-fio] [--keep DIR]";

export const EXPERIMENT_HELP = `
Runs the whole comparison and writes DIR/report.html, DIR/report.md and DIR/results.json (default DIR:
report). On a fresh machine the first run builds the guest image from Debian packages (a few minutes) and
prepares the guest's warm-start state with one cold boot; later runs resume it in well under a second.

  --out DIR          where the report goes (default report)
  --schemes a,b      refcount schemes (default all: ${SCHEME_NAMES.join(", ")})
  --cache a,b        cache modes (default writethrough,writeback)
  --workload W       guest workload: ${WORKLOAD_NAMES.join(", ")} (default rand4k)
  --clusters N       guest workload scale (default 256 clusters)
  --disk D           the guest's disk: ide (default) or virtio (refcow's virtio-blk device)
  --iodepth N        requests the guest program keeps in flight (default 1; above 1 use --disk virtio)
  --guest-reps N     runs of every guest cell, interleaved by scheme (default 3); the report gives
                     their median with min–max
  --emulators a,b    the guest's emulators: v86 (default), qemu (the same guest under qemu-system-i386,
                     'refcow run --emulator qemu'); the report sets their post ÷ in-place side by side
  --qemu-backends a,b
                     under QEMU, the image's block driver: qemu (QEMU's qcow2), qemu-lazy
                     (lazy_refcounts=on), refcow (refcow nbd, every scheme) (default all three); each
                     runs --guest-reps times, interleaved with the v86 runs; QEMU's snapshot is of the
                     disk only (use --no-savevm for like-for-like)
  --accel A          QEMU's accelerator: auto (default: KVM when usable, else TCG), kvm, tcg
  --no-savevm        snapshot the disk only (default: with the VM state, as savevm)
  --no-guest         host-side matrix only
  --no-bench         guest runs only
  --full             the full host matrix (2000 clusters, timings at 1, 4 and 16 GiB) instead of the
                     quick one (200 clusters, timings at 8, 32 and 128 MiB); both run 3 rounds
  --bench-clusters N, --bench-reps N
                     host matrix size (clusters per source, rounds)
  --no-ops           leave out the snapshot/open/close timings
  --no-qemu          leave out QEMU (qemu-nbd), the raw file through qemu-nbd, refcow's NBD export and
                     fio on purpose (the report says so; without it a missing tool fails the run)
  --no-fio           leave out the fio cross-check and the fio queue-depth benchmark
  --keep DIR         keep the guest images and traces in DIR (default: a temporary folder, removed)

QEMU's rows need qemu-img and qemu-nbd (Debian's qemu-utils), the fio check needs fio (with its nbd
engine), refcow's NBD rows need \`refcow nbd\`: a missing source is named in the report and the run exits
non-zero, unless --no-qemu left those sources out on purpose. A source or guest run that throws, or leaves an
image \`qemu-img check\` does not pass, is named in all three files with its reason (no figure of its is
used), the run goes on and writes the report, and exits non-zero.
`;
