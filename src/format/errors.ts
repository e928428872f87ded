/** Errors raised by refcow (format codecs, engine). Each carries a message meant for the user, naming what is wrong. */

/**
 * The image is malformed or inconsistent (bad header, table past the end, unaligned entry...). Found in an image
 * open for writing, it makes the engine mark the image corrupt and refuse further access, as QEMU does — unless
 * `corruption` is false (a limit reached, data that cannot be decompressed: the request fails, the image stays).
 */
export class ImageFormatError extends Error {
  readonly corruption: boolean;
  constructor(message: string, opts: { corruption?: boolean } = {}) {
    super(message);
    this.name = "ImageFormatError";
    this.corruption = opts.corruption ?? true;
  }
}

/** The image uses a feature refcow does not support (unknown incompatible bit, encryption...). */
export class UnsupportedFeatureError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnsupportedFeatureError";
  }
}

/** A request is invalid: out of range, misaligned where alignment is required, write to a read-only image. */
export class RequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RequestError";
  }
}

/** A snapshot name or id does not exist, or a new name is already taken. */
export class SnapshotError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SnapshotError";
  }
}

/** The image has been closed. */
export class ClosedError extends Error {
  constructor(message = "image is closed") {
    super(message);
    this.name = "ClosedError";
  }
}
