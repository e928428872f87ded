/**
 * The native file operations of native/fileops.c (fallocate, SEEK_DATA, SEEK_HOLE, FICLONERANGE within a file and
 * between two files), loaded when `npm install`
 * built them (native/build/Release/refcow_fileops.node). Where the addon is absent, or REFCOW_NATIVE=0 is set, the
 * loader returns null and NodeFile falls back to plain writes of zeroes and reports no holes.
 *
 * The addon returns -errno instead of throwing; the helpers here turn that into a result or an error code.
 * An addon built before FICLONERANGE was added lacks cloneRange: then no file shares extents; one built before the
 * clone between files lacks cloneFrom: then only ranges of one file are shared.
 */
import { createRequire } from "node:module";
import { constants } from "node:os";

interface Addon {
  fallocate(fd: number, mode: number, offset: number, length: number): number;
  seekData(fd: number, offset: number): number;
  seekHole(fd: number, offset: number): number;
  cloneRange?(fd: number, src: number, dst: number, length: number): number;
  cloneFrom?(fd: number, srcFd: number, src: number, dst: number, length: number): number;
  blockSize?(fd: number): number;
  modes: { zeroRange: number; punchHole: number; keepSize: number };
  errno: { ENOSYS: number; ENOTSUP: number; EOPNOTSUPP: number; EINVAL: number; ENXIO: number; EXDEV?: number; ENOTTY?: number };
}

/** Errors that mean "this file system (or platform) cannot do it": fall back, do not fail. */
export type Unsupported = "unsupported";

/** Which fallocate modes still work on one file (cleared once refused there, as QEMU keeps it per file). */
export interface ZeroSupport {
  zeroRange: boolean;
  punchHole: boolean;
}

export interface NativeFileOps {
  /**
   * Makes [offset, offset + length) read as zeroes without writing it, as QEMU's file-posix write-zeroes:
   * FALLOC_FL_ZERO_RANGE (the blocks stay allocated; grows the file when the range ends past it), else
   * PUNCH_HOLE | KEEP_SIZE; with `unmap` (QEMU's BDRV_REQ_MAY_UNMAP) the punch first. Returns "unsupported"
   * when neither works here, or throws an Error whose `code` names the errno of a real failure.
   */
  zeroRange(fd: number, offset: number, length: number, unmap: boolean, support: ZeroSupport): "zero-range" | "punch-hole" | Unsupported;
  /** A fresh ZeroSupport for a newly opened file: what this platform has. */
  support(): ZeroSupport;
  /** SEEK_DATA: the first data offset at or after `offset`, null when only a hole follows, "unsupported". */
  seekData(fd: number, offset: number): number | null | Unsupported;
  /** SEEK_HOLE: the first hole at or after `offset` (the end of the file counts as one), or "unsupported". */
  seekHole(fd: number, offset: number): number | Unsupported;
  /**
   * The block size clones of this file must be aligned to when its file system shares extents between ranges
   * of one file (FICLONERANGE: XFS with reflink, btrfs), else 0. Probed without changing anything: a clone of
   * the file's first block onto itself, which such a file system refuses as an overlap (EINVAL) after it has
   * checked that it can clone at all (EOPNOTSUPP, ENOTTY or EXDEV where it cannot).
   */
  cloneBlockSize(fd: number): number;
  /**
   * FICLONERANGE inside one file: [src, src + length) becomes shared at dst (block-aligned; not overlapping).
   * Returns "unsupported" when the file system refuses (the caller copies instead), or throws an Error whose
   * `code` names the errno of a real failure (ENOSPC, EIO).
   */
  cloneRange(fd: number, src: number, dst: number, length: number): "cloned" | Unsupported;
  /**
   * FICLONERANGE from another file: [src, src + length) of `srcFd` becomes shared at dst of `fd`. Returns
   * "unsupported" where the two cannot share (EXDEV: not one file system; or a file system that cannot clone),
   * or throws as cloneRange does.
   */
  cloneFrom(fd: number, srcFd: number, src: number, dst: number, length: number): "cloned" | Unsupported;
}

let loaded: NativeFileOps | null | undefined;

