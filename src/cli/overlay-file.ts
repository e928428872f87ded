/** The private copy-on-write view of an image file now lives in io/ (the worker uses it too). */
export { OverlayFile } from "../io/overlay-file.js";
