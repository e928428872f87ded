/** The text of `refcow run --help` and its line in `refcow --help`, kept apart so that the CLI loads the command only when it runs. */
import { noReflinkHelp, schemeOptHelp } from "../help.js";
import { SCHEME_NAMES } from "../../schemes/index.js";
import { WORKLOAD_NAMES } from "../../guest/workloads.js";

export const RUN_SUMMARY = "boot the Linux guest (v86, or QEMU) on a refcow-served image, run a disk workload, print per-phase latency";

export const RUN_USAGE =
  "run [--emulator v86|qemu] [--backend qemu|qemu-lazy|refcow] [--accel auto|kvm|tcg] [--scheme S] [--scheme-opt K=V,...] [--no-reflink] [-t CACHE] [--disk ide|virtio] [--iodepth N] [--workload W] [--clusters N] [--snapshot-at PHASE|middle|none] [--savevm] [--size SIZE] [--trace FILE] [--cold] [--cuts LIST] [--kernel-args ARGS] [--output human|json] IMAGE";

export const RUN_HELP = `
Boots the refcow test guest (Debian i386 kernel + busybox, guest-images/) in v86 with IMAGE as its disk
(IDE, or refcow's virtio-blk PCI device with --disk virtio), served by refcow from a worker thread, and runs a workload inside the guest. IMAGE is created when
missing (qcow2, 64 KiB clusters, --size). The guest resumes a cached warm-start state (about 0.3 s; the
first run for a disk size prepares it with one cold boot), or boots cold with --cold.

  --emulator E        v86 (default) or qemu: the same guest under qemu-system-i386 (a cold boot each run;
                      KVM when /dev/kvm can be used, else TCG), its disk on --backend
  --backend B         with --emulator qemu, the image's block driver: refcow (default; a 'refcow nbd
                      --scheme S --cache=CACHE --monitor SOCK' reached through QEMU's nbd driver), qemu
                      (QEMU's qcow2 driver) or qemu-lazy (the same with lazy_refcounts=on). The snapshot
                      in the middle is taken live: over QMP (blockdev-snapshot-internal-sync) or the
                      export's control socket (snapshot -c). Only the guest program's clock (app) and the
                      phase's wall time are measured under QEMU; --trace, --cuts, --savevm, --cold are
                      v86's
  --accel A           with --emulator qemu: auto (default), kvm or tcg
  --scheme S          refcount scheme: ${SCHEME_NAMES.join(", ")} (default eager)
${schemeOptHelp(22)}${noReflinkHelp(22)}  -t CACHE            cache mode: writethrough, writeback (default), unsafe
  --disk D            the guest's disk: ide (default; v86's IDE, one command at a time) or virtio
                      (refcow's virtio-blk device, src/v86/virtio-blk.ts: many requests in flight)
  --iodepth N         requests the guest program keeps in flight (rand4k, overwrite; 1-64, default 1;
                      above 1 through io_uring; only a virtio disk serves them concurrently)
  --workload W        ${WORKLOAD_NAMES.join(", ")} (default smoke)
  --clusters N        workload scale: target clusters (rand4k), region clusters (seq, overwrite), files (fs)
  --seed N            seed of the guest's random orders (default 1)
  --snapshot-at P     take an internal snapshot just before phase P; 'middle' (default) is the
                      workload's (before post-snapshot; smoke: before overwrite); 'none' for no snapshot
  --snapshot-name N   snapshot name (default refcow-run, made unique)
  --savevm            store the guest's machine state in the snapshot too (as QEMU's savevm)
  --size SIZE         virtual size when IMAGE is created (default 256M)
  --trace FILE        write every disk request of the workload to FILE (refcow-trace, src/guest/trace.ts)
  --cold              boot cold instead of resuming the warm-start state
  --memory MIB        guest RAM (default 128)
  --kernel-args ARGS  appended to the guest kernel's command line (e.g. libata.force=pio4 to make the
                      guest use PIO instead of bus-master DMA); a warm-start state is prepared for them
  --output FMT        human (default) or json; --json-out FILE also writes the JSON result to FILE
  --cuts LIST         the cuts of the delay between guest and engine that are on: all (default), none,
                      or a list of spin (spins sized from observed times), wake (completions delivered
                      from inside v86's run loop), nocopy (DMA writes not copied); for measuring each

Workloads announce their phases on the serial console. Every request is timed by four clocks, reported
per phase (median and p99 in µs; --output json adds count, p90 and max): app, the guest program's system
call (its own CLOCK_MONOTONIC); device, v86's disk request to its completion callback; ring, the request
in the worker ring's client; engine, the worker's own time. app − engine is what the emulator adds.
The guest image is built first when it is missing (guest-images/build.sh). Progress goes to stderr. The
image is closed cleanly at the end ('qemu-img check' passes).
`;
