// The tracker in real headless Chromium (Debian's /usr/bin/chromium) playing a WAV file the
// test writes, reporting to the Worker running in workerd: the events received must match
// what was played, and watch time must be within a second of the media time played.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { existsSync } from "node:fs";
import { createHash } from "node:crypto";
import { chromium } from "playwright-core";
import { recorded, startWorker, waitForPoints } from "./harness.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

function wav(seconds, rate = 8000) {
  const n = Math.round(seconds * rate);
  const buf = Buffer.alloc(44 + n * 2);
  buf.write("RIFF", 0);
  buf.writeUInt32LE(36 + n * 2, 4);
  buf.write("WAVEfmt ", 8);
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * 2, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write("data", 36);
  buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) buf.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / rate)), 44 + i * 2);
  return buf;
}

const files = { "/tone.wav": wav(8), "/short.wav": wav(1) };
let server, origin, mf, workerUrl, browser;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}: apt-get install -y chromium`);
  server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (path === "/" || path === "/page") {
      const consent = new URL(req.url, "http://x").searchParams.get("consent");
      res.writeHead(200, { "content-type": "text/html" });
      res.end(`<!doctype html><html><body>
        <audio id="a" data-em-content="tone-1" data-em-creator="c1" src="/tone.wav" preload="auto"></audio>
        <audio id="b" data-em-content="tone-short" data-em-creator="c1" src="/short.wav" preload="auto"></audio>
        <video id="plain" src="/short.wav"></video>
        <script src="${workerUrl}tracker.js" data-endpoint="${workerUrl}v1/collect"${consent ? ` data-consent="${consent}"` : ""}></script>
      </body></html>`);
      return;
    }
    const data = files[path];
    if (!data) {
      res.writeHead(404).end();
      return;
    }
    // Range support, so the browser can seek.
    const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? "");
    if (m) {
      const start = +m[1];
      const end = m[2] ? +m[2] : data.length - 1;
      res.writeHead(206, { "content-type": "audio/wav", "accept-ranges": "bytes", "content-range": `bytes ${start}-${end}/${data.length}`, "content-length": end - start + 1 });
      res.end(data.subarray(start, end + 1));
    } else {
      res.writeHead(200, { "content-type": "audio/wav", "accept-ranges": "bytes", "content-length": data.length });
      res.end(data);
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  origin = `http://127.0.0.1:${server.address().port}`;
  ({ mf } = await startWorker({ allowedOrigins: origin, port: 0 }));
  workerUrl = (await mf.ready).href;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
      // Process-wide: a beacon sent while the page unloads does not carry a per-context
      // override, and Chromium's own headless UA is (rightly) dropped as a bot.
      `--user-agent=${UA}`],
  });
});

after(async () => {
  await browser?.close();
  await mf?.dispose();
  server?.close();
});

const waitFor = (page, expr, timeout = 15000) => page.waitForFunction(expr, null, { timeout, polling: 50 });

// In event-time order: the tracker may send two beacons on leaving (visibilitychange, then
// pagehide with the last few milliseconds of watch time), and the Worker may finish them in
// either order. The sort is stable, so events of one moment keep the tracker's order.
function events(points) {
  return points
    .filter((p) => p.dataset === "edgemetrics_content")
    .map((p) => ({ type: p.blobs[0], content: p.blobs[1], time: p.doubles[1], position: p.doubles[3], duration: p.doubles[4], watch: p.doubles[5], device: p.blobs[8], browser: p.blobs[9] }))
    .sort((a, b) => a.time - b.time);
}

