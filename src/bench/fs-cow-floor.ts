/**
 * The file system's own floor for the reflink bench's pattern, without qcow2 (reflink.ts measures it in the
 * same rounds as the engine): N writes of 4 KiB, one 4 KiB into each 64 KiB cluster, made durable — in writeback by one fdatasync after
 * them all, in writethrough by one after each.
 *
 *   in place   the N writes into clusters written and synced before the clock
 *   COW        N new clusters made from N old ones with the guest's 4 KiB in each: where the file shares
 *              extents, the old clusters cloned onto the new ones (in writeback all in one FICLONERANGE, as
 *              `log`'s apply shares neighbours in one clone; in writethrough one per write) and the writes
 *              over them; elsewhere (or with noReflink) each cluster's other 60 KiB read and the whole 64 KiB
 *              written
 *
 * In writeback, COW ÷ in place is what any scheme that ends with plain qcow2 clusters pays at least on that
 * file system, beyond its own metadata: the bound under the bench's "post-snapshot / in-place, close
 * included". In writethrough it is the bound for a scheme that makes each COW durable with its write (eager,
 * lazy, owner); `log` defers the COW to its apply and is bounded by the writeback figure instead.
 * The file is made afresh each round, in the place's directory, and removed.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { nativeFileOps } from "../io/native-fileops.js";

const CLUSTER = 64 * 1024;
const WRITE = 4096;
const AT = 4096;

export interface FloorRound {
  /** µs for the whole phase (writes and the fdatasync). */
  inPlaceUs: number;
  cowUs: number;
  /** How the COW's untouched bytes were made: shared by clones, read and written, or some of each. */
  how: "clone" | "copy" | "mixed";
}

/** One round in `dir`: old clusters at [0, n), in-place ones at [n, 2n), new ones at [2n, 3n). */
export function fsFloorRound(dir: string, n: number, noReflink: boolean, eachDurable: boolean): FloorRound {
  const file = path.join(dir, `fs-floor-${process.pid}.bin`);
  const fd = fs.openSync(file, "w+");
  try {
    const fill = Buffer.alloc(CLUSTER, 0x5a);
    for (let i = 0; i < 2 * n; i++) fs.writeSync(fd, fill, 0, CLUSTER, i * CLUSTER);
    fs.fdatasyncSync(fd);
    const guest = Buffer.alloc(WRITE, 0xa5);

    const durable = (last: boolean) => {
      if (eachDurable || last) fs.fdatasyncSync(fd);
    };
    let t = performance.now();
    for (let i = 0; i < n; i++) {
      fs.writeSync(fd, guest, 0, WRITE, (n + i) * CLUSTER + AT);
      durable(i === n - 1);
    }
    const inPlaceUs = (performance.now() - t) * 1000;

    const ops = noReflink ? null : nativeFileOps();
    const canClone = ops !== null && ops.cloneBlockSize(fd) > 0;
    const clone = (from: number, count: number) => canClone && ops.cloneRange(fd, from * CLUSTER, (2 * n + from) * CLUSTER, count * CLUSTER) === "cloned";
    const buf = Buffer.alloc(CLUSTER);
    let clones = 0;
    t = performance.now();
    const all = !eachDurable && clone(0, n);
    if (all) clones = n;
    for (let i = 0; i < n; i++) {
      if (all || (eachDurable && clone(i, 1) && ++clones)) {
        fs.writeSync(fd, guest, 0, WRITE, (2 * n + i) * CLUSTER + AT);
      } else {
        fs.readSync(fd, buf, 0, CLUSTER, i * CLUSTER);
        guest.copy(buf, AT);
        fs.writeSync(fd, buf, 0, CLUSTER, (2 * n + i) * CLUSTER);
      }
      durable(i === n - 1);
    }
    const cowUs = (performance.now() - t) * 1000;
    return { inPlaceUs, cowUs, how: clones === n ? "clone" : clones === 0 ? "copy" : "mixed" };
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
}
