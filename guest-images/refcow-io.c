/*
 * refcow-io: scattered direct I/O for the refcow test guest (i386 Linux, freestanding: no libc), timed by the
 * guest itself.
 *
 *   refcow-io write DEVICE BLOCKFILE [sync] [depth=N [uring]] < offsets   write BLOCKFILE's bytes at each offset
 *   refcow-io read  DEVICE BLOCKFILE [depth=N [uring]] < offsets          read as many bytes from each offset
 *
 * BLOCKFILE (1 byte to 1 MiB, a multiple of 512) is read into a page-aligned buffer; DEVICE is opened with
 * O_DIRECT; stdin holds decimal byte offsets, one per line (multiples of 512). The requests are issued one
 * at a time, back to back, in stdin's order (pwrite64 / pread64): queue depth 1, as fio or qemu-img bench
 * would, where busybox dd needs one process per request (about 25 ms apart under v86). With `sync`, one
 * fdatasync of DEVICE follows the last write (the disk gets a FLUSH CACHE).
 *
 * With depth=N (2..64) the requests are kept N in flight with Linux AIO instead: io_setup(N), then one
 * io_submit for as many requests as there are free slots (one iocb each, IOCB_CMD_PWRITE / PREAD on the
 * O_DIRECT descriptor: truly asynchronous on a block device), and io_getevents(min 1) for completions: the
 * requests a completion batch freed are submitted together, as qemu's linux-aio does (the kernel plugs the
 * queue across one io_submit, so the virtio driver notifies the device once per batch, and the guest pays
 * one system call for the batch). A request is timed from right before its io_submit to right after the
 * io_getevents that returned it. With `uring` as well, io_uring instead of Linux AIO: the buffer and the
 * device registered once (IORING_REGISTER_BUFFERS / FILES: no page pinning and no file lookup per request),
 * WRITE_FIXED / READ_FIXED entries queued in the submission ring for every free slot, and one
 * io_uring_enter both submits them and waits for the next completion (the workloads use this mode: on v86
 * it costs the guest ~16% fewer instructions per request than Linux AIO at depth 16). A request is timed
 * from right before the io_uring_enter that submitted it to right after the one that returned its
 * completion. All requests share the one buffer (the same bytes for writes; reads are dropped). At most
 * 65536 offsets in these modes.
 *
 * Every request is timed with the CPU's time-stamp counter (rdtsc: one instruction, no system call) right
 * before and right after its system call; the ticks become CLOCK_MONOTONIC ns at report time. The tick rate
 * is learnt from the clock itself: CLOCK_MONOTONIC (the clock_gettime system call) is read beside the TSC
 * once at the start and once before each report, and each report converts with the rate over the whole
 * span since the start, counted from the previous reading (the first report's times run from the first
 * reading to where CLOCK_MONOTONIC was when it was made, and a later report never goes back in time). Under v86 the guest's TSC runs at a fixed
 * nominal 1 GHz of host time, and the kernel's CLOCK_MONOTONIC runs on that TSC: the two only differ by the
 * rate the kernel calibrated. Two clock_gettime calls per phase instead of two per request: on v86 each
 * costs the emulated CPU a kernel entry and exit. After the last request, one line per kind of request goes
 * to stdout:
 *
 *   REFCOW-IO <op> <count> <t0> <pairs>
 *
 *   op     write | read | fdatasync
 *   count  requests timed (the first 65536 of a run are kept)
 *   t0     CLOCK_MONOTONIC at the start of the first request, in ns (decimal)
 *   pairs  for each request in order: the ns from the previous request's start (the first: from t0, i.e. 0)
 *          and the ns its system call took, each as a varint of base-64 digits: least significant 5 bits
 *          first, a digit's value is its index in [0-9A-Za-z._] and its bit 5 (value >= 32) says "more
 *          digits follow". No separators (digits never include a space).
 *
 * Nothing else is printed on success; a failure prints "refcow-io: <what> failed at offset N (error E)" on
 * stderr and exits 1; bad usage exits 2. The host side (parsing, clock check) is src/guest/guest-io-report.ts.
 *
 * Built by build.sh with the host's C compiler: cc -m32 -static -nostdlib -ffreestanding (no 32-bit libc
 * needed). System calls go through int $0x80 with the i386 numbers below.
 */

