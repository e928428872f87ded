/** Synopses and help text of the qemu-img / qemu-io compatible commands. */
import { rangeText, SCHEME_NAMES, schemesWithOptions } from "../schemes/index.js";

export interface CommandHelp {
  summary: string;
  usage: string;
  help: string;
}

const CACHE_HELP =
  "  -t cache       cache mode for writing: writeback, writethrough, unsafe, none (= writeback),\n" +
  "                 directsync (= writethrough)\n";
/**
 * The --scheme-opt lines, from the options the schemes declare; `col` is the column the descriptions of the
 * command's help start at.
 */
export function schemeOptHelp(col: number): string {
  const pad = (s: string) => (s.length + 1 >= col ? `${s}\n${" ".repeat(col)}` : s.padEnd(col));
  let out = `${pad("  --scheme-opt K=V,...")}options of the scheme (repeatable; the last value of a key wins):\n`;
  for (const { scheme, options } of schemesWithOptions()) {
    for (const o of options) {
      const key = `${scheme}: ${o.name}=${o.kind === "size" ? "SIZE" : "N"}`.padEnd(20);
      out += `${" ".repeat(col + 2)}${key} ${o.help} (${rangeText(o)}; default ${o.defaultText})\n`;
    }
  }
  return out;
}

const SCHEME_HELP = `  --scheme S     refcount scheme used while the image is open (${SCHEME_NAMES.join(", ")})\n` + schemeOptHelp(17);
const ALLOC_HELP =
  "  --alloc A      allocation policy while the image is open: first-fit (default: reuse the lowest free\n" +
  "                 clusters) or append (new clusters always at the end of the file; see compact)\n";

/** The help of --no-reflink, its text starting at `column`. */
export const noReflinkHelp = (column: number): string =>
  "  --no-reflink".padEnd(column) +
  "copy the part of a copied-on-write cluster the write does not cover, even\n" +
  " ".repeat(column) +
  "where the file system could share it (XFS with reflink, btrfs: shared by default;\n" +
  " ".repeat(column) +
  "REFCOW_REFLINK=0 in the environment does the same)\n";

const NO_REFLINK_HELP = noReflinkHelp(17);

