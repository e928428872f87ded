/**
 * Warm start: the guest is booted once, its machine state saved at the command prompt, and every later run
 * resumes that state (about 0.3 s) instead of booting (11-17 s).
 *
 * The state is prepared on an empty disk (ZeroAsyncDisk: reads zeroes, takes no memory) of the size the
 * run will use, before anything wrote to it, so it depends on no image's contents; it is restored over a
 * fresh (or any) image of that size. It is cached in `<guest image dir>/warm/<key>.v86state`, where the key
 * hashes everything the saved state depends on:
 *
 *  - the guest image (manifest.json: recipe hash, file sha256s, kernel release, packages),
 *  - the guest's RAM size and kernel command line,
 *  - the disk size (the kernel sized /dev/sda at boot),
 *  - whether the honest-flush patch was on (the IDENTIFY data the kernel saw),
 *  - v86's version and the machine settings GuestMachine fixes (MACHINE_SETTINGS_ID, guest-machine.ts).
 *
 * A `<key>.json` next to the state records those inputs for humans. Files are written to a temporary name
 * and renamed, so a concurrent run sees a whole state or none. Only the most recently used states are kept.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { guestImagePaths, type GuestImagePaths } from "./guest-image.js";
import { DEFAULT_CMDLINE, DEFAULT_MEMORY_MIB, GuestRunner } from "./guest-runner.js";
import { machineSettingsId, type GuestDiskType } from "./guest-machine.js";
import { ZeroAsyncDisk } from "../v86/zero-async-disk.js";

/** What a warm-start state depends on. */
export interface WarmStateInputs {
  diskSize: number;
  memoryMiB: number;
  cmdline: string;
  honestFlush: boolean;
  v86Version: string;
  machine: string;
  /** sha256 of the guest image's manifest.json. */
  guestManifest: string;
}

export interface WarmStateOptions {
  diskSize: number;
  image?: GuestImagePaths;
  memoryMiB?: number;
  cmdline?: string;
  honestFlush?: boolean;
  /** The guest's disk device (default "ide"). */
  diskType?: GuestDiskType;
  onProgress?: (message: string) => void;
}

/** States kept in the cache folder (each is tens of MiB). */
const KEEP_STATES = 4;
const SUFFIX = ".v86state";

export function v86Version(): string {
  const require = createRequire(import.meta.url);
  return (require("v86/package.json") as { version: string }).version;
}

export function warmStateInputs(o: WarmStateOptions): WarmStateInputs {
  const image = o.image ?? guestImagePaths();
  return {
    diskSize: o.diskSize,
    memoryMiB: o.memoryMiB ?? DEFAULT_MEMORY_MIB,
    cmdline: o.cmdline ?? DEFAULT_CMDLINE,
    honestFlush: o.honestFlush ?? true,
    v86Version: v86Version(),
    machine: machineSettingsId(o.diskType),
    guestManifest: createHash("sha256").update(readFileSync(image.manifest)).digest("hex"),
  };
}

export function warmStateKey(inputs: WarmStateInputs): string {
  const canonical = JSON.stringify(Object.keys(inputs).sort().map((k) => [k, inputs[k as keyof WarmStateInputs]]));
  return createHash("sha256").update(canonical).digest("hex").slice(0, 32);
}

function stateDir(image: GuestImagePaths): string {
  return path.join(image.dir, "warm");
}

/** The cached state for `inputs`, or undefined. Marks it recently used. */
export function loadWarmState(inputs: WarmStateInputs, image = guestImagePaths()): ArrayBuffer | undefined {
  const file = path.join(stateDir(image), warmStateKey(inputs) + SUFFIX);
  if (!existsSync(file)) return undefined;
  let b: Buffer;
  try {
    b = readFileSync(file);
  } catch {
    return undefined; // removed meanwhile by a concurrent prune
  }
  try {
    const now = new Date();
    utimesSync(file, now, now);
  } catch {
    // only affects pruning
  }
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

/** Stores `state` for `inputs` (atomically) and prunes the least recently used states. */
export function storeWarmState(inputs: WarmStateInputs, state: ArrayBuffer, image = guestImagePaths()): string {
  const dir = stateDir(image);
  mkdirSync(dir, { recursive: true });
  const key = warmStateKey(inputs);
  const file = path.join(dir, key + SUFFIX);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(path.join(dir, key + ".json"), JSON.stringify({ ...inputs, saved: new Date().toISOString(), bytes: state.byteLength }, null, 2) + "\n");
  writeFileSync(tmp, new Uint8Array(state));
  renameSync(tmp, file);
  prune(dir);
  return file;
}

function prune(dir: string): void {
  const states = readdirSync(dir)
    .filter((f) => f.endsWith(SUFFIX))
    .map((f) => {
      try {
        return { f, t: statSync(path.join(dir, f)).mtimeMs };
      } catch {
        return { f, t: 0 };
      }
    })
    .sort((a, b) => b.t - a.t);
  for (const { f } of states.slice(KEEP_STATES)) {
    for (const name of [f, f.slice(0, -SUFFIX.length) + ".json"]) {
      try {
        unlinkSync(path.join(dir, name));
      } catch {
        // already gone
      }
    }
  }
}

/**
 * Cold-boots the guest on an empty disk of `diskSize` bytes and saves its state at the prompt. The disk is
 * only read during the boot (ZeroAsyncDisk rejects writes), so the state holds no disk contents.
 */
export async function prepareWarmState(o: WarmStateOptions): Promise<{ state: ArrayBuffer; coldBootMs: number }> {
  const guest = await GuestRunner.boot({
    disk: new ZeroAsyncDisk(o.diskSize),
    image: o.image,
    memoryMiB: o.memoryMiB,
    cmdline: o.cmdline,
    honestFlush: o.honestFlush,
    diskType: o.diskType,
    onProgress: o.onProgress,
  });
  try {
    await guest.check("true");
    const state = await guest.saveState({ resume: false });
    return { state, coldBootMs: guest.readyMs };
  } finally {
    await guest.destroy();
  }
}

/** The cached warm-start state for these options, prepared (one cold boot) and cached when missing. */
export async function obtainWarmState(o: WarmStateOptions): Promise<{ state: ArrayBuffer; prepared: boolean; coldBootMs?: number; key: string }> {
  const inputs = warmStateInputs(o);
  const key = warmStateKey(inputs);
  const cached = loadWarmState(inputs, o.image);
  if (cached) return { state: cached, prepared: false, key };
  o.onProgress?.(`[guest] no warm-start state cached for this configuration (${key.slice(0, 8)}): one cold boot to prepare it`);
  const { state, coldBootMs } = await prepareWarmState(o);
  storeWarmState(inputs, state, o.image);
  return { state, prepared: true, coldBootMs, key };
}
