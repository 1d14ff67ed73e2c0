// POST /v1/collect and GET /tracker.js in workerd: CORS, DNT/GPC, bots, limits, privacy.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { here, recorded, root, startWorker } from "./harness.mjs";

const ORIGIN = "https://app.example.com";
const UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15";
const IP = "203.0.113.99";
let mf;
before(async () => {
  ({ mf } = await startWorker({ allowedOrigins: `${ORIGIN},https://*.creators.example` }));
});
after(async () => {
  await mf.dispose();
});

const send = (events, headers = {}, extra = {}) =>
  mf.dispatchFetch("http://worker.test/v1/collect", {
    method: "POST",
    headers: { origin: ORIGIN, "user-agent": UA, "content-type": "text/plain;charset=UTF-8", "cf-connecting-ip": IP, ...headers },
    body: JSON.stringify({ events, url: `${ORIGIN}/watch/1`, referrer: "https://duckduckgo.com/?q=secret+query", ...extra }),
    cf: { country: "FR", city: "Lyon" },
  });

const view = (content = "v1") => ({ type: "view", content_id: content, creator_id: "c1", content_type: "video" });

test("preflight and responses carry CORS headers for allowed origins only", async () => {
  const pre = await mf.dispatchFetch("http://worker.test/v1/collect", { method: "OPTIONS", headers: { origin: ORIGIN, "access-control-request-method": "POST" } });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get("access-control-allow-origin"), ORIGIN);
  assert.match(pre.headers.get("access-control-allow-methods"), /POST/);
  const sub = await send([view()], { origin: "https://alice.creators.example" });
  assert.equal(sub.status, 200);
  assert.equal(sub.headers.get("access-control-allow-origin"), "https://alice.creators.example");
  await recorded(mf);
  for (const origin of ["https://evil.example", "https://creators.example.evil", "http://app.example.com"]) {
    const res = await send([view()], { origin });
    assert.equal(res.status, 403, origin);
    assert.equal(res.headers.get("access-control-allow-origin"), null);
    assert.equal((await res.json()).error.code, "origin_not_allowed");
  }
  const denied = await mf.dispatchFetch("http://worker.test/v1/collect", { method: "OPTIONS", headers: { origin: "https://evil.example" } });
  assert.equal(denied.status, 403);
  assert.equal((await recorded(mf)).points.length, 0);
});

test("DNT and GPC are honoured: accepted with 204 and nothing written", async () => {
  await recorded(mf);
  for (const headers of [{ dnt: "1" }, { "sec-gpc": "1" }]) {
    const res = await send([view()], headers);
    assert.equal(res.status, 204);
    assert.equal(res.headers.get("access-control-allow-origin"), ORIGIN);
  }
  assert.equal((await recorded(mf)).points.length, 0);
  assert.equal((await send([view()], { dnt: "0" })).status, 200);
  assert.equal((await recorded(mf)).points.length, 1);
});

test("bots, crawlers, headless browsers and HTTP libraries are dropped", async () => {
  await recorded(mf);
  for (const ua of [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.32",
    "facebookexternalhit/1.1",
    "",
  ]) {
    assert.equal((await send([view()], { "user-agent": ua })).status, 204, ua);
  }
  assert.equal((await recorded(mf)).points.length, 0);
});

test("a browser sending a purchase or an api_call is refused per event; its views still count", async () => {
  await recorded(mf);
  const res = await send([
    { type: "purchase", amount_minor: 100000, currency: "EUR", transaction_id: "fake" },
    { type: "refund", amount_minor: 1, currency: "EUR", transaction_id: "fake2" },
    { type: "api_call", method: "GET", route: "/", status_code: 200, duration_ms: 1 },
    { ...view(), user_id: "admin", authenticated: true },
    view("v2"),
  ]);
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.accepted, 1);
  assert.deepEqual(
    body.rejected.map((r) => [r.index, r.errors.map((e) => `${e.field}:${e.rule}`).sort().join(",")]),
    [[0, "type:browser_type"], [1, "type:browser_type"], [2, "type:browser_type"], [3, "authenticated:browser_field,user_id:browser_field"]],
  );
  const got = await recorded(mf);
  assert.deepEqual(got.points.map((p) => p.dataset), ["edgemetrics_content"]);
});

test("size limits: 16 KiB body, 50 events, malformed JSON", async () => {
  await recorded(mf);
  const big = await send([view()], {}, { pad: "x".repeat(16 * 1024) });
  assert.deepEqual([big.status, (await big.json()).error.code], [413, "too_large"]);
  const many = await send(Array.from({ length: 51 }, () => view()));
  assert.deepEqual([many.status, (await many.json()).error.code], [413, "too_many_events"]);
  const bad = await mf.dispatchFetch("http://worker.test/v1/collect", { method: "POST", headers: { origin: ORIGIN, "user-agent": UA }, body: "{oops" });
  assert.deepEqual([bad.status, (await bad.json()).error.code], [400, "malformed_json"]);
  assert.equal(bad.headers.get("access-control-allow-origin"), ORIGIN);
  const long = await send([{ ...view(), content_id: "x".repeat(65) }]);
  assert.deepEqual((await long.json()).rejected[0].errors.map((e) => e.rule), ["string_too_long"]);
  assert.equal((await recorded(mf)).points.length, 0);
});