export const HELP: Record<string, CommandHelp> = {
  create: {
    summary: "create a new image",
    usage: "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]",
    help:
      "  -f fmt         image format: qcow2 or raw (default raw)\n" +
      "  -o options     comma-separated format options (-o help lists them): cluster_size, compat (0.10|1.1|v2|v3),\n" +
      "                 lazy_refcounts, refcount_bits, extended_l2, compression_type (zlib|zstd),\n" +
      "                 backing_file, backing_fmt, size\n" +
      "  -b file        backing file (relative names are relative to the new image's directory)\n" +
      "  -F fmt         backing file format\n" +
      "  -u             do not open the backing file (size must be given)\n" +
      "  -q             quiet: no \"Formatting ...\" line\n" +
      "  size           virtual size in bytes; suffixes k, M, G, T, P, E (powers of 1024)\n",
  },
  info: {
    summary: "show information about an image",
    usage: "info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename",
    help:
      "  -f fmt          image format (probed when omitted)\n" +
      "  --output=ofmt   human (default) or json, with qemu-img's field names\n" +
      "  --backing-chain show every image of the backing chain\n",
  },
  check: {
    summary: "check an image for consistency, optionally repair it",
    usage: "check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-t cache] [--scheme S] [--scheme-opt K=V,...] [--alloc A] [--no-reflink] [-U] filename",
    help:
      "  -r leaks|all   repair leaked clusters only, or every kind of error\n" +
      "  --output=ofmt  human (default) or json\n" +
      CACHE_HELP +
      SCHEME_HELP +
      ALLOC_HELP +
      NO_REFLINK_HELP +
      "Exit status: 0 consistent, 1 check not completed, 2 corruptions, 3 leaked clusters only,\n" +
      "63 the format has no consistency check.\n",
  },
  snapshot: {
    summary: "list, create, apply or delete internal snapshots",
    usage: "snapshot [-q] [-U] [-t cache] [--scheme S] [--scheme-opt K=V,...] [--alloc A] [--no-reflink] [-l | -a snapshot | -c snapshot | -d snapshot] filename",
    help:
      "  -l             list the snapshots\n" +
      "  -c name        create a snapshot\n" +
      "  -a name        apply (revert to) a snapshot, by ID or name\n" +
      "  -d name        delete a snapshot, by name\n" +
      CACHE_HELP +
      SCHEME_HELP +
      ALLOC_HELP +
      NO_REFLINK_HELP,
  },
  bitmap: {
    summary: "add, remove, clear, enable, disable or merge persistent dirty bitmaps",
    usage: "bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [--disabled] [-f fmt] filename bitmap",
    help:
      "  --add          add the bitmap (enabled; '--add --disable' adds it disabled)\n" +
      "  --remove       remove the bitmap and free its clusters\n" +
      "  --clear        clear every bit\n" +
      "  --enable       record guest writes from now on (the auto flag)\n" +
      "  --disable      stop recording guest writes\n" +
      "  --merge SOURCE set every bit dirty in bitmap SOURCE (of this image, or of -b source_file)\n" +
      "  -b file        the image holding the --merge source bitmap (-F: its format)\n" +
      "  -g size        granularity of an added bitmap (default: the cluster size within 4 KiB..64 KiB)\n" +
      "  --disabled     every --add of this call adds a disabled bitmap\n" +
      "The operations run in the order given; the first that fails ends the command.\n",
  },
  convert: {
    summary: "convert an image (or a snapshot of it) to another image",
    usage:
      "convert [-q] [-p] [-n] [-U] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-o options] " +
      "[-l snapshot_param | -s snapshot] [-S sparse_size] [--bitmaps [--skip-broken-bitmaps]] [--scheme S] [--scheme-opt K=V,...] [--alloc A] filename [filename2 [...]] output_filename",
    help:
      "  -O fmt          output format: raw (default) or qcow2\n" +
      "  -o options      output format options, as for create\n" +
      "  -l param        read from an internal snapshot: snapshot.id=ID,snapshot.name=NAME or ID_OR_NAME\n" +
      "  -s name         same as -l name (older qemu-img)\n" +
      "  --bitmaps       copy the source's persistent bitmaps (one qcow2 source, qcow2 v3 output)\n" +
      "  --skip-broken-bitmaps  with --bitmaps: leave out inconsistent (in-use) bitmaps instead of failing\n" +
      "  -n              do not create the output image; write into an existing one\n" +
      "  -S size         runs of zeroes at least this long are not written (default 4k; 0 writes everything)\n" +
      "  -t cache        cache mode of the output (default unsafe)\n" +
      SCHEME_HELP +
      ALLOC_HELP,
  },
  compare: {
    summary: "compare the contents of two images",
    usage: "compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2",
    help:
      "  -f fmt   format of the first image\n" +
      "  -F fmt   format of the second image\n" +
      "  -s       strict: fail on different image sizes or allocation\n" +
      "Exit status: 0 identical, 1 different, 2 an image could not be opened, 3 allocation query failed,\n" +
      "4 read error.\n",
  },
  map: {
    summary: "show the allocation map of an image",
    usage: "map [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename",
    help: "  --output=ofmt  human (default) or json\n",
  },
  rebase: {
    summary: "change the backing file an image names, keeping what the guest reads (unsafe mode -u: the name only)",
    usage: "rebase [-f fmt] [-q] [-u] -b backing_file [-F backing_fmt] filename",
    help:
      "  (safe mode)    where the old chain and the new backing file read differently, the old bytes are copied\n" +
      "                 into the image first; both chains are only read (paths or URLs)\n" +
      "  -u             unsafe: only the header changes; the new backing file is not opened, and must hold\n" +
      "                 what the old one did where the image does not\n" +
      "  -b name        the new backing file: a path (relative to the image) or an http(s) URL; \"\" for none\n" +
      "  -F fmt         its format (qcow2 or raw); required with a name\n",
  },
  compact: {
    summary: "move every cluster down into the free space inside an image, then shrink the file",
    usage: "compact [-q] [-f fmt] [--scheme S] [--scheme-opt K=V,...] filename",
    help:
      "  -f fmt         image format (qcow2; probed when omitted)\n" +
      SCHEME_HELP +
      "  -q             quiet: print nothing on success\n" +
      "Data, L2 and L1 tables (of the active layer and of every snapshot), the snapshot table, refcount\n" +
      "structures and VM state move down into free clusters; every reference is rewritten, then the file is\n" +
      "truncated. Snapshots keep their contents. The image must pass check (repair it first with check -r all)\n" +
      "and be version 3 (compat=1.1); a crash in the middle leaves an image the next open repairs.\n",
  },
  io: {
    summary: "run qemu-io commands (read, write, discard, flush...) on an image",
    usage:
      "io [-f fmt] [-r] [-s] [-t cache] [-n] [--scheme S] [--scheme-opt K=V,...] [--alloc A] [--no-reflink] [--stats] [--in-process] [-c command]... filename",
    help:
      "  -c, --cmd CMD  run CMD (several -c run in order; without -c commands are read from stdin)\n" +
      "  -f fmt         image format (probed when omitted)\n" +
      "  -r             open read-only\n" +
      "  -s             snapshot mode: writes go to a private in-memory view and are dropped at exit\n" +
      "  -t cache       writethrough (default, as qemu-io), writeback, unsafe, none (= writeback),\n" +
      "                 directsync (= writethrough); -n is -t none\n" +
      SCHEME_HELP +
      ALLOC_HELP +
      NO_REFLINK_HELP +
      "  --stats        print the engine's I/O cost breakdown by purpose at the end\n" +
      "  --in-process   serve the image in this thread; by default a worker thread serves it through the\n" +
      "                 request ring (-s always serves it in this thread)\n" +
      "  -V             print the version\n" +
      "  -U, -k, -m, -i mode, -d mode, -T trace\n" +
      "                 accepted as qemu-io accepts them, without effect\n" +
      "Commands (help CMD describes one; most have a one-letter alias):\n" +
      "  read, readv            read bytes (-P checks a pattern, -v dumps them)\n" +
      "  write, writev          write bytes (-P pattern, -s file, -z zeroes, -u unmap, -f FUA)\n" +
      "  aio_read, aio_write    queue a request; the queue starts at the next other command and\n" +
      "  aio_flush              completions print as they come; aio_flush waits for them all\n" +
      "  discard                discard a range\n" +
      "  flush                  flush the image to its storage\n" +
      "  alloc, map             which ranges are allocated\n" +
      "  truncate               resize the image\n" +
      "  length, info           the image's size; its format, cluster size and format details\n" +
      "  open, close, reopen    open another image, close it, reopen it with other options\n" +
      "  sleep                  wait a number of milliseconds\n" +
      "  sigraise, abort        raise a signal, or abort(3) the process (crash tests)\n" +
      "  help [cmd], quit\n" +
      "Exit status 1 when any command failed (a pattern mismatch in read -P included).\n",
  },
};

export function commandHelpText(name: string, help: CommandHelp): string {
  return `usage: refcow ${help.usage}\n${help.summary}\n\n${help.help}`;
}
