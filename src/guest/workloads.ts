/**
 * Guest workloads: what the Linux guest does to its disk, by name, as one shell command line per phase.
 *
 * Each phase's command prepares what it needs in the guest's RAM (/tmp), announces the phase on the
 * console (`REFCOW-PHASE <name>`, then waits for the host's empty-line reply; see serial-console.ts), and
 * runs the phase's I/O as a loop inside the guest — one serial round trip per phase, not per request, so the
 * console protocol adds nothing to the measured latencies. A phase exits non-zero when any step fails.
 *
 * The write workloads share one shape for the question refcow asks (what a snapshot does to later writes):
 *
 *   fill           every target cluster is written once (allocation)
 *   in-place       the same writes again: clusters allocated, refcount 1, written in place
 *   post-snapshot  the same writes after the snapshot: every target cluster is shared, so each first write
 *                  to it copies it (COW)
 *
 * and `--snapshot-at middle` means "just before post-snapshot" (`Workload.middle`).
 *
 *   smoke      (default) 8 KiB of a pattern at 8 places across the disk (each straddling a cluster boundary),
 *              then half of them partly overwritten, then all read back and compared in the guest.
 *              Phases: write, overwrite, verify; middle = overwrite.
 *   rand4k     raw-device 4 KiB writes with O_DIRECT, one per cluster, at the start of N target clusters
 *              spread evenly over the disk, in a random order (a different one per phase), then one fsync.
 *   seq        sequential O_DIRECT writes over the first N clusters (up to 256 KiB per request), fsync.
 *   overwrite  the first N clusters filled sequentially, then 2N random 4 KiB O_DIRECT writes inside them
 *              per phase (repeat hits included), fsync.
 *   fs         a file system: busybox's mke2fs (it only makes ext2: busybox has no mkfs.ext4 and no
 *              tune2fs to add a journal) mounted with the kernel's ext4 driver; N files of 64 KiB written
 *              and synced; then the first 4 KiB of each rewritten in place (conv=notrunc) and synced, before
 *              and after the snapshot; then unmounted. Phases: mkfs, fill, in-place, post-snapshot, unmount.
 *
 * rand4k and overwrite issue their writes back to back with the guest's `refcow-io` (queue depth 1, as fio
 * or qemu-img bench would), which also times each of them and its closing fdatasync with the guest's clock
 * (`REFCOW-IO` lines in the phase's output, guest-io-report.ts), or with one busybox dd per write in a guest
 * image built without a C compiler. Before their in-place phase is announced (untimed, counted by no phase),
 * refcow-io writes that phase's pattern at its offsets, thousands of times in all, so that v86 has
 * compiled the guest's write path before the two compared phases (see guestWarmUpRequests).
 *
 * Busybox dd (1.35): O_DIRECT stays on only with bs >= 4096 (else dd silently drops it); `oflag=seek_bytes`
 * / `iflag=skip_bytes` take byte offsets; `conv=fsync` is one fsync after the last block (an fsync of
 * /dev/sda sends the disk a FLUSH CACHE, which the honest-flush patch hands to the engine).
 *
 * Patterns are `yes WORD` streams (WORD + "\n" repeated), so the host can compute every byte the
 * deterministic workloads write (`Workload.content`, `patternBytes`) without trusting the guest.
 */

export const WORKLOAD_NAMES = ["smoke", "rand4k", "seq", "overwrite", "fs"] as const;
export type WorkloadName = (typeof WORKLOAD_NAMES)[number];

export interface WorkloadParams {
  /** Virtual disk size in bytes. */
  diskSize: number;
  /** The image's cluster size in bytes. */
  clusterSize: number;
  /**
   * Scale: target clusters (rand4k; default 256), clusters of the region (seq, overwrite; default 256),
   * files (fs; default 128). Ignored by smoke.
   */
  clusters?: number;
  /** Seed of the guest's random orders (busybox awk srand; default 1). */
  seed?: number;
  /**
   * Requests refcow-io keeps in flight (rand4k, overwrite; default 1: one at a time, pwrite64). Above 1 it
   * submits them with io_uring (O_DIRECT), which only a disk with a queue (virtio-blk) serves
   * concurrently; IDE takes one command at a time.
   */
  iodepth?: number;
}