test("play, pause, seek, resume, play to the end, leave: the right events and watch time", async () => {
  await recorded(mf);
  const context = await browser.newContext({ userAgent: UA });
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e));
  await page.goto(`${origin}/page`);
  await waitFor(page, "document.getElementById('a').readyState >= 4 && document.getElementById('b').readyState >= 4");

  // Play 0 -> ~1.5 s, pause, wait a second paused, seek to 4 s, play to ~5.3 s.
  await page.evaluate(() => document.getElementById("a").play());
  await waitFor(page, "document.getElementById('a').currentTime >= 1.5");
  const p1 = await page.evaluate(() => {
    const a = document.getElementById("a");
    a.pause();
    return a.currentTime;
  });
  await page.waitForTimeout(1000);
  await page.evaluate(() => new Promise((resolve) => {
    const a = document.getElementById("a");
    a.addEventListener("seeked", resolve, { once: true });
    a.currentTime = 4;
  }));
  // The short file plays to its end meanwhile: view, play_start, complete.
  await page.evaluate(() => document.getElementById("b").play());
  await waitFor(page, "document.getElementById('b').ended");
  await page.evaluate(() => document.getElementById("a").play());
  await waitFor(page, "document.getElementById('a').currentTime >= 5.3");
  const p2 = await page.evaluate(() => document.getElementById("a").currentTime);
  // Leaving the page: pagehide -> watch time and abandon, sent with sendBeacon.
  await page.goto("about:blank");
  const played = p1 + (p2 - 4);

  const got = await waitForPoints(mf, 9, 15000, (p) => p.dataset === "edgemetrics_content");
  const evs = events(got.points);
  const tone = evs.filter((e) => e.content === "tone-1");
  const short = evs.filter((e) => e.content === "tone-short");
  // Playback events in order; watch time is reported on leaving (once or in two parts).
  assert.deepEqual(tone.filter((e) => e.type !== "watch_time").map((e) => e.type), ["view", "play_start", "pause", "resume", "abandon"]);
  const resumedAt = tone.find((e) => e.type === "resume").time;
  assert.ok(tone.some((e) => e.type === "watch_time"));
  assert.ok(tone.filter((e) => e.type === "watch_time").every((e) => e.time >= resumedAt));
  assert.deepEqual(short.map((e) => e.type), ["view", "play_start", "watch_time", "complete"]); // one request
  const watched = tone.filter((e) => e.type === "watch_time").reduce((s, e) => s + e.watch, 0);
  assert.ok(Math.abs(watched - played) < 1, `watch time ${watched} s vs media time played ${played} s`);
  const shortWatched = short.filter((e) => e.type === "watch_time").reduce((s, e) => s + e.watch, 0);
  assert.ok(Math.abs(shortWatched - 1) < 1, `short watch time ${shortWatched}`);
  assert.ok(Math.abs(tone.find((e) => e.type === "pause").position - p1) < 0.3);
  const abandon = tone.find((e) => e.type === "abandon");
  assert.ok(Math.abs(abandon.position - p2) < 0.5, `abandon at ${abandon.position}, left at ${p2}`);
  assert.ok(Math.abs(tone[0].duration - 8) < 0.01);
  assert.ok(Math.abs(short.find((e) => e.type === "complete").position - 1) < 0.05);
  assert.equal(tone[0].device, "desktop");
  assert.equal(tone[0].browser, "Chrome");
  // Cookieless: no cookies, nothing in storage; and no error reached the page.
  assert.deepEqual(await context.cookies(), []);
  assert.deepEqual(pageErrors, []);
  await context.close();
});

test("opt-out flag, Do Not Track and a broken transport: nothing sent, nothing thrown", async () => {
  await recorded(mf);
  for (const init of [
    () => { window.edgemetricsOptOut = true; },
    () => { Object.defineProperty(Navigator.prototype, "doNotTrack", { get: () => "1" }); },
    () => { Object.defineProperty(Navigator.prototype, "globalPrivacyControl", { get: () => true }); },
    () => { try { localStorage.setItem("edgemetrics_optout", "1"); } catch { /* about:blank */ } },
    () => { navigator.sendBeacon = () => { throw new Error("beacon broke"); }; window.fetch = () => { throw new Error("fetch broke"); }; },
  ]) {
    const context = await browser.newContext({ userAgent: UA });
    await context.addInitScript(init);
    const page = await context.newPage();
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(e));
    await page.goto(`${origin}/page`);
    await waitFor(page, "document.getElementById('b').readyState >= 4");
    await page.evaluate(() => document.getElementById("b").play());
    await waitFor(page, "document.getElementById('b').ended");
    await page.evaluate(() => document.dispatchEvent(new Event("visibilitychange")));
    await page.goto("about:blank");
    assert.deepEqual(pageErrors, [], String(init));
    await context.close();
  }
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(events((await recorded(mf)).points).length, 0);
});

const sha = (text, digits) => createHash("sha256").update(text).digest("hex").slice(0, digits);
// What the collector stores for a consent-mode session: derived from the browser's id and the
// session's first event, never the id itself (docs/ingest-protocol.md).
const consentSession = (sid, start) => sha(`${sha(`127.0.0.1|${sid}`, 32)}|${start}`, 16);
const storage = (page) => page.evaluate(() => ({ sid: sessionStorage.getItem("edgemetrics_sid"), session: sessionStorage.length, local: localStorage.length }));
// Play the short file to its end, then send as on leaving (pagehide) without leaving.
async function playShort(page) {
  await waitFor(page, "document.getElementById('b').readyState >= 4");
  await page.evaluate(() => document.getElementById("b").play());
  await waitFor(page, "document.getElementById('b').ended");
  await page.evaluate(() => window.dispatchEvent(new Event("pagehide")));
  // The 15 s timer may have sent part of it before: wait for the last event, then a moment
  // for any earlier beacon the Worker finished later.
  await waitForPoints(mf, 1, 15000, (p) => p.dataset === "edgemetrics_content" && p.blobs[0] === "complete");
  await new Promise((r) => setTimeout(r, 300));
  return (await recorded(mf)).points
    .filter((p) => p.dataset === "edgemetrics_content")
    .map((p) => ({ type: p.blobs[0], session: p.blobs[4], time: p.doubles[1], newSession: p.doubles[8] }))
    .sort((a, b) => a.time - b.time);
}

