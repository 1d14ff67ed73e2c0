// Privacy through the browser path: the tracker in real headless Chromium, on a page whose
// URL and referrer carry an email address and a phone number, reporting to the Worker in
// workerd. The recorded AE data points must hold no email, phone number, IP address, raw
// user agent or page URL; an element whose content id is an email is refused (pii_email).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";
import { recorded, startWorker, waitForPoints } from "./harness.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
const EMAIL = "ada.lovelace@example.com";
const PHONE = "+14155552671";
const REFERER = `https://mail.example.net/inbox?to=${EMAIL}&from=${encodeURIComponent(PHONE)}`;

function wav(seconds, rate = 8000) {
  const n = Math.round(seconds * rate);
  const buf = Buffer.alloc(44 + n * 2);
  buf.write("RIFF", 0);
  buf.writeUInt32LE(36 + n * 2, 4);
  buf.write("WAVEfmt ", 8);
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20);
  buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * 2, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write("data", 36);
  buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) buf.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / rate)), 44 + i * 2);
  return buf;
}

const tone = wav(1);
let server, origin, mf, workerUrl, browser;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}: apt-get install -y chromium`);
  server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (path === "/watch") {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(`<!doctype html><html><body>
        <audio id="ok" data-em-content="tone-1" data-em-creator="c1" src="/tone.wav" preload="auto"></audio>
        <audio id="bad" data-em-content="${EMAIL}" data-em-creator="c1" src="/tone.wav" preload="auto"></audio>
        <script src="${workerUrl}tracker.js" data-endpoint="${workerUrl}v1/collect"></script>
      </body></html>`);
      return;
    }
    if (path === "/tone.wav") {
      res.writeHead(200, { "content-type": "audio/wav", "accept-ranges": "bytes", "content-length": tone.length });
      res.end(tone);
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  origin = `http://127.0.0.1:${server.address().port}`;
  ({ mf } = await startWorker({ allowedOrigins: origin, port: 0 }));
  workerUrl = (await mf.ready).href;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required", `--user-agent=${UA}`],
  });
});

after(async () => {
  await browser?.close();
  await mf?.dispose();
  server?.close();
});

test("tracker in Chromium: no email, phone, IP, user agent or URL reaches a data point", async () => {
  await recorded(mf);
  const context = await browser.newContext({ userAgent: UA });
  const page = await context.newPage();
  await page.goto(`${origin}/watch?email=${EMAIL}&phone=${encodeURIComponent(PHONE)}`, { referer: REFERER });
  await page.waitForFunction("document.getElementById('ok').readyState >= 4 && document.getElementById('bad').readyState >= 4", null, { timeout: 15000 });
  await page.evaluate(() => Promise.all([document.getElementById("ok").play(), document.getElementById("bad").play()]));
  await page.waitForFunction("document.getElementById('ok').ended && document.getElementById('bad').ended", null, { timeout: 15000 });
  await page.goto("about:blank");

  const got = await waitForPoints(mf, 4, 15000, (p) => p.dataset === "edgemetrics_content");
  const content = got.points.filter((p) => p.dataset === "edgemetrics_content");
  // The element with an honest id was counted; the one whose id is an email never was.
  assert.ok(content.length >= 4, `only ${content.length} content points`);
  assert.deepEqual([...new Set(content.map((p) => p.blobs[1]))], ["tone-1"]);
  // The referrer became its source; device and browser are classes, not the UA.
  assert.deepEqual([...new Set(content.map((p) => p.blobs[13]))], ["mail.example.net"]);
  assert.equal(content[0].blobs[9], "Chrome");
  const stored = JSON.stringify((await recorded(mf, false)).points);
  for (const needle of [EMAIL, "ada.lovelace%40", "lovelace@", PHONE, "4155552671", "127.0.0.1", UA, "X11", "AppleWebKit", "/watch?", "email="]) {
    assert.ok(!stored.includes(needle), `a recorded data point holds ${needle}`);
  }
  await context.close();
});
