/** The text of `refcow boot --help` and its line in `refcow --help`, kept apart so that the CLI loads the command only when it runs. */
import { noReflinkHelp, schemeOptHelp } from "../help.js";
import { SCHEME_NAMES } from "../../schemes/index.js";

export const BOOT_SUMMARY = "boot the OS installed on an image (v86), its serial console on the terminal";

export const BOOT_USAGE = "boot [--disk ide|virtio] [-t CACHE] [--scheme S] [--scheme-opt K=V,...] [--no-reflink] [-m MIB] [-snapshot | --overlay FILE] [--loadvm NAME] [--cache-dir DIR] IMAGE";

export const BOOT_HELP = `
Boots IMAGE (qcow2 — any QEMU writes — or raw) as the disk of a v86 PC: SeaBIOS boots the disk's own
boot loader, as a real machine would; no kernel is handed to the emulator. The image is served by refcow
from a worker thread. The machine's serial console (COM1) is the terminal, in raw mode: keys go to the
guest, its output to stdout (stdin may be a pipe). 'refcow os-image' writes a demo OS to boot.

  --disk D        the disk's device: ide (default; v86's IDE primary master) or virtio (refcow's
                  virtio-blk PCI device; SeaBIOS boots it)
  -t CACHE        cache mode: writeback (default), writethrough, unsafe, none (= writeback),
                  directsync (= writethrough)
  --scheme S      refcount scheme while the image is open: ${SCHEME_NAMES.join(", ")} (default eager)
${schemeOptHelp(18)}${noReflinkHelp(18)}  -m MIB          guest RAM in MiB (default 128)
  -snapshot       writes go to a temporary qcow2 overlay, dropped at exit; IMAGE is only read, unless
                  Ctrl-A s commits them
  --overlay FILE  writes go to FILE, a qcow2 overlay over IMAGE made on first use and reused after (a
                  plain qcow2 naming IMAGE as its backing file); IMAGE is only read
  --cache-dir DIR where chunks of an image read by URL are kept across runs (default
                  $XDG_CACHE_HOME/refcow/http or ~/.cache/refcow/http; "off": none)
  --loadvm NAME   start from snapshot NAME (one savevm made: disk and machine state) instead of booting

IMAGE may be an http(s) URL (the server must answer Range requests): it is read in 1 MiB chunks as the
guest asks, kept in the chunk cache, and needs --overlay or -snapshot (a remote image is read-only).

Escapes (Ctrl-A, then a key), as QEMU's -nographic:
  Ctrl-A x        quit: the CPU stops, the disk's requests complete, the image is closed cleanly
  Ctrl-A c        switch between the console and the monitor (prompt '(refcow) ')
  Ctrl-A h        list the escapes
  Ctrl-A s        save disk data back to file: with -snapshot, the overlay's data is committed into
                  IMAGE (the guest paused meanwhile); without, the image is flushed
  Ctrl-A Ctrl-A   send Ctrl-A to the guest

Monitor commands (QEMU's HMP): savevm [NAME], loadvm NAME, delvm NAME, info snapshots, info block,
info status, stop, cont, quit, help.

The program ends when the guest powers off (status 0), on Ctrl-A x or the monitor's quit (0), on
SIGTERM, SIGHUP or SIGINT (0, as QEMU), and with status 1 when the BIOS finds nothing to boot (its
message is shown). The image is closed cleanly in every case. Progress goes to stderr.

v86's own WebAssembly is compiled optimized once at start and the code its JIT makes by V8's baseline
compiler alone (README: "WebAssembly compilers (Node)"); REFCOW_WASM_TIERUP=1 keeps V8's default.
`;
