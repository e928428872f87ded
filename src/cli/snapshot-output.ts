/**
 * The snapshot table of `qemu-img snapshot -l` and `qemu-img info` (block/qapi.c bdrv_snapshot_dump,
 * QEMU 7.2): header "%-10s%-17s%8s%20s%13s%11s", rows "%-9s %-16s %8s%20s%13s%11s"; the date is local time,
 * the VM clock hh:mm:ss.mmm, the icount column blank when the snapshot recorded none.
 */
import { sizeToStr } from "./human-size.js";
import { padLeft, padRight, zeroPad } from "./text.js";

export interface SnapshotRow {
  id: string;
  name: string;
  vmStateSize: number;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: number;
  /** undefined when not recorded (-1 on disk). */
  icount?: number;
}

export function snapshotHeader(): string {
  return padRight("ID", 10) + padRight("TAG", 17) + padLeft("VM SIZE", 8) + padLeft("DATE", 20) + padLeft("VM CLOCK", 13) + padLeft("ICOUNT", 11);
}

/** g_date_time_format(g_date_time_new_from_unix_local(sec), "%Y-%m-%d %H:%M:%S"). */
export function localDate(sec: number): string {
  const d = new Date(sec * 1000);
  return (
    `${zeroPad(d.getFullYear(), 4)}-${zeroPad(d.getMonth() + 1, 2)}-${zeroPad(d.getDate(), 2)} ` +
    `${zeroPad(d.getHours(), 2)}:${zeroPad(d.getMinutes(), 2)}:${zeroPad(d.getSeconds(), 2)}`
  );
}

export function vmClock(nsec: number): string {
  const secs = Math.trunc(nsec / 1e9);
  return (
    `${zeroPad(Math.trunc(secs / 3600), 2)}:${zeroPad(Math.trunc(secs / 60) % 60, 2)}:` +
    `${zeroPad(secs % 60, 2)}.${zeroPad(Math.trunc(nsec / 1e6) % 1000, 3)}`
  );
}

export function snapshotRow(sn: SnapshotRow): string {
  return (
    `${padRight(sn.id, 9)} ${padRight(sn.name, 16)} ` +
    padLeft(sizeToStr(sn.vmStateSize), 8) +
    padLeft(localDate(sn.dateSec), 20) +
    padLeft(vmClock(sn.vmClockNsec), 13) +
    padLeft(sn.icount === undefined ? "" : String(sn.icount), 11)
  );
}

/** "Snapshot list:", the header and one row per snapshot, each line ending in "\n"; "" when there are none. */
export function snapshotTable(snapshots: readonly SnapshotRow[]): string {
  if (snapshots.length === 0) return "";
  let out = `Snapshot list:\n${snapshotHeader()}\n`;
  for (const sn of snapshots) out += `${snapshotRow(sn)}\n`;
  return out;
}