export interface WorkloadPhase {
  name: string;
  /** One guest shell command line (see the module comment). */
  command: string;
  /** Time the phase may take, in ms. */
  timeoutMs: number;
  description: string;
}

/** `length` bytes of the `yes word` stream written at `offset` in `phase`. */
export interface ContentExtent {
  phase: string;
  offset: number;
  length: number;
  word: string;
}

export interface Workload {
  name: WorkloadName;
  description: string;
  phases: WorkloadPhase[];
  /** The phase `--snapshot-at middle` snapshots before. */
  middle: string;
  /** Every byte the workload writes, in order, when it is deterministic (smoke, rand4k, seq). */
  content?: ContentExtent[];
}

const KiB = 1024;
const BLOCK = 4096;

/** The first `length` bytes of the `yes word` stream. */
export function patternBytes(word: string, length: number): Uint8Array {
  const line = new TextEncoder().encode(word + "\n");
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i += line.length) out.set(line.subarray(0, Math.min(line.length, length - i)), i);
  return out;
}

/** Applies the content extents of the phases in `phases` (all when absent), in order, onto `disk`. */
export function applyContent(disk: Uint8Array, content: readonly ContentExtent[], phases?: readonly string[]): Uint8Array {
  for (const c of content) if (!phases || phases.includes(c.phase)) disk.set(patternBytes(c.word, c.length), c.offset);
  return disk;
}

/** The line a workload's phase begins with: the announcement, then the wait for the host's go (serial-console.ts). */
export function announcePhase(phase: string): string {
  return `echo REFCOW-PHASE ${phase}; read -r _ </dev/ttyS0`;
}

const FSYNC = "dd if=/dev/null of=$DISK count=0 conv=notrunc,fsync 2>/dev/null || exit 1";

/**
 * A guest line writing /tmp/blk (4 KiB) at each byte offset listed in /tmp/order, with O_DIRECT, `iodepth`
 * requests at a time (io_uring with a registered buffer and file; one at a time with pwrite64 when 1), then one fdatasync: back to back with refcow-io (guest-images/refcow-io.c), which times every
 * request with the guest's clock and prints its REFCOW-IO report, when the guest image has it; else with one
 * busybox dd process per request (about 25 ms apart under v86) and a dd fsync.
 */
export const writeListedOffsetsAndSync = (iodepth = 1): string =>
  `if [ -x /bin/refcow-io ]; then refcow-io write $DISK /tmp/blk sync${iodepth > 1 ? ` depth=${iodepth} uring` : ""} </tmp/order || exit 1; ` +
  `else for o in $(cat /tmp/order); do dd if=/tmp/blk of=$DISK bs=4096 count=1 seek=$o oflag=seek_bytes,direct conv=notrunc 2>/dev/null || exit 1; done; ${FSYNC}; fi`;

/** The most offsets refcow-io takes in one run at a depth above 1 (guest-images/refcow-io.c). */
const REFCOW_IO_MAX_QUEUED = 65536;

