/**
 * Honest flushes for v86's IDE disk.
 *
 * v86 0.5.462 (src/ide.js, `IDEInterface.prototype.ata_command`) answers FLUSH CACHE (0xE7) and FLUSH CACHE
 * EXT (0xEA) at once — `status_reg = 0x50; push_irq()` — without telling the disk object, and its IDENTIFY
 * data (`create_identify_packet`) does not advertise a write cache (word 82 = 0x4000, word 85 = 0x4000). Linux
 * therefore sees "write cache: disabled", never sends a flush at all (the block layer drops REQ_PREFLUSH for
 * a queue without a write cache), and fsync on the disk means nothing.
 *
 * `installHonestFlush` patches v86's `IDEInterface` prototype at runtime (v86 seals its drive objects, so
 * own properties cannot be added; nothing in node_modules changes). The patched methods behave exactly like
 * v86's for every drive that has not been registered; a registered drive (the hda of one emulator, mapped
 * to its adapter in a WeakMap) gets:
 *
 *  1. `create_identify_packet`: after v86 fills IDENTIFY, set word 82 bit 5 (write cache supported) and
 *     word 85 bit 5 (write cache enabled). FLUSH CACHE / FLUSH CACHE EXT support (words 83/86 bits 12/13)
 *     are already advertised by v86. Linux (libata) then reports the write cache enabled and issues FLUSH
 *     CACHE EXT for REQ_PREFLUSH (fsync/fdatasync of /dev/sda, a filesystem's fsync and journal commits;
 *     a bare `sync` with no filesystem mounted sends none). This is a true statement in `writeback` mode:
 *     writes the engine acknowledged are durable only after its flush.
 *  2. `ata_command`: for 0xE7/0xEA, set BSY (status 0xD0), queue a flush on the adapter (behind every
 *     write already submitted, including fire-and-forget PIO writes), and only when the disk's flush has
 *     resolved set status 0x50 (DRDY|DSC) and raise the IRQ — the same completion v86 does, just later.
 *     Other commands go to v86's handler.
 *  3. `device_reset`: bumps a generation so a flush still pending when the guest resets the drive (libata's
 *     error handling after a timeout) does not complete a command that no longer exists.
 *
 * The patch reads v86 internals (`emulator.v86.cpu.devices.ide.primary.master`, `status_reg`, `push_irq`,
 * `data`, `is_atapi`); these names are kept in v86's release build. `installHonestFlush` checks them and
 * throws if v86 changed shape. Re-run it after `restore_state` (it is idempotent): v86 normally restores
 * into the same drive object, but an old-format state makes it build a new IDE controller.
 */
import type { HdaAdapter } from "./hda-adapter.js";

/** The parts of v86's IDEInterface the patch touches. */
interface IdeDrive {
  buffer: unknown;
  is_atapi: boolean;
  drive_connected: unknown;
  status_reg: number;
  error_reg: number;
  current_command: number;
  data: Uint8Array;
  push_irq(): void;
  ata_command(cmd: number): void;
  create_identify_packet(): void;
  device_reset(): void;
}

interface DriveState {
  adapter: HdaAdapter;
  generation: number;
  flushes: number;
}

/** Registered drives. Everything else keeps v86's behaviour. */
const drives = new WeakMap<object, DriveState>();
/** Prototypes already patched. */
const patchedPrototypes = new WeakSet<object>();

const ATA_CMD_FLUSH_CACHE = 0xe7;
const ATA_CMD_FLUSH_CACHE_EXT = 0xea;
const STATUS_BSY_DRDY = 0xd0;
const STATUS_DRDY_DSC = 0x50;
/** IDENTIFY word 82 / 85, bit 5: write cache supported / enabled (byte offsets of the low bytes). */
const ID_W82_LO = 82 * 2;
const ID_W85_LO = 85 * 2;
const ID_WCACHE_BIT = 0x20;

export interface HonestFlushHandle {
  /** FLUSH CACHE (EXT) commands the guest issued to this drive since it was registered. */
  readonly guestFlushes: number;
}

/** Finds the drive object v86 built for `hda`, checking it is the one backed by `adapter`. */
export function hdaDrive(emulator: unknown, adapter: HdaAdapter): IdeDrive {
  const ide = (emulator as { v86?: { cpu?: { devices?: { ide?: { primary?: { master?: unknown } } } } } }).v86?.cpu?.devices?.ide;
  const drive = ide?.primary?.master as IdeDrive | undefined;
  if (!drive) throw new Error("v86 internals changed: emulator.v86.cpu.devices.ide.primary.master not found");
  for (const m of ["ata_command", "create_identify_packet", "device_reset", "push_irq"] as const) {
    if (typeof drive[m] !== "function") throw new Error(`v86 internals changed: IDEInterface.${m} is not a function`);
  }
  if (typeof drive.status_reg !== "number" || !(drive.data instanceof Uint8Array)) {
    throw new Error("v86 internals changed: IDEInterface.status_reg / data not found");
  }
  if (drive.buffer !== adapter) throw new Error("the primary master IDE drive is not backed by this hda adapter");
  return drive;
}

/** Registers the emulator's hda drive for honest flushes (idempotent). */
export function installHonestFlush(emulator: unknown, adapter: HdaAdapter): HonestFlushHandle {
  const drive = hdaDrive(emulator, adapter);
  patchPrototype(Object.getPrototypeOf(drive) as IdeDrive);
  let st = drives.get(drive);
  if (st) st.adapter = adapter;
  else drives.set(drive, (st = { adapter, generation: 0, flushes: 0 }));
  const state = st;
  return {
    get guestFlushes() {
      return state.flushes;
    },
  };
}

function patchPrototype(proto: IdeDrive): void {
  if (patchedPrototypes.has(proto)) return;
  const origCommand = proto.ata_command;
  const origIdentify = proto.create_identify_packet;
  const origReset = proto.device_reset;

  proto.create_identify_packet = function (this: IdeDrive) {
    origIdentify.call(this);
    if (!this.is_atapi && drives.has(this)) {
      this.data[ID_W82_LO] |= ID_WCACHE_BIT;
      this.data[ID_W85_LO] |= ID_WCACHE_BIT;
    }
  };

  proto.ata_command = function (this: IdeDrive, cmd: number) {
    const st = drives.get(this);
    if (st && (cmd === ATA_CMD_FLUSH_CACHE || cmd === ATA_CMD_FLUSH_CACHE_EXT) && this.drive_connected && !this.is_atapi) {
      this.current_command = cmd;
      this.error_reg = 0;
      this.status_reg = STATUS_BSY_DRDY;
      st.flushes++;
      const gen = st.generation;
      st.adapter.flush(() => {
        if (gen !== st.generation) return; // the drive was reset meanwhile
        this.status_reg = STATUS_DRDY_DSC;
        this.push_irq();
      });
      return;
    }
    origCommand.call(this, cmd);
  };

  proto.device_reset = function (this: IdeDrive) {
    const st = drives.get(this);
    if (st) st.generation++;
    origReset.call(this);
  };

  patchedPrototypes.add(proto);
}
