/** The text of `refcow nbd --help` and its line in `refcow --help`, kept apart so that the CLI loads the command only when it runs. */
import { noReflinkHelp, schemeOptHelp } from "../help.js";
import { SCHEME_NAMES } from "../../schemes/index.js";

export const NBD_SUMMARY = "export an image over NBD (qemu-nbd's options): for qemu-io, qemu-img, nbdcopy, fio, the nbd driver";

export const NBD_USAGE =
  "nbd [-k SOCKET | -p PORT [-b ADDR]] [-x NAME] [-D TEXT] [-r] [-t] [-e N] [--cache=MODE] [--discard=ignore|unmap] [--detect-zeroes=off|on|unmap] [-A] [-B BITMAP]... [-l SNAPSHOT | -s] [--fork] [--pid-file FILE] [-f qcow2|raw] [--scheme S] [--scheme-opt K=V,...] [--alloc A] [--no-reflink] [--serve=inline|ring] [--no-warm-up] [--object OBJ]... [--tls-creds=ID [--tls-authz=ID]] [--handshake-limit=N] [--monitor SOCK] IMAGE";

export const NBD_HELP = `
Exports IMAGE over the NBD protocol, taking qemu-nbd's options.

  -k, --socket=PATH        listen on a Unix socket (instead of TCP)
  -p, --port=PORT          TCP port (default 10809)
  -b, --bind=ADDR          TCP address (default 0.0.0.0)
  -x, --export-name=NAME   export name (default "")
  -D, --description=TEXT   export description
  -r, --read-only          export read-only
  -t, --persistent         keep serving after the last client disconnects
  -e, --shared=N           clients served at once (default 1; 0: no limit)
  --cache=MODE             writethrough, writeback (default), unsafe, none (= writeback), directsync (= writethrough)
  -n, --nocache            --cache=none
  --discard=MODE           ignore (default) or unmap: what a trim does
  --detect-zeroes=MODE     off (default), on, unmap (needs --discard=unmap): writes of zeroes become zero writes
  -A, --allocation-depth   also offer the metadata context qemu:allocation-depth (which layer of the backing
                           chain each range comes from: 0 none, 1 the image, 2 its backing file...)
  -B, --bitmap=NAME        also offer the persistent dirty bitmap NAME as the context qemu:dirty-bitmap:NAME
                           (status 1: dirty); repeatable
  -l, --load-snapshot=SN   export internal snapshot SN (ID or name, or snapshot.id=ID,snapshot.name=NAME), read-only
  -s, --snapshot           writes go to a temporary qcow2 overlay (deleted at exit); IMAGE is not modified
  --fork                   return once the export is ready; the server goes on in the background
  --pid-file=FILE          write the server's process id to FILE (removed at exit)
  -f, --format=FMT         qcow2 or raw (probed when omitted)
  --scheme S               refcount scheme while the image is open (${SCHEME_NAMES.join(", ")})
${schemeOptHelp(27)}  --alloc A                allocation policy: first-fit (default) or append
${noReflinkHelp(27)}  --serve=MODE             inline (default): one thread owns the sockets and the image and serves each
                           request as it is read; ring: the image in a worker thread behind the request ring
  --no-warm-up             inline: accept clients at once, without first serving a scratch image (which
                           compiles the request path before the first client)
  --object OBJ             define an object for the TLS options (QEMU's syntax, a literal comma as ",,"):
                             tls-creds-x509,id=ID,dir=DIR,endpoint=server[,verify-peer=on|off]
                               DIR holds ca-cert.pem, server-cert.pem, server-key.pem [, ca-crl.pem];
                               verify-peer (default on): clients must show a certificate the CA signed
                             tls-creds-psk,id=ID,dir=DIR,endpoint=server
                               DIR holds keys.psk: one 'identity:hexkey' a line (psktool's format)
                             authz-simple,id=ID,identity=DN
                             authz-list-file,id=ID,filename=FILE[,refresh=on|off]   (QEMU's JSON rules)
  --tls-creds=ID           require TLS (NBD_OPT_STARTTLS) with the credentials object ID
  --tls-authz=ID           admit only the client certificates whose distinguished name (as
                           C=GB,O=Example,CN=client) the authorization object ID allows
  --handshake-limit=N      disconnect a client not past the handshake after N seconds (default 10; 0: never)
  --monitor=SOCK           control socket (Unix) for operations on the live image while it is served: a
                           line 'snapshot -c NAME' takes an internal snapshot (acknowledged writes in it),
                           'snapshot -l' lists them, 'snapshot -d NAME' deletes one; each answer ends in a
                           line OK or ERROR <message> (e.g. echo 'snapshot -c s1' | socat - UNIX:SOCK)
  -v, --verbose            report protocol errors and refused clients on stderr
`;