/**
 * Writes issued before a workload's in-place phase, outside every phase: v86 compiles a page of guest code
 * (its JIT) only once it has interpreted 200,000 instructions on it (jit.rs JIT_THRESHOLD), and a fresh
 * emulator (a warm start restores memory, not compiled code) interprets the guest's write path until then, at
 * a quarter to a tenth of its compiled speed (the floors below). Without these writes the two phases a workload compares
 * (in-place, post-snapshot) would meet the guest at different stages of that warm-up, the earlier phase at
 * the slower one, and a queue depth would be compared with another at different stages too.
 *
 * How many: the heat is counted in instructions, so the count needed does not depend on the host's speed or
 * load. Code run once per request (the system call's per-request part, the driver's queue_rq, the completion
 * of one request) heats with every request; code run once per batch (the io_uring_enter, the driver's
 * notify, the interrupt) once per `iodepth` requests. Measured on an in-memory disk that completes at once
 * (guest-clock IOPS of successive runs of 2048 writes after a warm start, the floor's path; the write count
 * before each run in thousands):
 *
 *   IDE             2k 1300, 4k 3000, 6k 5000, then 4900-5900 up to 40k      settled after ~8000 writes
 *   virtio depth 1  2k 1500, 4k 3700, 6k 5500, 8k 8200, then 7500-9300       ~8000
 *   virtio depth 4  2k 1700, 4k 2900, 6k 5400, 10k 10500, 14k 16000, 20k 19400 ~14000
 *   virtio depth 16 2k 3600, 4k 5600, 8k 8200, 10k 15400, 12k-32k 12000-33000, 36k-80k 29000-43000
 *
 * and, behind the worker-served engine (eager, writeback, in place, 2048 writes), depth 16 ran at 8000-18000
 * IOPS (52-118 million guest instructions a second) after 16384 warm-up writes and at 20600-30600 (121-161)
 * after 32768. So 16384 requests, and 2048 batches of `iodepth` where that is more, up to the 65536 offsets
 * refcow-io takes in one run at a depth.
 */
export function guestWarmUpRequests(iodepth = 1): number {
  return Math.min(REFCOW_IO_MAX_QUEUED, Math.max(16384, 2048 * Math.max(1, iodepth)));
}

/**
 * A guest line writing /tmp/blk at each offset of /tmp/order, over and over, guestWarmUpRequests(iodepth)
 * times in all, with O_DIRECT and the refcow-io path (depth, io_uring) the phases use, then one fdatasync; its
 * report discarded. It runs in the prep of the in-place phase, before the phase is announced (no phase counts
 * it: the host labels its requests idle), on clusters the fill has allocated, with that phase's pattern and
 * offsets: the phase then writes the same bytes at the same places, so no byte of the disk ends otherwise.
 * Nothing when the guest image has no refcow-io (its dd fallback is not timed per request).
 */
export const warmUpWrites = (listed: number, iodepth = 1): string => {
  const per = Math.max(1, listed);
  let passes = Math.ceil(guestWarmUpRequests(iodepth) / per);
  // refcow-io holds at most REFCOW_IO_MAX_QUEUED offsets at a depth above 1.
  if (iodepth > 1) passes = Math.max(1, Math.min(passes, Math.floor(REFCOW_IO_MAX_QUEUED / per)));
  return (
    `if [ -x /bin/refcow-io ]; then i=0; while [ $i -lt ${passes} ]; do cat /tmp/order; i=$((i+1)); done > /tmp/warm; ` +
    `refcow-io write $DISK /tmp/blk sync${iodepth > 1 ? ` depth=${iodepth} uring` : ""} </tmp/warm >/dev/null || exit 1; rm -f /tmp/warm; fi`
  );
};

/** awk printing `n` values `scale * k`, k a random permutation of 0..n-1 (Fisher-Yates, seeded). */
export function shuffledOffsets(n: number, scale: number, seed: number): string {
  return (
    `awk -v n=${n} -v s=${seed} 'BEGIN{srand(s);for(i=0;i<n;i++)a[i]=i;` +
    `for(i=n-1;i>0;i--){j=int(rand()*(i+1));t=a[i];a[i]=a[j];a[j]=t};for(i=0;i<n;i++)print a[i]*${scale}}' > /tmp/order`
  );
}

/** awk printing the byte offsets of `n` random 4 KiB blocks in [0, blocks), seeded. */
function randomOffsets(n: number, blocks: number, seed: number): string {
  return `awk -v n=${n} -v b=${blocks} -v s=${seed} 'BEGIN{srand(s);for(i=0;i<n;i++)print int(rand()*b)*${BLOCK}}' > /tmp/order`;
}

/** Time allowed per warm-up write in a phase's prep (a hang guard: on a loaded two-core machine v86 took ~8 ms). */
const WARM_UP_MS_PER_WRITE = 20;