#define SYS_exit_group 252
#define SYS_read 3
#define SYS_write 4
#define SYS_open 5
#define SYS_close 6
#define SYS_pread64 180
#define SYS_pwrite64 181
#define SYS_fdatasync 148
#define SYS_clock_gettime 265
#define SYS_io_setup 245
#define SYS_io_destroy 246
#define SYS_io_getevents 247
#define SYS_io_submit 248
#define SYS_old_mmap 90
#define SYS_io_uring_setup 425
#define SYS_io_uring_enter 426
#define SYS_io_uring_register 427
#define IOCB_CMD_PREAD 0
#define IOCB_CMD_PWRITE 1
#define MAX_DEPTH 64

#define CLOCK_MONOTONIC 1

#define O_RDONLY 0
#define O_RDWR 2
#define O_DIRECT 040000
#define O_LARGEFILE 0100000

#define MAX_BLOCK (1 << 20)
#define MAX_TIMED 65536

typedef unsigned long long u64;

static unsigned char block[MAX_BLOCK] __attribute__((aligned(4096)));
static char input[4096];

/* Start and duration of each timed request, in TSC ticks (converted to ns by report()). */
static u64 started[MAX_TIMED];
static u64 took[MAX_TIMED];
static unsigned long timed;
static u64 offsets[MAX_TIMED];

/* Linux AIO (include/uapi/linux/aio_abi.h), little-endian i386 layout. */
struct iocb {
  u64 data;
  unsigned int key, rw_flags;
  unsigned short opcode;
  short reqprio;
  unsigned int fildes;
  u64 buf, nbytes;
  long long offset;
  u64 reserved2;
  unsigned int flags, resfd;
};
struct io_event {
  u64 data, obj;
  long long res, res2;
};
static struct iocb cbs[MAX_DEPTH];
static struct io_event events[MAX_DEPTH];

/* io_uring (include/uapi/linux/io_uring.h), i386 layout. */
struct io_sqring_offsets {
  unsigned int head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
  u64 user_addr;
};
struct io_cqring_offsets {
  unsigned int head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
  u64 user_addr;
};
struct io_uring_params {
  unsigned int sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd, resv[3];
  struct io_sqring_offsets sq_off;
  struct io_cqring_offsets cq_off;
};
struct io_uring_sqe {
  unsigned char opcode, flags;
  unsigned short ioprio;
  int fd;
  u64 off, addr;
  unsigned int len, rw_flags;
  u64 user_data;
  unsigned short buf_index, personality;
  int splice_fd_in;
  u64 addr3, pad2;
};
struct io_uring_cqe {
  u64 user_data;
  int res;
  unsigned int flags;
};
#define IORING_OP_READ_FIXED 4
#define IORING_OP_WRITE_FIXED 5
#define IOSQE_FIXED_FILE 1
#define IORING_ENTER_GETEVENTS 1
#define IORING_REGISTER_BUFFERS 0
#define IORING_REGISTER_FILES 2
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#define IORING_FEAT_SINGLE_MMAP 1
#define IORING_OFF_SQ_RING 0UL
#define IORING_OFF_CQ_RING 0x8000000UL
#define IORING_OFF_SQES 0x10000000UL
static char line[64 + MAX_TIMED * 2 * 7];

static long syscall5(long n, long a, long b, long c, long d, long e) {
  long r;
  __asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e) : "memory");
  return r;
}

static long syscall3(long n, long a, long b, long c) { return syscall5(n, a, b, c, 0, 0); }

