/** The errors of the engine's public API; they are defined with the format codecs, which raise them too. */
export { ClosedError, ImageFormatError, RequestError, SnapshotError, UnsupportedFeatureError } from "../format/errors.js";
