/** The demo OS disk for the tests that boot it: built when missing; a build failure fails under CI=true, else skips with the reason. */
import { ensureOsImage, type OsImagePaths } from "../../src/guest/os-image.js";

export type DemoOs = { os: OsImagePaths; skipReason?: undefined } | { os?: undefined; skipReason: string };

export async function demoOsOrSkip(log: (line: string) => void): Promise<DemoOs> {
  try {
    return { os: await ensureOsImage({ onProgress: log }) };
  } catch (e) {
    if (process.env.CI === "true") throw e;
    return { skipReason: `the demo OS disk could not be built: ${(e as Error).message.split("\n")[0]}` };
  }
}
