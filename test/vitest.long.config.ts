/**
 * Long runs, kept out of `npm test`: `npm run fuzz` (test/fuzz/*.long.ts) and `npm run test:load`
 * (test/load/*.long.ts). Their sizes come from environment variables (see each file).
 */
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.long.ts"],
    testTimeout: 24 * 3600_000,
    hookTimeout: 600_000,
  },
});
