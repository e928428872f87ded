/** Padding as C's printf does it: widths count bytes (UTF-8), not characters. */

function byteLength(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

/** `%-<width>s` */
export function padRight(s: string, width: number): string {
  const n = byteLength(s);
  return n >= width ? s : s + " ".repeat(width - n);
}

/** `%<width>s` */
export function padLeft(s: string, width: number): string {
  const n = byteLength(s);
  return n >= width ? s : " ".repeat(width - n) + s;
}

/** `%0<width>d` for a non-negative integer. */
export function zeroPad(n: number, width: number): string {
  return String(n).padStart(width, "0");
}
