/**
 * qcow2 feature bits (header v3, offsets 72/80/88), as in QEMU's docs/interop/qcow2.txt.
 *
 *   incompatible_features (72): bit 0 dirty, 1 corrupt, 2 external data file, 3 compression type,
 *                               4 extended L2 entries. An unknown bit set means the image must not be opened.
 *                               Bits 32 and up are refcow's schemes' (each declares its own: src/schemes).
 *   compatible_features   (80): bit 0 lazy refcounts. Unknown bits may be ignored.
 *   autoclear_features    (88): bit 0 bitmaps extension consistent, 1 raw external data. A writer that does not
 *                               know a bit must clear it when it opens the image for writing.
 */

export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
/**
 * The standard incompatible bits (the engine refuses the external data file at open). The schemes' bits are
 * added by the scheme catalog (SchemeCatalog.knownIncompatible).
 */
export const INCOMPAT_STANDARD = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;

export const AUTOCLEAR_BITMAPS = 1n << 0n;
export const AUTOCLEAR_DATA_FILE_RAW = 1n << 1n;
/** Autoclear bits the engine keeps on a writable open: the bitmaps bit (src/engine/snapshots/bitmaps.ts maintains them). */
export const AUTOCLEAR_KNOWN = AUTOCLEAR_BITMAPS;

export type FeatureType = 0 | 1 | 2; // incompatible, compatible, autoclear

export interface FeatureName {
  type: FeatureType;
  bit: number;
  name: string;
}

/** The feature name table QEMU writes (8 entries, 48 bytes each); refcow adds its schemes' bits (SchemeCatalog.featureNames). */
export const QEMU_FEATURE_NAMES: readonly FeatureName[] = [
  { type: 0, bit: 0, name: "dirty bit" },
  { type: 0, bit: 1, name: "corrupt bit" },
  { type: 0, bit: 2, name: "external data file" },
  { type: 0, bit: 3, name: "compression type" },
  { type: 0, bit: 4, name: "extended L2 entries" },
  { type: 1, bit: 0, name: "lazy refcounts" },
  { type: 2, bit: 0, name: "bitmaps" },
  { type: 2, bit: 1, name: "raw external data" },
];

export function bitsOf(mask: bigint): number[] {
  const out: number[] = [];
  for (let i = 0; i < 64; i++) if (mask & (1n << BigInt(i))) out.push(i);
  return out;
}
