/*
 * refcow_fileops: the file operations Node's fs module lacks and a disk-image engine needs, as a
 * Node-API addon (built from this file by node-gyp at `npm install`; src/io/native-fileops.ts loads it and
 * falls back to plain writes where it is not built).
 *
 *   fallocate(fd, mode, offset, length) -> 0, or -errno      Linux fallocate(2); -ENOSYS elsewhere
 *   seekData(fd, offset)                -> offset, or -errno lseek(fd, offset, SEEK_DATA); -ENXIO: no data
 *                                                             at or after offset (a hole up to the end)
 *   seekHole(fd, offset)                -> offset, or -errno lseek(fd, offset, SEEK_HOLE)
 *   cloneRange(fd, src, dst, length)    -> 0, or -errno      ioctl(fd, FICLONERANGE): the file's bytes
 *                                                             [src, src + length) become shared extents at
 *                                                             dst of the same file (XFS with reflink, btrfs);
 *                                                             offsets and length must be multiples of the
 *                                                             file system's block size; -EOPNOTSUPP where the
 *                                                             file system cannot share, -ENOSYS off Linux
 *   cloneFrom(fd, srcFd, src, dst, length)
 *                                       -> 0, or -errno      ioctl(fd, FICLONERANGE) with another file as the
 *                                                             source: srcFd's [src, src + length) becomes
 *                                                             shared at dst of fd; -EXDEV when the two files
 *                                                             are not on one file system
 *   blockSize(fd)                       -> bytes, or -errno  fstatfs f_bsize: the unit clones are aligned to
 *   modes: { zeroRange, punchHole, keepSize }                 the FALLOC_FL_* flags of <linux/falloc.h>
 *                                                             (0 where the platform has none)
 *   errno: { ENOSYS, ENOTSUP, EOPNOTSUPP, EINVAL, ENXIO, EXDEV, ENOTTY }
 *                                                             this platform's numbers, to read the results
 *
 * Offsets and lengths travel as JS numbers (integers below 2^53). Failures are returned, not thrown: the
 * caller decides which ones mean "not supported here" and falls back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>
#include <node_api.h>
#ifdef __linux__
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#endif

/* -1: the platform has no such lseek (seek() then answers -ENOSYS). */
#ifdef SEEK_DATA
#define WHENCE_DATA SEEK_DATA
#define WHENCE_HOLE SEEK_HOLE
#else
#define WHENCE_DATA -1
#define WHENCE_HOLE -1
#endif

#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 0
#endif
#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0
#endif
#ifndef FALLOC_FL_ZERO_RANGE
#define FALLOC_FL_ZERO_RANGE 0
#endif

/* Reads the call's first n (at most 5) arguments as int64s into out; on a missing or wrong one throws a
 * TypeError and returns 0. */
static int int_args(napi_env env, napi_callback_info info, size_t n, int64_t *out) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  for (size_t i = 0; i < n; i++) {
    if (i >= argc || napi_get_value_int64(env, argv[i], &out[i]) != napi_ok) {
      napi_throw_type_error(env, NULL, "refcow_fileops: expected integer arguments");
      return 0;
    }
  }
  return 1;
}

static napi_value number(napi_env env, int64_t v) {
  napi_value r;
  napi_create_int64(env, v, &r);
  return r;
}

static napi_value js_fallocate(napi_env env, napi_callback_info info) {
  int64_t a[4];
  if (!int_args(env, info, 4, a)) return NULL;
  int64_t fd = a[0], mode = a[1], offset = a[2], length = a[3];
#ifdef __linux__
  int r;
  do {
    r = fallocate((int)fd, (int)mode, (off_t)offset, (off_t)length);
  } while (r < 0 && errno == EINTR);
  return number(env, r < 0 ? -errno : 0);
#else
  (void)fd, (void)mode, (void)offset, (void)length;
  return number(env, -ENOSYS);
#endif
}

