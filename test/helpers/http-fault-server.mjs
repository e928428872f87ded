// A static HTTP server for tests, in its own process (the HTTP file blocks its caller's thread while it
// waits, so the server cannot share the test's event loop). Serves the files of --root with single-range
// Range support, ETag and Last-Modified, and injects faults set through POST /_control:
//   { faults: [{ path?, from?, times?, status?, delayMs?, truncate?, reset?, noRange?, wrongRange? }],
//     etags: { "/x.qcow2": "\"v2\"" }, noValidators?, delayMs?, bytesPerSec? }
// A fault applies to requests for `path` (any when absent) whose range starts at or after `from`, `times`
// times (always when absent). GET /_stats: { requests, bytes, ranges: [[path, first, last]] }; POST /_stats resets.
// /redirect/<path> answers 302 to /<path>. Prints "listening <port>" once ready.
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";

const root = process.argv[process.argv.indexOf("--root") + 1];
let config = { faults: [], etags: {}, noValidators: false, delayMs: 0, bytesPerSec: 0 };
let stats = { requests: 0, bytes: 0, ranges: [] };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function body(req) {
  return new Promise((resolve) => {
    let s = "";
    req.on("data", (d) => (s += d));
    req.on("end", () => resolve(s));
  });
}

async function send(res, buf) {
  // Bandwidth cap: write in slices paced to bytesPerSec.
  if (!config.bytesPerSec) return void res.end(buf);
  const slice = 64 * 1024;
  for (let at = 0; at < buf.length; at += slice) {
    const part = buf.subarray(at, at + slice);
    res.write(part);
    await sleep((part.length / config.bytesPerSec) * 1000);
  }
  res.end();
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/_control") {
    config = { ...config, ...JSON.parse(await body(req)) };
    return void res.end("ok");
  }
  if (url.pathname === "/_stats") {
    const seen = JSON.stringify(stats);
    if (req.method === "POST") stats = { requests: 0, bytes: 0, ranges: [] };
    res.setHeader("content-type", "application/json");
    return void res.end(seen);
  }
  if (url.pathname.startsWith("/redirect/")) {
    res.writeHead(302, { location: url.pathname.slice("/redirect".length) });
    return void res.end();
  }
  stats.requests++;
  const file = path.join(root, decodeURIComponent(url.pathname));
  if (!file.startsWith(root) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
    res.writeHead(404);
    return void res.end("not found");
  }
  const data = fs.readFileSync(file);
  const st = fs.statSync(file);
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
  let first = m ? Number(m[1]) : 0;
  let last = m ? (m[2] === "" ? data.length - 1 : Math.min(Number(m[2]), data.length - 1)) : data.length - 1;
  const fault = config.faults.find((f) => (f.path === undefined || f.path === url.pathname) && first >= (f.from ?? 0) && (f.times === undefined || f.times > 0));
  if (fault && fault.times !== undefined) fault.times--;
  const delay = (fault?.delayMs ?? 0) + (config.delayMs ?? 0);
  if (delay) await sleep(delay);
  if (fault?.reset) return void req.socket.destroy();
  if (fault?.status) {
    res.writeHead(fault.status);
    return void res.end("injected failure");
  }
  const headers = { "accept-ranges": "bytes", "content-type": "application/octet-stream" };
  if (!config.noValidators) {
    headers.etag = config.etags[url.pathname] ?? `"${st.size}-${Math.floor(st.mtimeMs)}"`;
    headers["last-modified"] = st.mtime.toUTCString();
  }
  if (!m || fault?.noRange) {
    stats.bytes += data.length;
    res.writeHead(200, { ...headers, "content-length": data.length });
    return void (await send(res, data));
  }
  if (first >= data.length) {
    res.writeHead(416, { "content-range": `bytes */${data.length}` });
    return void res.end();
  }
  stats.ranges.push([url.pathname, first, last]);
  if (fault?.wrongRange) first += 1;
  let chunk = data.subarray(first, last + 1);
  res.writeHead(206, { ...headers, "content-range": `bytes ${first}-${last}/${data.length}`, "content-length": chunk.length });
  if (fault?.truncate !== undefined) {
    // Announce the whole range, send part of it, then drop the connection.
    chunk = chunk.subarray(0, fault.truncate);
    stats.bytes += chunk.length;
    res.write(chunk);
    return void setTimeout(() => req.socket.destroy(), 10);
  }
  stats.bytes += chunk.length;
  await send(res, chunk);
});

// Idle connections stay open until the client closes them: QEMU 7.2's curl driver stops watching a connection
// the server closed while it was idle (Node closes them after 5 s by default) and then waits forever.
server.keepAliveTimeout = 0;
server.listen(0, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
