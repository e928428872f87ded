/**
 * The PCI side of refcow's virtio-blk device: its PCI identity, the legacy virtio-pci registers in BAR0,
 * the feature bits it offers and its configuration space. The register file itself is decoded by the
 * device (virtio-blk.ts), whose state the registers are; the queue they point to is virtqueue.ts's.
 *
 * Why a transport of its own: v86 0.5.462 has a virtio-pci implementation (src/virtio.js, used by its
 * virtio-net, virtio-console, virtio-balloon and 9p devices), but its release build neither exports it nor
 * keeps its name; it is reachable only through an instance of one of those devices. So refcow
 * implements the small legacy ("transitional") virtio-pci interface of the virtio 1.x spec, §4.1.4.8, on
 * v86's PCI device interface (`cpu.devices.pci.register_device`, I/O ports), which Linux's virtio_pci
 * drives when a device has no virtio capabilities (virtio_pci_legacy.c).
 *
 * ## Transport: legacy virtio over PCI (virtio 1.2 §4.1.4.8)
 *
 * PCI: vendor 0x1AF4, device 0x1001 (transitional block device), revision 0, subsystem vendor 0x1AF4,
 * subsystem id 2 (block), class 0x010000, interrupt pin INTA#, no capabilities, no MSI-X. BAR0 is an I/O
 * BAR of `IO_BAR_SIZE` bytes, little-endian:
 *
 *   off size  register
 *   0   4     device features (bits 0-31; read only)
 *   4   4     driver features (what the driver accepted)
 *   8   4     queue address: guest-physical page frame number (address >> 12) of the selected queue; 0 = off
 *   12  2     queue size (read only: QUEUE_SIZE)
 *   14  2     queue select
 *   16  2     queue notify: the driver writes a queue index after adding buffers
 *   18  1     device status (ACKNOWLEDGE 1, DRIVER 2, DRIVER_OK 4, FEATURES_OK 8, FAILED 128); 0 = reset
 *   19  1     ISR status: bit 0 = used buffers, bit 1 = config change; reading it clears it and lowers
 *             the interrupt line
 *   20  ...   device configuration (below)
 *
 * Configuration at BAR0 + 20 (the fields this device fills; the rest reads 0):
 *
 *   0  capacity u64 (512-byte sectors)    8  size_max u32 (SIZE_MAX)      12 seg_max u32 (SEG_MAX)
 *   16 geometry { cyl u16, heads u8, sectors u8 }                          20 blk_size u32 (BLK_SIZE)
 *   24 physical_block_exp u8, alignment_offset u8, min_io_size u16         28 opt_io_size u32
 *   32 writeback u8   34 num_queues u16
 *   36 max_discard_sectors u32  40 max_discard_seg u32  44 discard_sector_alignment u32 (DISCARD)
 *   48 max_write_zeroes_sectors u32  52 max_write_zeroes_seg u32  56 write_zeroes_may_unmap u8 (WRITE_ZEROES)
 *
 * Features offered: SIZE_MAX (1), SEG_MAX (2), BLK_SIZE (6), FLUSH (9), and, when the disk has them,
 * DISCARD (13) and WRITE_ZEROES (14).
 *
 * NOTIFY_ON_EMPTY (24) and, unless turned off, EVENT_IDX (29) are offered as well (virtqueue.ts).
 */

export const VIRTIO_VENDOR = 0x1af4;
export const VIRTIO_BLK_LEGACY_DEVICE = 0x1001;
export const VIRTIO_ID_BLOCK = 2;

/** Register offsets in BAR0. */
export const REG = {
  DEVICE_FEATURES: 0,
  DRIVER_FEATURES: 4,
  QUEUE_PFN: 8,
  QUEUE_SIZE: 12,
  QUEUE_SELECT: 14,
  QUEUE_NOTIFY: 16,
  STATUS: 18,
  ISR: 19,
  CONFIG: 20,
} as const;

export const CONFIG_SIZE = 60;
/** BAR0 size: a power of two >= 20 + CONFIG_SIZE. */
export const IO_BAR_SIZE = 128;

export const F_SIZE_MAX = 1;
export const F_SEG_MAX = 2;
export const F_BLK_SIZE = 6;
export const F_FLUSH = 9;
export const F_DISCARD = 13;
export const F_WRITE_ZEROES = 14;
/** Legacy: interrupt when the available ring runs empty, even with interrupts suppressed. */
export const F_NOTIFY_ON_EMPTY = 24;
/** used_event / avail_event (§2.7.7, §2.7.10). */
export const F_EVENT_IDX = 29;

export const STATUS_DRIVER_OK = 4;
export const STATUS_NEEDS_RESET = 64;

const SECTOR = 512;

/** What the device's features and configuration depend on. */
export interface BlkConfigOptions {
  /** Disk size in bytes (a multiple of 512). */
  size: number;
  hasDiscard: boolean;
  hasWriteZeroes: boolean;
  /** Offer EVENT_IDX (default true). */
  eventIdx?: boolean;
  /** SIZE_MAX, bytes (default 1 MiB). */
  sizeMax?: number;
  /** SEG_MAX. */
  segMax: number;
  /** BLK_SIZE (default 512). */
  blockSize?: number;
  /** Discard granularity in bytes (default 4096). */
  discardGranularity?: number;
}

/** The device feature bits offered. */
export function offeredFeatures(o: BlkConfigOptions): number {
  let f = (1 << F_SIZE_MAX) | (1 << F_SEG_MAX) | (1 << F_BLK_SIZE) | (1 << F_FLUSH);
  if (o.hasDiscard) f |= 1 << F_DISCARD;
  if (o.hasWriteZeroes) f |= 1 << F_WRITE_ZEROES;
  if (o.eventIdx ?? true) f |= 1 << F_EVENT_IDX;
  f |= 1 << F_NOTIFY_ON_EMPTY;
  return f >>> 0;
}

/** The configuration space at BAR0 + 20 (layout above). */
export function configSpace(o: BlkConfigOptions): Uint8Array {
  const c = new DataView(new ArrayBuffer(CONFIG_SIZE));
  const sectors = o.size / SECTOR;
  c.setUint32(0, sectors % 2 ** 32, true);
  c.setUint32(4, Math.floor(sectors / 2 ** 32), true);
  c.setUint32(8, o.sizeMax ?? 1 << 20, true);
  c.setUint32(12, o.segMax, true);
  const cyl = Math.min(65535, Math.floor(sectors / (16 * 63)));
  c.setUint16(16, cyl, true);
  c.setUint8(18, 16);
  c.setUint8(19, 63);
  c.setUint32(20, o.blockSize ?? SECTOR, true);
  c.setUint8(32, 1); // writeback (informative without CONFIG_WCE)
  c.setUint16(34, 1, true);
  const maxSectors = 0x400000; // 2 GiB per discard / write-zeroes request
  if (o.hasDiscard) {
    c.setUint32(36, maxSectors, true);
    c.setUint32(40, 1, true);
    c.setUint32(44, Math.max(1, (o.discardGranularity ?? 4096) / SECTOR), true);
  }
  if (o.hasWriteZeroes) {
    c.setUint32(48, maxSectors, true);
    c.setUint32(52, 1, true);
    c.setUint8(56, 1);
  }
  return new Uint8Array(c.buffer);
}