/* mmap of a shared read-write mapping of fd at a byte offset (i386's old_mmap: its six arguments in memory). */
static void *map_shared(long fd, unsigned long length, unsigned long offset) {
  unsigned long args[6] = {0, length, 3 /* PROT_READ | PROT_WRITE */, 0x8001 /* MAP_SHARED | MAP_POPULATE */, (unsigned long)fd, offset};
  long r = syscall3(SYS_old_mmap, (long)args, 0, 0);
  return (r < 0 && r > -4096) ? 0 : (void *)r;
}

static __attribute__((noreturn)) void exit_now(int code) {
  for (;;) syscall3(SYS_exit_group, code, 0, 0);
}

static unsigned long length_of(const char *s) {
  unsigned long n = 0;
  while (s[n]) n++;
  return n;
}

static void put(const char *s) { syscall3(SYS_write, 2, (long)s, (long)length_of(s)); }

struct timespec32 {
  long sec;
  long nsec;
};

static u64 clock_ns(void) {
  struct timespec32 ts;
  syscall3(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&ts, 0);
  return (u64)(unsigned long)ts.sec * 1000000000ULL + (u64)(unsigned long)ts.nsec;
}

static inline u64 ticks(void) {
  unsigned int lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((u64)hi << 32) | lo;
}

/* A reading of CLOCK_MONOTONIC beside the TSC (the TSC at the middle of the system call). */
struct reading {
  u64 tsc, ns;
};

static struct reading read_clocks(void) {
  struct reading r;
  u64 before = ticks();
  r.ns = clock_ns();
  u64 after = ticks();
  r.tsc = before + ((after - before) >> 1);
  return r;
}

/* The program's first reading, and the one the next report's times are anchored at. */
static struct reading first_reading, anchor;

/* (hi * 2^32) / d for d > 0, bit by bit (a 64-bit division would need libgcc, which is not linked);
 * saturates at 2^64 - 1. */
static u64 div_shifted(u64 hi, u64 d) {
  u64 q = 0, r = 0;
  for (int bit = 95; bit >= 0; bit--) {
    int top = r >> 63;
    r = (r << 1) | (bit >= 32 ? (hi >> (bit - 32)) & 1 : 0);
    q <<= 1;
    if (top || r >= d) r -= d, q |= 1;
    if (bit >= 64 && q) return ~0ULL;
  }
  return q;
}

/* x * scale / 2^32, without losing the high bits of the product. */
static u64 scale_ticks(u64 x, u64 scale) {
  u64 xh = x >> 32, xl = x & 0xffffffffULL, sh = scale >> 32, sl = scale & 0xffffffffULL;
  return ((xh * sh) << 32) + xh * sl + xl * sh + ((xl * sl) >> 32);
}

static void note(u64 start, u64 end) {
  if (timed == MAX_TIMED) return;
  started[timed] = start;
  took[timed] = end - start;
  timed++;
}

