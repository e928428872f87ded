/**
 * One run of the remote boot benchmark (remote-boot.ts), in the process that calls it: a v86 PC boots the
 * demo OS from its disk to the shell prompt (bootOsToPrompt of boot-os-run.ts: same clocks, same prompt),
 * then stops; the process's peak RSS is read.
 *
 * Sources of the disk (everything else the same: v86 build, firmware, RAM, IDE primary master):
 *   refcow-url     a compressed qcow2 base by URL under a new qcow2 overlay (BootSession's `overlay`, as
 *                  `refcow boot URL --overlay FILE`); the HTTP chunk cache in the folder the parent names
 *                  ($REFCOW_HTTP_CACHE): empty for a first boot, filled by one for a second
 *   refcow-local   the same qcow2 base as a local file under a new overlay
 *   v86-xhr        the raw image by URL in v86's own AsyncXHRBuffer (`hda: { url, async: true, size,
 *                  fixed_chunk_size }`), its requests made through xhr-over-fetch.ts (v86 in Node would read
 *                  the URL as a path otherwise)
 *
 * v86 is imported through this module (boot-os-run.ts) and nowhere else in the child, so that the v86-xhr child can load this module under
 * withXhrLoader before v86 is evaluated.
 */
import { bootOsToPrompt, peakRss, startRefcowMachine, startV86OwnMachine, type StartedMachine, type TimedStep } from "./boot-os-run.js";
import { chooseWasmTiering } from "../v86/wasm-tiering.js";
import { xhrCounters, type XhrCounters } from "./xhr-over-fetch.js";

export const REMOTE_BOOT_SOURCES = ["refcow-url", "refcow-local", "v86-xhr"] as const;
export type RemoteBootSource = (typeof REMOTE_BOOT_SOURCES)[number];

export interface RemoteBootRunOptions {
  source: RemoteBootSource;
  /** A URL (refcow-url, v86-xhr) or a file (refcow-local). */
  image: string;
  /** The overlay the refcow sources make (it must not exist). */
  overlay?: string;
  /** v86-xhr: the image's size (v86 does not ask the server) and the chunk it reads by. */
  size?: number;
  fixedChunkSize?: number;
  memoryMiB: number;
  firmware: { bios: ArrayBuffer; vgaBios: ArrayBuffer };
  wasmPath: string;
  onProgress?: (message: string) => void;
}

export interface RemoteBootRun {
  source: RemoteBootSource;
  /** Start of the run → v86 loaded (overlay made, chain opened, emulator built), ms. */
  prepMs: number;
  /** v86 loaded → the shell prompt. */
  boot: TimedStep;
  /** VmHWM of the process at the prompt, bytes (absent from the browser's runs). */
  peakRssBytes?: number;
  /** v86-xhr: what its XHR loader fetched (the server's own counts are the figures; this cross-checks them). */
  xhr?: XhrCounters;
}

/** One run in a report: the run, the server's counts for it, the check of what it left, or why it failed. */
export interface RemoteBootResult<Case extends string = string> {
  case: Case;
  rep: number;
  run?: RemoteBootRun;
  /** The server's counts for the run. */
  requests?: number;
  bytes?: number;
  check?: string;
  error?: string;
}

export async function runRemoteBoot(o: RemoteBootRunOptions): Promise<RemoteBootRun> {
  chooseWasmTiering(); // every source alike, before v86 compiles anything
  const os = await bootOsToPrompt(o.source, (onSerial) => startMachine(o, onSerial), o.onProgress);
  try {
    await os.machine.stop();
    const run: RemoteBootRun = { source: o.source, prepMs: os.prepMs, boot: os.boot, peakRssBytes: peakRss() };
    if (o.source === "v86-xhr") {
      run.xhr = xhrCounters();
      if (run.xhr.requests === 0) throw new Error("v86 read the image without XMLHttpRequest (its file-system loader): the run is not the one asked for");
    }
    return run;
  } finally {
    await os.close();
  }
}

async function startMachine(o: RemoteBootRunOptions, onSerial: (bytes: Uint8Array) => void): Promise<StartedMachine> {
  if (o.source === "v86-xhr") {
    if (o.size === undefined) throw new Error("v86-xhr needs the image's size");
    return startV86OwnMachine({ url: o.image, async: true, size: o.size, fixed_chunk_size: o.fixedChunkSize }, o, onSerial);
  }
  if (o.overlay === undefined) throw new Error(`${o.source} needs an overlay`);
  return startRefcowMachine({ ...o, diskType: "ide" }, onSerial);
}