/** `prepWrites`: writes the prep issues before the phase is announced (the warm-up), counted in its time limit. */
function phase(name: string, description: string, prep: string, body: string, requests: number, prepWrites = 0): WorkloadPhase {
  const parts = [prep, announcePhase(name), body].filter((p) => p.length > 0);
  return { name, description, command: parts.join("; "), timeoutMs: 120_000 + requests * 1000 + prepWrites * WARM_UP_MS_PER_WRITE };
}

function checkParams(p: WorkloadParams): void {
  if (!Number.isSafeInteger(p.diskSize) || p.diskSize < 1 << 20 || p.diskSize % 512 !== 0) {
    throw new RangeError(`the guest workloads need a disk of at least 1 MiB (a multiple of 512 bytes), got ${p.diskSize}`);
  }
  const cs = p.clusterSize;
  if (!Number.isSafeInteger(cs) || cs < 512 || (cs & (cs - 1)) !== 0) throw new RangeError(`invalid cluster size ${cs}`);
  if (p.clusters !== undefined && (!Number.isSafeInteger(p.clusters) || p.clusters < 1)) throw new RangeError(`invalid cluster count ${p.clusters}`);
}

/** Builds the workload `name` for a disk. Throws a RangeError naming the valid workloads for a bad name. */
export function buildWorkload(name: string, params: WorkloadParams): Workload {
  checkParams(params);
  switch (name) {
    case "smoke":
      return smoke(params);
    case "rand4k":
      return rand4k(params);
    case "seq":
      return seq(params);
    case "overwrite":
      return overwrite(params);
    case "fs":
      return fs(params);
  }
  throw new RangeError(`unknown workload '${name}' (available: ${WORKLOAD_NAMES.join(", ")})`);
}

// ---------------------------------------------------------------------------------------------------- smoke

/** Where smoke writes: 8 KiB at 60 KiB past each eighth of the disk (4 KiB-aligned). */
export function smokeLayout(diskSize: number): { offsets: number[]; length: number; overwriteDelta: number; overwriteLength: number } {
  const offsets: number[] = [];
  for (let i = 0; i < 8; i++) offsets.push(Math.floor((i * diskSize) / 8 / BLOCK) * BLOCK + 60 * KiB);
  return { offsets, length: 8 * KiB, overwriteDelta: 2 * KiB, overwriteLength: 4 * KiB };
}

function smoke(p: WorkloadParams): Workload {
  const L = smokeLayout(p.diskSize);
  const a = "refcow-smoke-a";
  const b = "refcow-smoke-b";
  const odd = L.offsets.filter((_, i) => i % 2 === 1);
  const even = L.offsets.filter((_, i) => i % 2 === 0);
  const content: ContentExtent[] = [
    ...L.offsets.map((offset) => ({ phase: "write", offset, length: L.length, word: a })),
    ...odd.map((o) => ({ phase: "overwrite", offset: o + L.overwriteDelta, length: L.overwriteLength, word: b })),
  ];
  const patA = `yes ${a} | head -c ${L.length} > /tmp/a`;
  const patB = `yes ${b} | head -c ${L.overwriteLength} > /tmp/b`;
  const readCmp = (offs: number[], file: string) =>
    `for o in ${offs.join(" ")}; do dd if=$DISK bs=${L.length} count=1 skip=$o iflag=skip_bytes,direct 2>/dev/null | cmp -s - ${file} || { echo "REFCOW-MISMATCH at byte $o"; exit 1; }; done`;
  return {
    name: "smoke",
    description: "8 KiB patterns at 8 places (O_DIRECT, fsync), half of them partly overwritten, all read back and compared in the guest",
    middle: "overwrite",
    content,
    phases: [
      phase(
        "write",
        "8 KiB of pattern a at 8 places, each straddling a cluster boundary; fsync",
        patA,
        `for o in ${L.offsets.join(" ")}; do dd if=/tmp/a of=$DISK bs=${L.length} count=1 seek=$o oflag=seek_bytes,direct conv=notrunc 2>/dev/null || exit 1; done; ${FSYNC}`,
        9,
      ),
      phase(
        "overwrite",
        "4 KiB of pattern b over the middle of every other one; fsync",
        patB,
        `for o in ${odd.map((o) => o + L.overwriteDelta).join(" ")}; do dd if=/tmp/b of=$DISK bs=${L.overwriteLength} count=1 seek=$o oflag=seek_bytes,direct conv=notrunc 2>/dev/null || exit 1; done; ${FSYNC}`,
        5,
      ),
      phase(
        "verify",
        "read all 8 back with O_DIRECT and compare in the guest",
        `${patA}; ${patB}; { head -c ${L.overwriteDelta} /tmp/a; cat /tmp/b; tail -c ${L.length - L.overwriteDelta - L.overwriteLength} /tmp/a; } > /tmp/ab`,
        `${readCmp(even, "/tmp/a")}; ${readCmp(odd, "/tmp/ab")}`,
        8,
      ),
    ],
  };
}