test("enrichment: geo from request.cf, UA labels, referrer source; the IP, UA and query never stored", async () => {
  await recorded(mf);
  assert.equal((await send([view("v9")])).status, 200);
  const [p] = (await recorded(mf)).points;
  // blobs: type content_id content_type creator_id session_id user_id country city device browser bv os ov referrer tz
  assert.deepEqual(p.blobs.slice(6, 14), ["FR", "Lyon", "desktop", "Safari", "17", "macOS", "10", "DuckDuckGo"]);
  const stored = JSON.stringify(p);
  for (const secret of [IP, UA, "Macintosh", "secret", "q="]) assert.ok(!stored.includes(secret), `${secret} leaked`);
  const kv = await mf.getKVNamespace("EDGEMETRICS_STATE");
  const { keys } = await kv.list();
  for (const k of keys) {
    assert.ok(!k.name.includes(IP));
    const value = (await kv.get(k.name)) ?? "";
    assert.ok(!value.includes(IP) && !value.includes("Macintosh"), `KV ${k.name} holds the IP or UA`);
  }
});

test("consent mode: the browser session id decides sessions, is kept hashed in KV for 90 minutes and stored nowhere", async () => {
  await recorded(mf);
  const kv = await mf.getKVNamespace("EDGEMETRICS_STATE");
  const tab1 = "9a8b7c6d5e4f30211203f4e5d6c7b8a9";
  const tab2 = "00112233445566778899aabbccddeeff";
  // Two tabs of one browser (same IP and UA): two sessions; the first tab keeps its own.
  for (const sid of [tab1, tab2, tab1]) {
    const res = await send([{ ...view("consent-1"), session_id: sid }], {}, { consent: "given" });
    assert.deepEqual(await res.json(), { accepted: 1, rejected: [] });
  }
  const points = (await recorded(mf)).points;
  // doubles: sample_rate timestamp ... unique_view(6) new_visitor(7) new_session(8)
  assert.deepEqual(points.map((p) => p.doubles[8]), [1, 1, 0]);
  assert.equal(points[0].blobs[4], points[2].blobs[4]);
  assert.notEqual(points[0].blobs[4], points[1].blobs[4]);
  const sessions = (await kv.list({ prefix: "session:" })).keys;
  assert.equal(sessions.length, 2);
  for (const k of sessions) {
    const left = k.expiration - Date.now() / 1000;
    assert.ok(left > 5300 && left <= 5400, `session state expires in ${left} s`);
  }
  for (const k of (await kv.list()).keys) {
    const value = (await kv.get(k.name)) ?? "";
    for (const sid of [tab1, tab2]) assert.ok(!k.name.includes(sid) && !value.includes(sid), `KV ${k.name} holds a browser session id`);
  }
  for (const sid of [tab1, tab2]) assert.ok(!JSON.stringify(points).includes(sid));
  // Without "consent": "given" the id is refused per event, as before; DNT still wins.
  const refused = await (await send([{ ...view(), session_id: tab1 }, view()])).json();
  assert.equal(refused.accepted, 1);
  assert.deepEqual(refused.rejected[0].errors.map((e) => [e.field, e.rule]), [["session_id", "browser_field"]]);
  assert.equal((await send([{ ...view(), session_id: tab1 }], { dnt: "1" }, { consent: "given" })).status, 204);
  assert.equal((await recorded(mf)).points.length, 1);
});

test("when KV refuses a write the events are still written (only uniqueness precision suffers)", async () => {
  await recorded(mf);
  const res = await send([view("kv-1")], { "x-test-kv-put-fails": "1" });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).accepted, 1);
  assert.equal((await recorded(mf)).points.length, 1);
});

test("the daily salt is random, kept in KV and expires within 48 hours", async () => {
  const kv = await mf.getKVNamespace("EDGEMETRICS_STATE");
  const { keys } = await kv.list({ prefix: "salt:" });
  assert.equal(keys.length, 1);
  const salt = await kv.get(keys[0].name);
  assert.match(salt, /^[0-9a-f]{64}$/);
  const left = keys[0].expiration - Date.now() / 1000;
  assert.ok(left > 47 * 3600 && left <= 48 * 3600, `salt expires in ${left} s`);
  const seen = (await kv.list({ prefix: "seen:" })).keys;
  assert.ok(seen.length >= 1);
  for (const k of seen) assert.ok(k.expiration - Date.now() / 1000 <= 25 * 3600);
});

test("the tracker is small and the Python package ships the fresh build (npm run build refreshes it)", () => {
  const built = readFileSync(join(here, "..", "dist", "tracker.js"));
  assert.ok(gzipSync(built, { level: 9 }).length <= 2048, "tracker over 2 KB gzipped");
  assert.equal(readFileSync(join(root, "src", "edgemetrics", "static", "tracker.js"), "utf8"), built.toString(), "src/edgemetrics/static/tracker.js is stale: run npm run build");
});

test("GET /tracker.js serves the built tracker, the same file the Python package ships", async () => {
  const res = await mf.dispatchFetch("http://worker.test/tracker.js");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /javascript/);
  const text = await res.text();
  assert.equal(text, readFileSync(join(root, "src", "edgemetrics", "static", "tracker.js"), "utf8"));
  assert.ok(text.includes("sendBeacon"));
});

test("wrangler.toml binds every dataset of layout.json, the KV namespace and the queue", () => {
  const toml = readFileSync(join(here, "..", "wrangler.toml"), "utf8");
  const layout = JSON.parse(readFileSync(join(here, "..", "src", "layout.json"), "utf8"));
  for (const { dataset } of Object.values(layout.families)) {
    assert.match(toml, new RegExp(`binding = "${dataset.toUpperCase()}"\\ndataset = "${dataset}"`));
  }
  assert.match(toml, /\[\[kv_namespaces\]\]\nbinding = "EDGEMETRICS_STATE"/);
  assert.match(toml, /\[\[queues.producers\]\]\nbinding = "EDGEMETRICS_QUEUE"\nqueue = "edgemetrics-batches"/);
  assert.match(toml, /\[\[queues.consumers\]\]\nqueue = "edgemetrics-batches"\nmax_batch_size = 1/);
});
