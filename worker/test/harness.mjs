// Starts the Worker (dist/test-worker.js: the real Worker with recording AE bindings) in
// workerd through Miniflare, with KV and the queue wired as in wrangler.toml.
import { Miniflare } from "miniflare";
import { createHmac, randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const here = dirname(fileURLToPath(import.meta.url));
export const root = join(here, "..", "..");
export const SECRET = "test-secret-0123456789";

export async function startWorker({ allowedOrigins = "https://app.example.com", healthInterval = "3600", port, kvPersist, secret = SECRET } = {}) {
  const mf = new Miniflare({
    modules: true,
    scriptPath: join(here, "..", "dist", "test-worker.js"),
    compatibilityDate: "2025-04-01",
    kvNamespaces: ["EDGEMETRICS_STATE"],
    ...(kvPersist ? { kvPersist } : {}),
    queueProducers: { EDGEMETRICS_QUEUE: { queueName: "edgemetrics-batches" } },
    queueConsumers: { "edgemetrics-batches": { maxBatchSize: 1, maxBatchTimeout: 1 } },
    bindings: { INGEST_SECRET: secret, ALLOWED_ORIGINS: allowedOrigins, HEALTH_INTERVAL_S: healthInterval },
    ...(port !== undefined ? { host: "127.0.0.1", port } : {}),
  });
  const url = await mf.ready;
  return { mf, url };
}

export function sign(body, { secret = SECRET, timestamp = Math.floor(Date.now() / 1000) } = {}) {
  const mac = createHmac("sha256", secret).update(`${timestamp}.`).update(body).digest("hex");
  return { "x-edgemetrics-timestamp": String(timestamp), "x-edgemetrics-signature": `v1=${mac}` };
}

export function batchId() {
  return randomBytes(16).toString("hex");
}

export async function postBatch(mf, payload, { headers = {}, now, raw, gzip = false } = {}) {
  let body = raw ?? Buffer.from(JSON.stringify(payload));
  if (gzip) body = (await import("node:zlib")).gzipSync(body);
  const ts = now !== undefined ? Math.floor(now / 1000) : undefined;
  const h = {
    "content-type": "application/json",
    ...(gzip ? { "content-encoding": "gzip" } : {}),
    ...sign(body, ts !== undefined ? { timestamp: ts } : {}),
    ...(now !== undefined ? { "x-test-now": String(now) } : {}),
    ...headers,
  };
  const res = await mf.dispatchFetch("http://worker.test/v1/batch", { method: "POST", headers: h, body });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
}

export async function recorded(mf, reset = true) {
  const res = await mf.dispatchFetch(`http://worker.test/__test/points${reset ? "?reset=1" : ""}`);
  return res.json();
}

/** Poll until `count` points (optionally filtered) are recorded, or fail after `ms`. */
export async function waitForPoints(mf, count, ms = 20000, filter = () => true) {
  const end = Date.now() + ms;
  for (;;) {
    const got = await recorded(mf, false);
    const pts = got.points.filter(filter);
    if (pts.length >= count || Date.now() > end) return { ...got, points: pts };
    await new Promise((r) => setTimeout(r, 100));
  }
}
