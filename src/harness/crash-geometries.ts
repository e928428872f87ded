/** The image shapes the crash harness runs its workloads on (a module of its own: the CLI's help names them without loading the harness). */

/** Image shape of a workload: small disks, so that crash states are cheap and structures fill up quickly. */
export interface CrashGeometry {
  name: string;
  clusterSize: number;
  size: number;
  extendedL2?: boolean;
}

export const CRASH_GEOMETRIES: readonly CrashGeometry[] = [
  // The common case.
  { name: "4k", clusterSize: 4096, size: 64 * 4096 },
  // Tiny clusters: several L2 tables, refcount blocks added while the image grows (the journal alone needs 2048).
  { name: "512", clusterSize: 512, size: 512 * 512 },
  // Subcluster allocation.
  { name: "16k-extl2", clusterSize: 16384, size: 32 * 16384, extendedL2: true },
];
