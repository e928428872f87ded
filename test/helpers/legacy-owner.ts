/**
 * An `owner` image as an earlier refcow left it at a clean close: the owner table (one u32 owner per host
 * cluster: 0 free, 1 shared, 2 the active node, 0xffffffff metadata) written past the end of the image in
 * clusters the refcounts call free, header extension 0x52434f57 ("RCOW": u64 table offset, u32 entries, u32
 * active node, u32 node count, then per node u32 id, u32 parent, u32 flags (1 legacy), u16 snapshot-id length,
 * the id, padding to 4), and autoclear bit 32 set. The tree is the one that format built for an image whose
 * snapshots it could not place (one legacy node per snapshot), which its loader accepted.
 */
import { alignUp } from "../../src/format/bytes.js";
import { serializeHeader } from "../../src/format/header.js";
import { AUTOCLEAR_REFCOW_OWNER_LEGACY, EXT_REFCOW_OWNER_LEGACY } from "../../src/schemes/owner.js";
import { SCHEME_CATALOG } from "../../src/schemes/index.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { MemoryFile } from "../../src/io/memory-file.js";

export function withLegacyOwnerTable(image: Uint8Array): Uint8Array {
  const mem = new MemoryFile();
  mem.write(image, 0);
  const img = Qcow2Image.open(mem, { readOnly: true, noBacking: true });
  try {
    const cs = img.clusterSize;
    const entries = Math.ceil(image.length / cs);
    const table = new Uint8Array(entries * 4);
    const tv = new DataView(table.buffer);
    const meta = new Set<number>([0, img.core.header.l1TableOffset / cs, img.core.refcounts.tableOffset / cs]);
    for (const b of img.core.refcounts.table) if (b) meta.add(b / cs);
    for (let c = 0; c < entries; c++) {
      if (img.core.refcounts.get(c) === 0) continue;
      tv.setUint32(c * 4, meta.has(c) ? 0xffffffff : img.core.snapshots.length ? 1 : 2);
    }
    const enc = new TextEncoder();
    const nodes = [{ id: 2, parent: 0, flags: 0, snapshot: "" }, ...img.core.snapshots.map((sn, i) => ({ id: 3 + i, parent: 0, flags: 1, snapshot: sn.id }))];
    const ext = new Uint8Array(20 + nodes.reduce((a, n) => a + alignUp(14 + enc.encode(n.snapshot).length, 4), 0));
    const v = new DataView(ext.buffer);
    const offset = alignUp(image.length, cs);
    v.setBigUint64(0, BigInt(offset));
    v.setUint32(8, entries);
    v.setUint32(12, 2);
    v.setUint32(16, nodes.length);
    let p = 20;
    for (const n of nodes) {
      const id = enc.encode(n.snapshot);
      v.setUint32(p, n.id);
      v.setUint32(p + 4, n.parent);
      v.setUint32(p + 8, n.flags);
      v.setUint16(p + 12, id.length);
      ext.set(id, p + 14);
      p = alignUp(p + 14 + id.length, 4);
    }
    const h = { ...img.core.header, extensions: [...img.core.header.extensions, { type: EXT_REFCOW_OWNER_LEGACY, data: ext }] };
    h.autoclearFeatures |= AUTOCLEAR_REFCOW_OWNER_LEGACY;
    const out = new Uint8Array(offset + table.length);
    out.set(image);
    out.set(serializeHeader(h, cs, { featureNames: SCHEME_CATALOG.featureNames }), 0);
    out.set(table, offset);
    return out;
  } finally {
    img.close();
  }
}