static const char digit64[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._";

static unsigned long put_varint(char *at, u64 v) {
  unsigned long n = 0;
  do {
    unsigned int d = (unsigned int)(v & 31);
    v >>= 5;
    at[n++] = digit64[d | (v ? 32 : 0)];
  } while (v);
  return n;
}

static unsigned long put_decimal(char *at, u64 v) {
  char digits[24];
  int n = 0;
  do {
    /* v % 10 and v / 10 bit by bit: a 64-bit division would need libgcc, which is not linked. */
    u64 q = 0, r = 0;
    for (int bit = 63; bit >= 0; bit--) {
      r = (r << 1) | ((v >> bit) & 1);
      if (r >= 10) r -= 10, q |= 1ULL << bit;
    }
    digits[n++] = (char)('0' + (int)r);
    v = q;
  } while (v);
  for (int i = 0; i < n; i++) at[i] = digits[n - 1 - i];
  return (unsigned long)n;
}

static unsigned long put_text(char *at, const char *s) {
  unsigned long n = 0;
  while (s[n]) at[n] = s[n], n++;
  return n;
}

/* One REFCOW-IO line for the requests timed so far (see the top of the file); then starts a new list. The
 * ticks become ns at the rate CLOCK_MONOTONIC ran at against the TSC since the program started (2^32 * ns
 * per tick), counted from the previous reading. */
static void report(const char *op) {
  if (timed == 0) return;
  struct reading now = read_clocks();
  u64 span = now.tsc - first_reading.tsc;
  u64 scale = span ? div_shifted(now.ns - first_reading.ns, span) : 1ULL << 32;
  for (unsigned long i = 0; i < timed; i++) {
    u64 d = scale_ticks(took[i], scale);
    started[i] = anchor.ns + scale_ticks(started[i] - anchor.tsc, scale);
    took[i] = d > 0xffffffffULL ? 0xffffffffULL : d; /* durations above 4 s saturate */
  }
  anchor = now;
  unsigned long n = put_text(line, "REFCOW-IO ");
  n += put_text(line + n, op);
  line[n++] = ' ';
  n += put_decimal(line + n, timed);
  line[n++] = ' ';
  n += put_decimal(line + n, started[0]);
  line[n++] = ' ';
  for (unsigned long i = 0; i < timed; i++) {
    n += put_varint(line + n, i == 0 ? 0 : started[i] - started[i - 1]);
    n += put_varint(line + n, took[i]);
  }
  line[n++] = '\n';
  for (unsigned long done = 0; done < n;) {
    long w = syscall3(SYS_write, 1, (long)(line + done), (long)(n - done));
    if (w <= 0) break;
    done += (unsigned long)w;
  }
  timed = 0;
}

static void put_u64(u64 v) {
  char digits[24];
  digits[put_decimal(digits, v)] = 0;
  put(digits);
}

static __attribute__((noreturn)) void fail(const char *what, u64 offset, long err) {
  put("refcow-io: ");
  put(what);
  put(" failed at offset ");
  put_u64(offset);
  put(" (error ");
  put_u64((u64)-err);
  put(")\n");
  exit_now(1);
}

static __attribute__((noreturn)) void usage(const char *why) {
  put("refcow-io: ");
  put(why);
  put("\nusage: refcow-io write DEVICE BLOCKFILE [sync] [depth=N [uring]] < offsets | read DEVICE BLOCKFILE [depth=N [uring]] < offsets\n");
  exit_now(2);
}

static int same(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

/* One request of `length` bytes at `offset`, all of it or a failure. */
static void transfer(int fd, int writing, unsigned long length, u64 offset) {
  u64 t = ticks();
  long n = syscall5(writing ? SYS_pwrite64 : SYS_pread64, fd, (long)block, (long)length, (long)(unsigned long)offset,
                    (long)(unsigned long)(offset >> 32));
  note(t, ticks());
  if (n < 0) fail(writing ? "write" : "read", offset, n);
  if ((unsigned long)n != length) fail(writing ? "short write" : "short read", offset, 0);
}

/* The listed requests, `depth` in flight (see the top of the file); times them into started/took. */
static void transfer_aio(int fd, int writing, unsigned long length, unsigned long n, unsigned long depth) {
  unsigned long ctx = 0;
  long r = syscall3(SYS_io_setup, (long)depth, (long)&ctx, 0);
  if (r < 0) fail("io_setup", 0, r);
  unsigned long free_slots[MAX_DEPTH], nfree = depth, next = 0, inflight = 0;
  for (unsigned long k = 0; k < depth; k++) free_slots[k] = depth - 1 - k;
  struct iocb *list[MAX_DEPTH];
  while (next < n || inflight) {
    unsigned long batch = 0;
    while (inflight + batch < depth && next + batch < n) {
      struct iocb *cb = &cbs[free_slots[--nfree]];
      list[batch] = cb;
      cb->data = next + batch;
      cb->key = 0;
      cb->rw_flags = 0;
      cb->opcode = writing ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
      cb->reqprio = 0;
      cb->fildes = (unsigned int)fd;
      cb->buf = (u64)(unsigned long)block;
      cb->nbytes = length;
      cb->offset = (long long)offsets[next + batch];
      cb->reserved2 = 0;
      cb->flags = 0;
      cb->resfd = 0;
      batch++;
    }
    if (batch) {
      u64 t = ticks();
      r = syscall3(SYS_io_submit, (long)ctx, (long)batch, (long)list);
      if (r <= 0) fail("io_submit", offsets[next], r < 0 ? r : -5);
      for (long k = 0; k < r; k++) started[next + (unsigned long)k] = t;
      /* A short submission (the kernel ran out of something): the rest go back, to be submitted again. */
      for (unsigned long k = batch; k-- > (unsigned long)r;) free_slots[nfree++] = (unsigned long)(list[k] - cbs);
      next += (unsigned long)r;
      inflight += (unsigned long)r;
    }
    long got = syscall5(SYS_io_getevents, (long)ctx, 1, (long)depth, (long)events, 0);
    u64 t = ticks();
    if (got < 0) {
      if (got == -4) continue; /* EINTR */
      fail("io_getevents", 0, got);
    }
    for (long k = 0; k < got; k++) {
      unsigned long i = (unsigned long)events[k].data;
      took[i] = t - started[i];
      if (events[k].res < 0) fail(writing ? "write" : "read", offsets[i], (long)events[k].res);
      if ((u64)events[k].res != length) fail(writing ? "short write" : "short read", offsets[i], 0);
      free_slots[nfree++] = (unsigned long)((struct iocb *)(unsigned long)events[k].obj - cbs);
      inflight--;
    }
  }
  timed = n;
  syscall3(SYS_io_destroy, (long)ctx, 0, 0);
}

/*
 * The listed requests, `depth` in flight, with io_uring instead of Linux AIO (`uring`; see the top of the
 * file): the buffer and the device registered once (fixed buffer, fixed file: no page pinning and no file
 * lookup per request), the requests a completion batch frees queued in the submission ring and submitted by
 * the same io_uring_enter that waits for the next completion. A request is timed from right before the
 * io_uring_enter that submitted it to right after the one that returned its completion. The ring is set up
 * with SINGLE_ISSUER | DEFER_TASKRUN when the kernel takes them (6.1: completions are run only when the
 * program enters the ring, not by interrupting it), else COOP_TASKRUN, else no flags.
 */
static void transfer_uring(int fd, int writing, unsigned long length, unsigned long n, unsigned long depth) {
  static struct io_uring_params p;
  static const unsigned int tries[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_COOP_TASKRUN, 0};
  long ring = -22;
  for (unsigned int t = 0; t < 3 && ring == -22; t++) {
    for (unsigned long k = 0; k < sizeof p; k++) ((char *)&p)[k] = 0;
    p.flags = tries[t];
    ring = syscall3(SYS_io_uring_setup, (long)depth, (long)&p, 0);
  }
  if (ring < 0) fail("io_uring_setup", 0, ring);
  unsigned long sq_size = p.sq_off.array + p.sq_entries * 4, cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (p.features & IORING_FEAT_SINGLE_MMAP) sq_size = cq_size = sq_size > cq_size ? sq_size : cq_size;
  char *sq = map_shared(ring, sq_size, IORING_OFF_SQ_RING);
  char *cq = (p.features & IORING_FEAT_SINGLE_MMAP) ? sq : map_shared(ring, cq_size, IORING_OFF_CQ_RING);
  struct io_uring_sqe *sqes = map_shared(ring, p.sq_entries * sizeof(struct io_uring_sqe), IORING_OFF_SQES);
  if (!sq || !cq || !sqes) fail("mmap of the io_uring rings", 0, -12);
  volatile unsigned int *sq_tail = (unsigned int *)(sq + p.sq_off.tail);
  unsigned int sq_mask = *(unsigned int *)(sq + p.sq_off.ring_mask);
  unsigned int *sq_array = (unsigned int *)(sq + p.sq_off.array);
  volatile unsigned int *cq_head = (unsigned int *)(cq + p.cq_off.head);
  volatile unsigned int *cq_tail = (unsigned int *)(cq + p.cq_off.tail);
  unsigned int cq_mask = *(unsigned int *)(cq + p.cq_off.ring_mask);
  struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);

  struct {
    void *base;
    unsigned long len;
  } iov = {block, (length + 4095) & ~4095UL};
  long r = syscall5(SYS_io_uring_register, ring, IORING_REGISTER_BUFFERS, (long)&iov, 1, 0);
  if (r < 0) fail("io_uring_register of the buffer", 0, r);
  int files[1] = {fd};
  r = syscall5(SYS_io_uring_register, ring, IORING_REGISTER_FILES, (long)files, 1, 0);
  if (r < 0) fail("io_uring_register of the device", 0, r);

  unsigned long next = 0, inflight = 0;
  unsigned int tail = *sq_tail;
  while (next < n || inflight) {
    unsigned long batch = 0;
    while (inflight + batch < depth && next + batch < n) {
      unsigned int at = tail & sq_mask;
      struct io_uring_sqe *e = &sqes[at];
      e->opcode = writing ? IORING_OP_WRITE_FIXED : IORING_OP_READ_FIXED;
      e->flags = IOSQE_FIXED_FILE;
      e->ioprio = 0;
      e->fd = 0; /* index in the registered files */
      e->off = offsets[next + batch];
      e->addr = (u64)(unsigned long)block;
      e->len = (unsigned int)length;
      e->rw_flags = 0;
      e->user_data = next + batch;
      e->buf_index = 0;
      e->personality = 0;
      e->splice_fd_in = 0;
      e->addr3 = 0;
      e->pad2 = 0;
      sq_array[at] = at;
      tail++;
      batch++;
    }
    __asm__ volatile("" ::: "memory"); /* the entries before the tail (x86: stores are not reordered) */
    *sq_tail = tail;
    u64 t = ticks();
    for (unsigned long k = 0; k < batch; k++) started[next + k] = t;
    r = syscall5(SYS_io_uring_enter, ring, (long)batch, 1, IORING_ENTER_GETEVENTS, 0);
    if (r < 0 && r != -4) fail("io_uring_enter", next < n ? offsets[next] : 0, r);
    if (r >= 0 && (unsigned long)r != batch) fail("io_uring_enter (short submission)", offsets[next], -5);
    next += batch;
    inflight += batch;
    unsigned int head = *cq_head, end = *cq_tail;
    __asm__ volatile("" ::: "memory");
    u64 done = ticks();
    for (; head != end; head++) {
      struct io_uring_cqe *c = &cqes[head & cq_mask];
      unsigned long i = (unsigned long)c->user_data;
      if (i >= n) fail("io_uring completion", 0, -5);
      took[i] = done - started[i];
      if (c->res < 0) fail(writing ? "write" : "read", offsets[i], c->res);
      if ((unsigned long)c->res != length) fail(writing ? "short write" : "short read", offsets[i], 0);
      inflight--;
    }
    __asm__ volatile("" ::: "memory");
    *cq_head = head;
  }
  timed = n;
  syscall3(SYS_close, ring, 0, 0);
}

__attribute__((used, noreturn)) void refcow_io_main(long *stack) {
  long argc = stack[0];
  char **argv = (char **)(stack + 1);
  if (argc < 4 || argc > 7) usage("expected 3 to 6 arguments");
  int writing = same(argv[1], "write");
  if (!writing && !same(argv[1], "read")) usage("the first argument is write or read");
  int sync = 0, uring = 0;
  unsigned long depth = 1;
  for (long a = 4; a < argc; a++) {
    const char *w = argv[a];
    if (same(w, "sync") && writing) {
      sync = 1;
    } else if (same(w, "uring")) {
      uring = 1;
    } else if (w[0] == 'd' && w[1] == 'e' && w[2] == 'p' && w[3] == 't' && w[4] == 'h' && w[5] == '=') {
      depth = 0;
      for (const char *c = w + 6; *c; c++) {
        if (*c < '0' || *c > '9' || depth > MAX_DEPTH) usage("depth=N takes a number from 1 to 64");
        depth = depth * 10 + (unsigned long)(*c - '0');
      }
      if (depth < 1 || depth > MAX_DEPTH) usage("depth=N takes a number from 1 to 64");
    } else {
      usage("the extra arguments are sync (write only), depth=N and uring");
    }
  }

  first_reading = anchor = read_clocks();
  long bf = syscall3(SYS_open, (long)argv[3], O_RDONLY | O_LARGEFILE, 0);
  if (bf < 0) fail("open of the block file", 0, bf);
  unsigned long length = 0;
  for (;;) {
    if (length == MAX_BLOCK) usage("the block file is larger than 1 MiB");
    long n = syscall3(SYS_read, bf, (long)(block + length), (long)(MAX_BLOCK - length));
    if (n < 0) fail("read of the block file", length, n);
    if (n == 0) break;
    length += (unsigned long)n;
  }
  syscall3(SYS_close, bf, 0, 0);
  if (length == 0 || length % 512) usage("the block file must hold a positive multiple of 512 bytes");

  long fd = syscall3(SYS_open, (long)argv[2], (writing ? O_RDWR : O_RDONLY) | O_DIRECT | O_LARGEFILE, 0);
  if (fd < 0) fail("open of the device", 0, fd);

  u64 offset = 0;
  int digits = 0;
  unsigned long listed = 0;
#define TAKE(off)                                                                                      \
  do {                                                                                                 \
    if (depth == 1) transfer((int)fd, writing, length, (off));                                         \
    else if (listed == MAX_TIMED) usage("at most 65536 offsets with depth=N");                        \
    else offsets[listed++] = (off);                                                                    \
  } while (0)
  for (;;) {
    long n = syscall3(SYS_read, 0, (long)input, sizeof input);
    if (n < 0) fail("read of stdin", offset, n);
    for (long i = 0; i < n; i++) {
      char c = input[i];
      if (c >= '0' && c <= '9') {
        if (++digits > 19) usage("an offset has more than 19 digits");
        offset = offset * 10 + (u64)(c - '0');
      } else if (c == '\n' || c == ' ' || c == '\r' || c == '\t') {
        if (digits) TAKE(offset);
        offset = 0;
        digits = 0;
      } else {
        usage("stdin must hold decimal offsets, one per line");
      }
    }
    if (n == 0) break;
  }
  if (digits) TAKE(offset);
  if (depth > 1 && listed > 0) {
    if (uring) transfer_uring((int)fd, writing, length, listed, depth);
    else transfer_aio((int)fd, writing, length, listed, depth);
  }
  report(writing ? "write" : "read");
  if (sync) {
    u64 t = ticks();
    long r = syscall3(SYS_fdatasync, fd, 0, 0);
    note(t, ticks());
    if (r < 0) fail("fdatasync", 0, r);
    report("fdatasync");
  }
  syscall3(SYS_close, fd, 0, 0);
  exit_now(0);
}

/* The process entry: the kernel leaves argc, argv[], envp[] on the stack. */
__asm__(".globl _start\n"
        "_start:\n"
        "  xorl %ebp, %ebp\n"
        "  movl %esp, %eax\n"
        "  andl $-16, %esp\n"
        "  subl $12, %esp\n"
        "  pushl %eax\n"
        "  call refcow_io_main\n"
        "  hlt\n");
