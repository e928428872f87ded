/**
 * An XFS file system with reflink for a test file (src/harness/scratch-fs.ts: a loop mount, root only),
 * made before its tests and removed after them. Where it cannot be made, the tests that need it skip — but
 * under CI=true they fail, so that a CI runner that lost the ability does not pass silently.
 */
import { afterAll, beforeAll } from "vitest";
import { makeXfsMount, type ScratchMount } from "../../src/harness/scratch-fs.js";

export interface XfsForTests {
  /** The mount, or (outside CI) a skip of the calling test with the reason; under CI a thrown error. */
  need(ctx: { skip: (note?: string) => void }): ScratchMount;
}

export function xfsMountForTests(prefix: string): XfsForTests {
  let mount: ScratchMount | undefined;
  let problem: string | undefined;
  beforeAll(() => {
    try {
      mount = makeXfsMount(prefix);
    } catch (e) {
      problem = (e as Error).message;
      if (process.env.CI === "true") throw e;
    }
  });
  afterAll(() => mount?.dispose());
  return {
    need(ctx) {
      if (mount) return mount;
      if (process.env.CI === "true") throw new Error(`no XFS scratch mount under CI: ${problem}`);
      ctx.skip(`no XFS scratch mount: ${problem}`);
      throw new Error("unreachable");
    },
  };
}
