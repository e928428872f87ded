/** Debian's Chromium for the page tests (headless, through playwright-core), with a persistent profile: OPFS on disk. */
import { existsSync } from "node:fs";
import { chromium, type BrowserContext, type Page } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";

/** Launches Chromium on the profile folder `profile` and returns its context and first page. */
export async function launchChromium(profile: string, opts: { viewport?: { width: number; height: number } } = {}): Promise<{ context: BrowserContext; page: Page }> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run 'bash test/setup/ensure-chromium.sh' (npm test does it as root)`);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    ...(opts.viewport ? { viewport: opts.viewport } : {}),
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  return { context, page: context.pages()[0] ?? (await context.newPage()) };
}
