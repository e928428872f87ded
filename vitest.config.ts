/**
 * `npm test`: every test/**\/*.test.ts. The time limits are a safety net against a hung test, not a
 * measurement: CI runs on two shared cores, where a test that spawns QEMU's tools a dozen times can take many
 * times its unloaded duration, so a test that sets no limit of its own gets a minute, a hook two.
 */
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
