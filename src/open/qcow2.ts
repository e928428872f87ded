/**
 * The library's qcow2 image: the engine's Qcow2Image composed with the scheme registry (src/schemes). The
 * engine knows no scheme; this module, like every composition root (library entry, CLI, workers), passes
 * the registry in. `Qcow2Image.open` / `create` / `compactImage` here take the engine's options without the
 * catalog, and `instanceof Qcow2Image` holds for every image the engine opens.
 */
import { type BlockFile, ENGINE_IO_PURPOSES, type IoPurpose } from "../io/block-file.js";
import { compactImage as compactWith, type CompactOptions, type CompactResult } from "../engine/tools/compact.js";
import type { OpenOptions } from "../engine/open/open-options.js";
import { Qcow2Image as EngineImage } from "../engine/qcow2-image.js";
import type { SchemeCatalog } from "../engine/allocation/scheme-seam.js";
import type { CreateOptions } from "../engine/types.js";
import { SCHEME_CATALOG, SCHEME_IO_PURPOSES } from "../schemes/index.js";

/** Open options with the catalog optional (the registry when absent). */
export type LibraryOpenOptions = Omit<OpenOptions, "schemes"> & { schemes?: SchemeCatalog };

export interface Qcow2Image extends EngineImage {}
export const Qcow2Image = {
  /** Opens a qcow2 image with the scheme registry (EngineImage.open). */
  open(file: BlockFile, opts: LibraryOpenOptions = {}): EngineImage {
    return EngineImage.open(file, { ...opts, schemes: opts.schemes ?? SCHEME_CATALOG });
  },
  /** Writes a new, empty qcow2 image into `file` (EngineImage.create). */
  create(file: BlockFile, opts: CreateOptions): void {
    EngineImage.create(file, opts, SCHEME_CATALOG);
  },
  [Symbol.hasInstance](value: unknown): value is EngineImage {
    return value instanceof EngineImage;
  },
};

/** Compacts a qcow2 image (engine/tools/compact.ts) with the scheme registry. */
export function compactImage(file: BlockFile, opts: Omit<CompactOptions, "schemes"> = {}): CompactResult {
  return compactWith(file, { ...opts, schemes: SCHEME_CATALOG });
}

export { SCHEME_CATALOG };

/** Every I/O purpose (the accounting wrapper's keys): the engine's, with the schemes' after its refcount purpose. */
export const IO_PURPOSES: readonly IoPurpose[] = (() => {
  const at = ENGINE_IO_PURPOSES.indexOf("refcount") + 1;
  return [...ENGINE_IO_PURPOSES.slice(0, at), ...SCHEME_IO_PURPOSES.keys(), ...ENGINE_IO_PURPOSES.slice(at)];
})();
