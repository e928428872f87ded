/*
 * refcow-io: scattered direct I/O for the refcow test guest (i386 Linux, freestanding: no libc).
 *
 *   refcow-io write DEVICE BLOCKFILE < offsets     write BLOCKFILE's bytes at each offset
 *   refcow-io read  DEVICE BLOCKFILE < offsets     read as many bytes from each offset (and drop them)
 *
 * BLOCKFILE (1 byte to 1 MiB, a multiple of 512) is read into a page-aligned buffer; DEVICE is opened with
 * O_DIRECT; stdin holds decimal byte offsets, one per line (multiples of 512). The requests are issued one
 * at a time, back to back, in stdin's order (pwrite64 / pread64): queue depth 1, as fio or qemu-img bench
 * would, where busybox dd needs one process per request (about 25 ms apart under v86). Nothing is printed on
 * success; a failure prints "refcow-io: <what> failed at offset N (error E)" on stderr and exits 1; bad
 * usage exits 2.
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

#define O_RDONLY 0
#define O_RDWR 2
#define O_DIRECT 040000
#define O_LARGEFILE 0100000

#define MAX_BLOCK (1 << 20)

typedef unsigned long long u64;

static unsigned char block[MAX_BLOCK] __attribute__((aligned(4096)));
static char input[4096];

static long syscall5(long n, long a, long b, long c, long d, long e) {
  long r;
  __asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e) : "memory");
  return r;
}

static long syscall3(long n, long a, long b, long c) { return syscall5(n, a, b, c, 0, 0); }

static __attribute__((noreturn)) void exit_now(int code) {
  for (;;) syscall3(SYS_exit_group, code, 0, 0);
}

static unsigned long length_of(const char *s) {
  unsigned long n = 0;
  while (s[n]) n++;
  return n;
}

static void put(const char *s) { syscall3(SYS_write, 2, (long)s, (long)length_of(s)); }

/* Decimal, by subtracting powers of ten: a 64-bit division would need libgcc, which is not linked. */
static void put_u64(u64 v) {
  char digits[24];
  int n = 0;
  u64 power = 1;
  int exponent = 0;
  while (exponent < 19 && power * 10 <= v) power *= 10, exponent++;
  for (; exponent >= 0; exponent--) {
    char d = '0';
    while (v >= power) v -= power, d++;
    digits[n++] = d;
    u64 lower = 1;
    for (int k = 1; k < exponent; k++) lower *= 10;
    power = lower;
  }
  digits[n] = 0;
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
  put("\nusage: refcow-io write|read DEVICE BLOCKFILE < offsets\n");
  exit_now(2);
}

static int same(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

/* One request of `length` bytes at `offset`, all of it or a failure. */
static void transfer(int fd, int writing, unsigned long length, u64 offset) {
  long n = syscall5(writing ? SYS_pwrite64 : SYS_pread64, fd, (long)block, (long)length, (long)(unsigned long)offset,
                    (long)(unsigned long)(offset >> 32));
  if (n < 0) fail(writing ? "write" : "read", offset, n);
  if ((unsigned long)n != length) fail(writing ? "short write" : "short read", offset, 0);
}

__attribute__((used, noreturn)) void refcow_io_main(long *stack) {
  long argc = stack[0];
  char **argv = (char **)(stack + 1);
  if (argc != 4) usage("expected 3 arguments");
  int writing = same(argv[1], "write");
  if (!writing && !same(argv[1], "read")) usage("the first argument is write or read");

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
  for (;;) {
    long n = syscall3(SYS_read, 0, (long)input, sizeof input);
    if (n < 0) fail("read of stdin", offset, n);
    for (long i = 0; i < n; i++) {
      char c = input[i];
      if (c >= '0' && c <= '9') {
        if (++digits > 19) usage("an offset has more than 19 digits");
        offset = offset * 10 + (u64)(c - '0');
      } else if (c == '\n' || c == ' ' || c == '\r' || c == '\t') {
        if (digits) transfer((int)fd, writing, length, offset);
        offset = 0;
        digits = 0;
      } else {
        usage("stdin must hold decimal offsets, one per line");
      }
    }
    if (n == 0) break;
  }
  if (digits) transfer((int)fd, writing, length, offset);
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