// --------------------------------------------------------------------------------------------------- rand4k

/** The byte offsets rand4k writes at: the start of N clusters spread evenly over the disk. */
export function rand4kTargets(p: WorkloadParams): number[] {
  const unit = Math.max(p.clusterSize, BLOCK);
  const n = Math.min(p.clusters ?? 256, Math.floor(p.diskSize / unit));
  const stride = Math.floor(p.diskSize / n / unit) * unit;
  return Array.from({ length: n }, (_, i) => i * stride);
}

function rand4k(p: WorkloadParams): Workload {
  const targets = rand4kTargets(p);
  const n = targets.length;
  const stride = n > 1 ? targets[1]! : 0;
  const seed = p.seed ?? 1;
  const names = ["fill", "in-place", "post-snapshot"] as const;
  const what = {
    fill: "allocates every target cluster",
    "in-place": "rewrites them: allocated, refcount 1",
    "post-snapshot": "rewrites them after the snapshot: every write hits a shared cluster",
  };
  return {
    name: "rand4k",
    description: `4 KiB O_DIRECT writes, one per cluster, to ${n} clusters spread over the disk in random order, then fsync`,
    middle: "post-snapshot",
    content: names.flatMap((ph) => targets.map((offset) => ({ phase: ph, offset, length: BLOCK, word: `refcow-rand4k-${ph}` }))),
    phases: names.map((ph, k) =>
      phase(
        ph,
        `${n} random-order 4 KiB writes at cluster starts; ${what[ph]}; fsync`,
        `yes refcow-rand4k-${ph} | head -c ${BLOCK} > /tmp/blk; ${shuffledOffsets(n, stride, seed + k)}${ph === "in-place" ? `; ${warmUpWrites(n, p.iodepth)}` : ""}`,
        writeListedOffsetsAndSync(p.iodepth),
        n + 1,
        ph === "in-place" ? guestWarmUpRequests(p.iodepth) : 0,
      ),
    ),
  };
}

// ------------------------------------------------------------------------------------------ seq, overwrite

/** The region seq and overwrite write: the first N clusters, rounded down to 4 KiB blocks. */
function region(p: WorkloadParams): { bytes: number; blocks: number; bs: number; count: number } {
  const want = Math.min((p.clusters ?? 256) * p.clusterSize, p.diskSize);
  const blocks = Math.max(1, Math.floor(want / BLOCK));
  let bsBlocks = 64; // 256 KiB requests at most
  while (blocks % bsBlocks !== 0) bsBlocks >>= 1;
  return { bytes: blocks * BLOCK, blocks, bs: bsBlocks * BLOCK, count: blocks / bsBlocks };
}

function sequentialWrite(word: string, r: ReturnType<typeof region>): string {
  return `yes ${word} | dd of=$DISK bs=${r.bs} count=${r.count} iflag=fullblock oflag=direct conv=notrunc,fsync 2>/dev/null || exit 1`;
}

