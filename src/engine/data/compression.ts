/**
 * Decompression of compressed clusters. qcow2 compression type 0 is raw deflate (no zlib header); type 1 is
 * zstd (QEMU writes one zstd frame, the compressed data may be followed by padding up to the sector count).
 */
import { inflateRawSync } from "node:zlib";
import { decompress as zstdDecompress } from "fzstd";
import { ImageFormatError } from "../errors.js";

export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;

export function decompressCluster(type: number, data: Uint8Array, clusterSize: number, where: string): Uint8Array {
  let out: Uint8Array;
  try {
    if (type === COMPRESSION_ZLIB) {
      // finishFlush: the stored sector count rounds up, so trailing bytes past the stream are normal.
      out = inflateRawSync(data, { finishFlush: 2 /* Z_SYNC_FLUSH */, maxOutputLength: clusterSize });
    } else if (type === COMPRESSION_ZSTD) {
      // Into a cluster-sized buffer: a frame header is not trusted with the size of the allocation. The
      // decompressed size is then only known from the header: it must be the cluster size, as QEMU requires.
      const size = zstdContentSize(data);
      if (size !== undefined && size !== BigInt(clusterSize)) {
        throw new ImageFormatError(`compressed cluster ${where} holds ${size} bytes instead of ${clusterSize}`, { corruption: false });
      }
      out = zstdDecompress(trimZstd(data), new Uint8Array(clusterSize));
    } else {
      throw new ImageFormatError(`unknown compression type ${type}`);
    }
  } catch (e) {
    if (e instanceof ImageFormatError) throw e;
    throw new ImageFormatError(`compressed cluster ${where} cannot be decompressed: ${(e as Error).message}`, { corruption: false });
  }
  if (out.length < clusterSize) {
    throw new ImageFormatError(`compressed cluster ${where} decompresses to ${out.length} bytes instead of ${clusterSize}`, { corruption: false });
  }
  return out.length === clusterSize ? out : out.subarray(0, clusterSize);
}

/** The content size a zstd frame header declares, if it declares one. */
function zstdContentSize(data: Uint8Array): bigint | undefined {
  if (data.length < 6) return undefined;
  const fhd = data[4];
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  const bytes = [single ? 1 : 0, 2, 4, 8][fcsFlag];
  if (!bytes) return undefined;
  const pos = 5 + (single ? 0 : 1) + [0, 1, 2, 4][fhd & 3];
  if (pos + bytes > data.length) return undefined;
  let v = 0n;
  for (let i = bytes - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[pos + i]);
  return bytes === 2 ? v + 256n : v;
}

/** Returns the bytes of the first zstd frame (fzstd rejects trailing padding). */
function trimZstd(data: Uint8Array): Uint8Array {
  // Frame layout: magic(4) FHD(1) [WD] [DictID] [FCS] blocks... [checksum]
  if (data.length < 6) return data;
  const fhd = data[4];
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictFlag = fhd & 3;
  let pos = 5 + (single ? 0 : 1) + [0, 1, 2, 4][dictFlag] + [single ? 1 : 0, 2, 4, 8][fcsFlag];
  for (;;) {
    if (pos + 3 > data.length) return data;
    const bh = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16);
    const last = bh & 1;
    const type = (bh >> 1) & 3;
    const size = bh >>> 3;
    pos += 3 + (type === 1 ? 1 : size);
    if (last) break;
  }
  if (checksum) pos += 4;
  return data.subarray(0, Math.min(pos, data.length));
}
