/**
 * The guest control shared by Node and the page (src/guest/guest-machine.ts) and the page's guest
 * (src/web/browser-guest.ts) and os.html's disk-booting machine (src/web/os-main.ts) bundle for the browser with no Node built-in: esbuild for platform "browser"
 * cannot resolve a node: import, and none is made external here (the page bundle makes them external for
 * v86's Node-only branches, so a stray one would only fail when the page loads).
 */
import path from "node:path";
import { describe, expect, it } from "vitest";

const root = path.resolve(import.meta.dirname, "../..");

describe("browser-safe guest modules", () => {
  it("bundle for the browser without any node: module", async () => {
    const esbuild = await import("esbuild");
    const result = await esbuild.build({
      entryPoints: [path.join(root, "src/guest/guest-machine.ts"), path.join(root, "src/web/browser-guest.ts"), path.join(root, "src/web/os-main.ts")],
      bundle: true,
      write: false,
      outdir: "out",
      format: "esm",
      platform: "browser",
      external: ["v86"],
      metafile: true,
      logLevel: "silent",
    });
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.some((p) => p.endsWith("src/guest/guest-machine.ts"))).toBe(true);
    expect(inputs.some((p) => p.endsWith("src/v86/disk-boot-machine.ts"))).toBe(true);
    expect(inputs.filter((p) => p.startsWith("node:") || p.includes("guest-runner"))).toEqual([]);
  });
});
