/** The text of `refcow bench --help` and its line in `refcow --help`, kept apart so that the CLI loads the command only when it runs. */

export const BENCH_SUMMARY = "the write-after-snapshot benchmark (schemes, QEMU, raw file) or the request ring's round trip";

export const BENCH_USAGE =
  "bench [--quick] [--out DIR] [--schemes a,b] [--alloc first-fit,append] [--cache writethrough,writeback] [--workloads rand4k-per-cluster,seq,trace] [--trace FILE] [--clusters N] [--reps N] [--no-qemu] [--no-fio] [--fio-depths 1,16] [--no-order-qemu] [--no-ops] [--in-process] [--no-reflink] [--shard i/N] | --ring";

export const BENCH_HELP = `usage: refcow ${BENCH_USAGE}

The write-after-snapshot benchmark: each source (every refcow scheme, eager with QEMU's flush order, a raw
file; with QEMU: qemu-nbd std and lazy_refcounts, every scheme through refcow's NBD export) writes 4 KiB per cluster at N clusters in
three phases — in-place, post-snapshot (after an internal snapshot), after-delete — in each cache mode, on a
freshly prepared image, round after round (sources rotated). Per row: per-write median and p99 (flushes
excluded), amortized per write (phase wall time ÷ writes, flushes included), close time after the phase
(deferred work done at close), amortized with the close, host bytes written per write, I/O by purpose.
Every ratio is computed within each round, then shown as the median with min–max. A source that throws or
leaves an image qemu-img check does not pass is reported as failed, with its reason, and the run exits 1.

Options:
  --quick                 fewer clusters and rounds
  --schemes a,b           refcow schemes (default: every registered scheme)
  --alloc first-fit,append  allocation policies
  --cache a,b             cache modes (default writethrough,writeback)
  --workloads a,b         rand4k-per-cluster, seq, trace
  --trace FILE            a guest trace (refcow run --trace) replayed on every scheme
  --clusters N            clusters written per phase (default 2000; --quick 200)
  --reps N                rounds (repetitions of the whole matrix)
  --no-qemu               leave out the QEMU sources
  --no-fio                leave out the fio cross-check
  --fio-depths 1,16       fio queue depths (writeback)
  --no-order-qemu         leave out eager --order qemu
  --no-ops                leave out the snapshot-operation timings
  --in-process            call the engine in the same thread instead of through the request ring
  --no-reflink            copy every COW even where the file system could share it (XFS reflink, btrfs)
  --out DIR               write results.json, report.md and report.html to DIR
  --shard i/N             run only shard i of N: every N-th cell of each part of the matrix from the i-th
                          (all rounds of a cell in one shard); \`refcow report DIR...\` merges the shards' DIRs
  --ring                  the request ring's round trip against an in-process call
`;
