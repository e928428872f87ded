/**
 * Driving os.html in Chromium for the boot benchmarks' browser cases: images put into OPFS before a run,
 * a boot waited for to the shell prompt, a timed command on the serial console, the image downloaded for
 * the checks. Every time is the page's own clock (performance.now in the page, read by its hooks
 * `refcowOs.times`, `waitSerial`, `sendSerial`: os-main.ts), not this process's.
 */
import type { Page } from "playwright-core";

/** What os-main.ts exposes as `window.refcowOs` (the part used here). */
interface OsPageHooks {
  state: string;
  busy: boolean;
  error?: string;
  times: { start?: number; loaded?: number };
  serialText(): string;
  waitSerial(pattern: string): Promise<SerialSeen>;
  instructions(): number;
  sendSerial(text: string): void;
}
declare const refcowOs: OsPageHooks;

/** When a pattern showed on the console: the page's clock, and the machine's instructions since it was built. */
export interface SerialSeen {
  at: number;
  instructions: number;
}

const MiB = 2 ** 20;

/**
 * Writes `name` in OPFS from `url` (same origin): the whole file, or with `sparse` a file of `sparse.size`
 * bytes holding only the listed extents (the rest reads as zeroes), fetched by Range requests. Runs on a
 * page of the origin without the engine's worker, so that no access handle holds the file.
 */
export async function putInOpfs(page: Page, origin: string, name: string, url: string, sparse?: { size: number; extents: Array<[number, number]> }): Promise<number> {
  await page.goto(new URL("guest/config.json", origin).href);
  return page.evaluate(
    async ({ name, url, sparse, piece }) => {
      const dir = await navigator.storage.getDirectory();
      const fh = await dir.getFileHandle(name, { create: true });
      const w = await fh.createWritable({ keepExistingData: false });
      if (!sparse) {
        const res = await fetch(url);
        if (!res.ok || !res.body) throw new Error(`${url}: HTTP ${res.status}`);
        await res.body.pipeTo(w);
      } else {
        await w.truncate(sparse.size);
        for (const [start, length] of sparse.extents) {
          for (let at = start; at < start + length; at += piece) {
            const n = Math.min(piece, start + length - at);
            const res = await fetch(url, { headers: { Range: `bytes=${at}-${at + n - 1}` } });
            const data = await res.arrayBuffer();
            if (res.status !== 206 || data.byteLength !== n) throw new Error(`${url}: bytes ${at}-${at + n - 1}: HTTP ${res.status}, ${data.byteLength} bytes`);
            await w.write({ type: "write", position: at, data });
          }
        }
        await w.close();
      }
      return (await fh.getFile()).size;
    },
    { name, url, sparse, piece: 16 * MiB },
  );
}

/** Removes OPFS entries of the top folder whose names match `pattern`, and the folders named in `folders`. */
export async function removeFromOpfs(page: Page, origin: string, pattern: RegExp, folders: string[] = []): Promise<string[]> {
  await page.goto(new URL("guest/config.json", origin).href);
  return page.evaluate(
    async ({ source, folders }) => {
      const dir = await navigator.storage.getDirectory();
      const re = new RegExp(source);
      const gone: string[] = [];
      const names: string[] = [];
      for await (const name of (dir as unknown as { keys(): AsyncIterable<string> }).keys()) names.push(name);
      for (const name of names) {
        if (!re.test(name) && !folders.includes(name)) continue;
        // A worker of the page just left may hold its access handle for a moment.
        for (let attempt = 0; ; attempt++) {
          try {
            await dir.removeEntry(name, { recursive: true });
            break;
          } catch (e) {
            if (attempt >= 40) throw e;
            await new Promise((r) => setTimeout(r, 250));
          }
        }
        gone.push(name);
      }
      return gone;
    },
    { source: pattern.source, folders },
  );
}