function seq(p: WorkloadParams): Workload {
  const r = region(p);
  const names = ["fill", "in-place", "post-snapshot"] as const;
  return {
    name: "seq",
    description: `sequential O_DIRECT writes of ${r.bs / KiB} KiB over the first ${r.bytes / KiB} KiB, then fsync`,
    middle: "post-snapshot",
    content: names.map((ph) => ({ phase: ph, offset: 0, length: r.bytes, word: `refcow-seq-${ph}` })),
    phases: names.map((ph) => phase(ph, `${r.count} sequential ${r.bs / KiB} KiB writes; fsync`, "", sequentialWrite(`refcow-seq-${ph}`, r), r.count + 1)),
  };
}

function overwrite(p: WorkloadParams): Workload {
  const r = region(p);
  const m = 2 * Math.ceil(r.bytes / p.clusterSize);
  const seed = p.seed ?? 1;
  const rewrite = (ph: string, k: number) =>
    phase(
      ph,
      `${m} random 4 KiB writes inside the region (repeats included); fsync`,
      `yes refcow-overwrite-${ph} | head -c ${BLOCK} > /tmp/blk; ${randomOffsets(m, r.blocks, seed + k)}${ph === "in-place" ? `; ${warmUpWrites(m, p.iodepth)}` : ""}`,
      writeListedOffsetsAndSync(p.iodepth),
      m + 1,
      ph === "in-place" ? guestWarmUpRequests(p.iodepth) : 0,
    );
  return {
    name: "overwrite",
    description: `the first ${r.bytes / KiB} KiB filled sequentially, then ${m} random 4 KiB O_DIRECT overwrites inside it per phase`,
    middle: "post-snapshot",
    phases: [
      phase("fill", `${r.count} sequential ${r.bs / KiB} KiB writes over the region; fsync`, "", sequentialWrite("refcow-overwrite-fill", r), r.count + 1),
      rewrite("in-place", 1),
      rewrite("post-snapshot", 2),
    ],
  };
}

// ------------------------------------------------------------------------------------------------------- fs

/** Loads ext4 and its helpers unless the kernel has it (the guest image loads them on demand). */
const LOAD_EXT4 =
  "grep -qw ext4 /proc/filesystems || { while read -r m; do insmod /lib/modules/$m.ko || exit 1; done </etc/modules-fs.order; }";

function fs(p: WorkloadParams): Workload {
  const fileSize = 64 * KiB;
  const n = Math.max(1, Math.min(p.clusters ?? 128, Math.floor(p.diskSize / 2 / fileSize)));
  const eachFile = (body: string) => `i=0; while [ $i -lt ${n} ]; do ${body} || exit 1; i=$((i+1)); done`;
  const rewrite = (ph: string) =>
    phase(
      ph,
      `the first 4 KiB of each of the ${n} files rewritten in place; sync`,
      `yes refcow-fs-${ph} | head -c ${BLOCK} > /tmp/blk`,
      `${eachFile("dd if=/tmp/blk of=/mnt/f$i bs=4096 count=1 conv=notrunc 2>/dev/null")}; sync`,
      n * 4,
    );
  return {
    name: "fs",
    description: `ext2 made by busybox mke2fs, mounted with the ext4 driver; ${n} files of 64 KiB written, then rewritten in place`,
    middle: "post-snapshot",
    phases: [
      phase("mkfs", "mke2fs -b 4096 on the test disk (ext2), mounted on /mnt with the ext4 driver; sync", LOAD_EXT4, "mke2fs -F -b 4096 $DISK >/dev/null && mkdir -p /mnt && mount -t ext4 $DISK /mnt && sync", 2000),
      phase("fill", `${n} files of 64 KiB written; sync`, `yes refcow-fs-fill | head -c ${fileSize} > /tmp/f64`, `${eachFile("cp /tmp/f64 /mnt/f$i")}; sync`, n * 20),
      rewrite("in-place"),
      rewrite("post-snapshot"),
      phase("unmount", "umount /mnt (writes back and flushes)", "", "umount /mnt", 100),
    ],
  };
}
