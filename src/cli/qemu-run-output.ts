/**
 * The human-readable report of one `refcow run --emulator qemu`: per phase, the guest program's own write
 * latency (median, p99 in µs) and its closing fdatasync, the phase's wall time, and the snapshot.
 */
import type { QemuGuestResult } from "../guest/qemu-run.js";

const us = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const mib = (b: number) => `${(b / 2 ** 20).toFixed(b % 2 ** 20 === 0 ? 0 : 1)} MiB`;

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((v, c) => (c < 2 ? v.padEnd(widths[c]!) : v.padStart(widths[c]!))).join("  ").trimEnd()).join("\n") + "\n";
}

export function formatQemuRunResult(r: QemuGuestResult): string {
  const backend = r.backend === "refcow" ? `refcow nbd, scheme ${r.scheme}` : r.backend === "qemu-lazy" ? "QEMU's qcow2, lazy_refcounts=on" : "QEMU's qcow2";
  let out = `${r.workload} on ${r.image}: QEMU ${r.qemuVersion} (${r.accel}), ${backend}, cache ${r.cache}, ${mib(r.size)}, ${r.clusterSize / 1024} KiB clusters${r.created ? " (created)" : ""}; disk ${r.disk}, iodepth ${r.iodepth}\n`;
  out += `cold boot to the prompt: ${(r.bootMs / 1000).toFixed(2)} s`;
  if (r.workload === "rand4k" || r.workload === "overwrite") out += `; writes issued by ${r.ioTool === "dd" ? "one busybox dd each" : "refcow-io, back to back"}`;
  out += `; workload ${(r.workloadMs / 1000).toFixed(1)} s; host load ${r.loadAverage.map((x) => x.toFixed(2)).join(" ")}\n\n`;
  const rows: string[][] = [
    ["", "", "", "app µs", "", "", "fdatasync µs", "", ""],
    ["phase", "op", "count", "median", "p99", "max", "median", "time s", "guest IOPS"],
  ];
  for (const name of r.phaseOrder) {
    const p = r.phases[name]!;
    const a = p.app_us;
    rows.push([
      name,
      p.op,
      String(p.count),
      a?.count ? us(a.median) : "-",
      a?.count ? us(a.p99) : "-",
      a?.count ? us(a.max) : "-",
      p.flush_app_us?.count ? us(p.flush_app_us.median) : "-",
      (p.durationMs / 1000).toFixed(2),
      p.guest_iops !== undefined ? p.guest_iops.toFixed(0) : "-",
    ]);
  }
  out += table(rows);
  out += "(app: the guest program's system call, timed in the guest; QEMU has no device, ring or engine clock)\n";
  const post = r.phases["post-snapshot"]?.app_us;
  const inPlace = r.phases["in-place"]?.app_us;
  if (post?.count && inPlace?.count) out += `post-snapshot / in-place (app medians): ${(post.median / inPlace.median).toFixed(2)}×\n`;
  const s = r.snapshot;
  if (s) out += `\nsnapshot '${s.name}' before ${s.phase}: ${s.createMs.toFixed(1)} ms ${s.via === "qmp" ? "over QMP (blockdev-snapshot-internal-sync)" : "through refcow nbd's control socket (snapshot -c)"}\n`;
  return out;
}