static napi_value seek(napi_env env, napi_callback_info info, int whence) {
  int64_t a[2];
  if (!int_args(env, info, 2, a)) return NULL;
  int64_t fd = a[0], offset = a[1];
  if (whence < 0) return number(env, -ENOSYS);
  off_t r = lseek((int)fd, (off_t)offset, whence);
  return number(env, r < 0 ? -errno : (int64_t)r);
}

static napi_value js_seek_data(napi_env env, napi_callback_info info) { return seek(env, info, WHENCE_DATA); }
static napi_value js_seek_hole(napi_env env, napi_callback_info info) { return seek(env, info, WHENCE_HOLE); }

/* FICLONERANGE: [src, src + length) of src_fd shared at dst of fd (src_fd may be fd itself). */
static int64_t clone_range(int64_t fd, int64_t src_fd, int64_t src, int64_t dst, int64_t length) {
#if defined(__linux__) && defined(FICLONERANGE)
  /* A length of 0 would mean "to the end of the source": never what a caller here wants. */
  if (length <= 0) return -EINVAL;
  struct file_clone_range range = {
      .src_fd = src_fd, .src_offset = (uint64_t)src, .src_length = (uint64_t)length, .dest_offset = (uint64_t)dst};
  int r;
  do {
    r = ioctl((int)fd, FICLONERANGE, &range);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : 0;
#else
  (void)fd, (void)src_fd, (void)src, (void)dst, (void)length;
  return -ENOSYS;
#endif
}

static napi_value js_clone_range(napi_env env, napi_callback_info info) {
  int64_t a[4];
  if (!int_args(env, info, 4, a)) return NULL;
  return number(env, clone_range(a[0], a[0], a[1], a[2], a[3]));
}

static napi_value js_clone_from(napi_env env, napi_callback_info info) {
  int64_t a[5];
  if (!int_args(env, info, 5, a)) return NULL;
  return number(env, clone_range(a[0], a[1], a[2], a[3], a[4]));
}

static napi_value js_block_size(napi_env env, napi_callback_info info) {
  int64_t fd;
  if (!int_args(env, info, 1, &fd)) return NULL;
#ifdef __linux__
  struct statfs st;
  if (fstatfs((int)fd, &st) < 0) return number(env, -errno);
  return number(env, (int64_t)st.f_bsize);
#else
  (void)fd;
  return number(env, -ENOSYS);
#endif
}

static void set(napi_env env, napi_value obj, const char *name, napi_value v) { napi_set_named_property(env, obj, name, v); }

static void set_fn(napi_env env, napi_value obj, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  set(env, obj, name, fn);
}

NAPI_MODULE_INIT() {
  set_fn(env, exports, "fallocate", js_fallocate);
  set_fn(env, exports, "seekData", js_seek_data);
  set_fn(env, exports, "seekHole", js_seek_hole);
  set_fn(env, exports, "cloneRange", js_clone_range);
  set_fn(env, exports, "cloneFrom", js_clone_from);
  set_fn(env, exports, "blockSize", js_block_size);
  napi_value modes, errnos;
  napi_create_object(env, &modes);
  set(env, modes, "zeroRange", number(env, FALLOC_FL_ZERO_RANGE));
  set(env, modes, "punchHole", number(env, FALLOC_FL_PUNCH_HOLE));
  set(env, modes, "keepSize", number(env, FALLOC_FL_KEEP_SIZE));
  set(env, exports, "modes", modes);
  napi_create_object(env, &errnos);
  set(env, errnos, "ENOSYS", number(env, ENOSYS));
  set(env, errnos, "ENOTSUP", number(env, ENOTSUP));
  set(env, errnos, "EOPNOTSUPP", number(env, EOPNOTSUPP));
  set(env, errnos, "EINVAL", number(env, EINVAL));
  set(env, errnos, "ENXIO", number(env, ENXIO));
  set(env, errnos, "EXDEV", number(env, EXDEV));
  set(env, errnos, "ENOTTY", number(env, ENOTTY));
  set(env, exports, "errno", errnos);
  return exports;
}