/** The native operations, or null where they are not built (or disabled with REFCOW_NATIVE=0). */
export function nativeFileOps(): NativeFileOps | null {
  if (loaded !== undefined) return loaded;
  loaded = null;
  if (process.env.REFCOW_NATIVE === "0") return loaded;
  let addon: Addon;
  try {
    // From src/io/ and dist/io/ alike: the repository's native/build/ folder.
    addon = createRequire(import.meta.url)("../../native/build/Release/refcow_fileops.node") as Addon;
  } catch {
    return loaded;
  }
  loaded = wrap(addon);
  return loaded;
}

function wrap(a: Addon): NativeFileOps {
  const e = a.errno;
  const unsupported = (r: number) => r === -e.ENOSYS || r === -e.ENOTSUP || r === -e.EOPNOTSUPP;
  // What a clone answers where sharing is not possible between these ranges or on this file system.
  // (EPERM: an immutable or append-only file; ETXTBSY: a swap file or one being executed.)
  const cannotClone = new Set([e.EINVAL, e.EXDEV, e.ENOTTY, constants.errno.EPERM, constants.errno.ETXTBSY].filter((n): n is number => n !== undefined));
  const noClone = (r: number) => unsupported(r) || cannotClone.has(-r);
  // An error as Node's fs raises them: `code` is the errno name (ENOSPC, EIO...).
  const fail = (what: string, r: number) => {
    const code = Object.entries(constants.errno).find(([, v]) => v === -r)?.[0] ?? `errno ${-r}`;
    return Object.assign(new Error(`${what}: ${code}`), { code, errno: -r });
  };
  return {
    support: () => ({ zeroRange: a.modes.zeroRange !== 0, punchHole: a.modes.punchHole !== 0 }),
    zeroRange(fd, offset, length, unmap, support) {
      if (length <= 0) return "zero-range";
      const zero = (): boolean => {
        if (!support.zeroRange) return false;
        const r = a.fallocate(fd, a.modes.zeroRange, offset, length);
        if (r === 0) return true;
        // EINVAL: some file systems refuse ranges not aligned to their block size.
        if (unsupported(r)) support.zeroRange = false;
        else if (r !== -e.EINVAL) throw fail("fallocate(ZERO_RANGE)", r);
        return false;
      };
      const punch = (): boolean => {
        if (!support.punchHole) return false;
        const r = a.fallocate(fd, a.modes.punchHole | a.modes.keepSize, offset, length);
        if (r === 0) return true;
        if (unsupported(r)) support.punchHole = false;
        else if (r !== -e.EINVAL) throw fail("fallocate(PUNCH_HOLE)", r);
        return false;
      };
      if (unmap && punch()) return "punch-hole";
      if (zero()) return "zero-range";
      if (!unmap && punch()) return "punch-hole";
      return "unsupported";
    },
    seekData(fd, offset) {
      const r = a.seekData(fd, offset);
      if (r >= 0) return r;
      if (r === -e.ENXIO) return null;
      if (unsupported(r) || r === -e.EINVAL) return "unsupported";
      throw fail("lseek(SEEK_DATA)", r);
    },
    seekHole(fd, offset) {
      const r = a.seekHole(fd, offset);
      if (r >= 0) return r;
      if (unsupported(r) || r === -e.EINVAL || r === -e.ENXIO) return "unsupported";
      throw fail("lseek(SEEK_HOLE)", r);
    },
    cloneBlockSize(fd) {
      if (!a.cloneRange || !a.blockSize) return 0;
      const bs = a.blockSize(fd);
      if (bs <= 0 || (bs & (bs - 1)) !== 0) return 0;
      const r = a.cloneRange(fd, 0, 0, bs);
      return r === -e.EINVAL || r === 0 ? bs : 0;
    },
    cloneRange(fd, src, dst, length) {
      if (!a.cloneRange) return "unsupported";
      const r = a.cloneRange(fd, src, dst, length);
      if (r === 0) return "cloned";
      if (noClone(r)) return "unsupported";
      throw fail("ioctl(FICLONERANGE)", r);
    },
    cloneFrom(fd, srcFd, src, dst, length) {
      if (!a.cloneFrom) return "unsupported";
      const r = a.cloneFrom(fd, srcFd, src, dst, length);
      if (r === 0) return "cloned";
      // EBADF: a source descriptor the clone cannot read from.
      if (noClone(r) || r === -constants.errno.EBADF) return "unsupported";
      throw fail("ioctl(FICLONERANGE)", r);
    },
  };
}
