/**
 * The scheme catalog an open uses when its caller passes none (OpenOptions.schemes): the registry of
 * src/schemes. The one engine module that names the registry; every other engine module knows only the
 * SchemeCatalog interface (scheme-seam.ts), so callers may open an image with a catalog of their own.
 */
export { SCHEME_CATALOG as defaultSchemeCatalog } from "../schemes/index.js";