/** Opens os.html at `url` and waits until its hooks are there. */
export async function openOsPage(page: Page, url: string): Promise<void> {
  await page.goto(url);
  await page.waitForFunction(() => typeof refcowOs !== "undefined" && refcowOs.state !== "loading", undefined, { timeout: 120_000, polling: 100 });
}

/**
 * Waits for `pattern` on the page's serial console (from now on); resolves with the page's clock when the
 * guest's bytes arrived, and the instruction count then. The page going into its error state, or
 * `timeoutMs`, is an error with what it said.
 */
export async function waitSerial(page: Page, pattern: RegExp, timeoutMs: number): Promise<SerialSeen> {
  const wait = page.evaluate(
    ({ source, timeoutMs }) =>
      new Promise<SerialSeen>((resolve, reject) => {
        const t0 = performance.now();
        const timer = setInterval(() => {
          const failed = refcowOs.state === "error";
          if (!failed && performance.now() - t0 < timeoutMs) return;
          clearInterval(timer);
          const status = document.getElementById("status")?.textContent ?? "";
          reject(new Error(failed ? `the page failed: ${refcowOs.error ?? status}` : `no '${source}' on the serial console in ${timeoutMs} ms (page: ${status}); the console ends:\n${refcowOs.serialText().slice(-600)}`));
        }, 250);
        void refcowOs.waitSerial(source).then((seen) => {
          clearInterval(timer);
          resolve(seen);
        });
      }),
    { source: pattern.source, timeoutMs },
  );
  return wait.catch(rethrowPageError);
}

/** An error thrown in the page, without Playwright's prefix and the page's stack. */
function rethrowPageError(e: unknown): never {
  const message = String((e as Error)?.message ?? e)
    .replace(/^page\.evaluate: (Error: )?/, "")
    .split("\n")
    .filter((l) => !/^\s+at /.test(l))
    .join("\n");
  throw new Error(message);
}

/** The page's clock at the start of its last boot and when v86 had loaded. */
export async function pageTimes(page: Page): Promise<{ start: number; loaded: number }> {
  const t = await page.evaluate(() => refcowOs.times);
  if (t.start === undefined || t.loaded === undefined) throw new Error("the page has not booted (no boot times)");
  return { start: t.start, loaded: t.loaded };
}

/**
 * Types `line` on the serial console and waits for `marker` and then for `prompt` after it: the page's ms
 * and the instructions from the keys to the marker, and the console's text from the keys to the prompt.
 */
export function timedSerialLine(page: Page, line: string, marker: RegExp, prompt: RegExp, timeoutMs: number): Promise<{ ms: number; instructions: number; text: string }> {
  return page.evaluate(
    async ({ line, marker, prompt, timeoutMs }) => {
      const from = refcowOs.serialText().length;
      const markerAt = refcowOs.waitSerial(marker);
      const promptAt = refcowOs.waitSerial(`${marker}[\\s\\S]*${prompt}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no '${marker}' then prompt in ${timeoutMs} ms; the console ends:\n${refcowOs.serialText().slice(-600)}`)), timeoutMs);
      });
      const i0 = refcowOs.instructions();
      const t0 = performance.now();
      refcowOs.sendSerial(line);
      try {
        const seen = await Promise.race([markerAt, late]);
        await Promise.race([promptAt, late]);
        return { ms: seen.at - t0, instructions: seen.instructions - i0, text: refcowOs.serialText().slice(from) };
      } finally {
        clearTimeout(timer);
      }
    },
    { line, marker: marker.source, prompt: prompt.source, timeoutMs },
  ).catch(rethrowPageError);
}

/** Stops the machine (the image closed cleanly), then downloads the stored image `name` into `to`. */
export async function stopAndDownload(page: Page, name: string, to: string): Promise<void> {
  await page.click("#close-btn");
  await page.waitForFunction(() => refcowOs.state === "idle" && !refcowOs.busy, undefined, { timeout: 120_000, polling: 100 });
  await page.selectOption("#image-select", name);
  const download = page.waitForEvent("download", { timeout: 300_000 });
  await page.click("#download-btn");
  await (await download).saveAs(to);
}