test("consent given: a session id per tab in sessionStorage, sent and used for sessions; withdrawing deletes it", async () => {
  await recorded(mf);
  const context = await browser.newContext({ userAgent: UA });
  const pageErrors = [];
  const tab1 = await context.newPage();
  tab1.on("pageerror", (e) => pageErrors.push(e));
  await tab1.goto(`${origin}/page?consent=given`);
  const { sid: sid1, local } = await storage(tab1);
  assert.match(sid1, /^[0-9a-f]{32}$/);
  assert.equal(local, 0);
  const first = await playShort(tab1);
  assert.deepEqual(first.filter((e) => e.type !== "watch_time").map((e) => e.type), ["view", "play_start", "complete"]);
  const session1 = consentSession(sid1, first[0].time);
  assert.deepEqual(first.map((e) => e.session), Array(first.length).fill(session1), "the tracker's session id decided the session");
  assert.deepEqual(first.map((e) => e.newSession), [1, ...Array(first.length - 1).fill(0)]);

  // A second tab of the same browser (same IP and UA): its own id, its own session.
  const tab2 = await context.newPage();
  await tab2.goto(`${origin}/page?consent=given`);
  const { sid: sid2 } = await storage(tab2);
  assert.match(sid2, /^[0-9a-f]{32}$/);
  assert.notEqual(sid2, sid1);
  const second = await playShort(tab2);
  assert.equal(second[0].session, consentSession(sid2, second[0].time));
  assert.equal(second[0].newSession, 1);

  // The first tab navigates: sessionStorage keeps the id, so the session goes on.
  await tab1.goto(`${origin}/page?consent=given`);
  assert.equal((await storage(tab1)).sid, sid1);
  const again = await playShort(tab1);
  assert.deepEqual(again.map((e) => e.session), Array(again.length).fill(session1));
  assert.deepEqual(again.map((e) => e.newSession), Array(again.length).fill(0));

  // Withdrawn: the id is deleted at once, events go out cookieless, nothing is stored again.
  await tab1.goto(`${origin}/page?consent=given`);
  await tab1.evaluate(() => window.edgemetrics.consent(false));
  assert.deepEqual(await storage(tab1), { sid: null, session: 0, local: 0 });
  const withdrawn = await playShort(tab1);
  assert.ok(withdrawn.length >= 3);
  assert.ok(withdrawn.every((e) => e.session !== session1 && /^[0-9a-f]{16}$/.test(e.session)));
  assert.deepEqual(await storage(tab1), { sid: null, session: 0, local: 0 });
  assert.deepEqual(await context.cookies(), []);
  assert.deepEqual(pageErrors, []);
  await context.close();
});

test("cookieless by default: nothing in any storage, before or after sending; consent(true) starts a session id", async () => {
  await recorded(mf);
  const context = await browser.newContext({ userAgent: UA });
  const page = await context.newPage();
  await page.goto(`${origin}/page`);
  assert.deepEqual(await storage(page), { sid: null, session: 0, local: 0 });
  const sent = await playShort(page);
  assert.deepEqual(sent.filter((e) => e.type !== "watch_time").map((e) => e.type), ["view", "play_start", "complete"]);
  assert.deepEqual(await storage(page), { sid: null, session: 0, local: 0 });
  assert.deepEqual(await context.cookies(), []);
  await page.evaluate(() => window.edgemetrics.consent(true));
  assert.match((await storage(page)).sid, /^[0-9a-f]{32}$/);
  await context.close();
});

test("DNT, GPC and opt-out win over consent: no session id kept, nothing sent", async () => {
  await recorded(mf);
  for (const init of [
    () => { window.edgemetricsOptOut = true; },
    () => { Object.defineProperty(Navigator.prototype, "doNotTrack", { get: () => "1" }); },
    () => { Object.defineProperty(Navigator.prototype, "globalPrivacyControl", { get: () => true }); },
  ]) {
    const context = await browser.newContext({ userAgent: UA });
    await context.addInitScript(init);
    const page = await context.newPage();
    await page.goto(`${origin}/page?consent=given`);
    await waitFor(page, "document.getElementById('b').readyState >= 4");
    await page.evaluate(() => window.edgemetrics.consent(true));
    await page.evaluate(() => document.getElementById("b").play());
    await waitFor(page, "document.getElementById('b').ended");
    await page.evaluate(() => window.dispatchEvent(new Event("pagehide")));
    assert.deepEqual(await storage(page), { sid: null, session: 0, local: 0 }, String(init));
    await context.close();
  }
  // Opting out after consent and a play: the queued events are dropped and the id deleted.
  const context = await browser.newContext({ userAgent: UA });
  const page = await context.newPage();
  await page.goto(`${origin}/page?consent=given`);
  assert.match((await storage(page)).sid, /^[0-9a-f]{32}$/);
  await waitFor(page, "document.getElementById('b').readyState >= 4");
  await page.evaluate(() => document.getElementById("b").play());
  await waitFor(page, "document.getElementById('b').ended");
  await page.evaluate(() => {
    window.edgemetricsOptOut = true;
    window.dispatchEvent(new Event("pagehide"));
  });
  assert.deepEqual(await storage(page), { sid: null, session: 0, local: 0 });
  await context.close();
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(events((await recorded(mf)).points).length, 0);
});
