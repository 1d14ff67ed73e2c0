// POST /v1/batch in workerd: signatures, replay, limits, the queue path, health.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { batchId, postBatch, recorded, sign, startWorker, waitForPoints } from "./harness.mjs";

let mf;
before(async () => {
  ({ mf } = await startWorker());
});
after(async () => {
  await mf.dispose();
});

const view = (i, extra = {}) => ({
  type: "view",
  event_id: i.toString(16).padStart(32, "0"),
  timestamp: "2026-11-25T10:00:00Z",
  content_id: `v${i}`,
  creator_id: "c1",
  ...extra,
});

test("a signed batch is written and answered with per-event rejections", async () => {
  await recorded(mf);
  const id = batchId();
  const res = await postBatch(mf, { batch_id: id, events: [view(1), { type: "purchase", amount_minor: -5, currency: "EUR", transaction_id: "t" }, view(2)] });
  assert.equal(res.status, 200);
  assert.equal(res.body.batch_id, id);
  assert.equal(res.body.accepted, 2);
  assert.equal(res.body.duplicate, false);
  assert.deepEqual(res.body.rejected.map((r) => [r.index, r.errors[0].field, r.errors[0].rule]), [[1, "amount_minor", "greater_than_equal"]]);
  assert.match(res.body.rejected[0].errors[0].message, /greater than or equal to 0/);
  const got = await recorded(mf);
  assert.deepEqual(got.points.map((p) => p.blobs[1]), ["v1", "v2"]);
});

test("a gzipped batch is accepted", async () => {
  await recorded(mf);
  const res = await postBatch(mf, { batch_id: batchId(), events: [view(3)] }, { gzip: true });
  assert.equal(res.status, 200);
  assert.equal(res.body.accepted, 1);
  assert.equal((await recorded(mf)).points.length, 1);
});

test("a bad signature, a missing one, another secret and a stale timestamp are refused, nothing written", async () => {
  await recorded(mf);
  const body = Buffer.from(JSON.stringify({ batch_id: batchId(), events: [view(4)] }));
  // Headers are made when each request is sent: on a loaded machine, timestamps taken
  // up front could drift back inside the window before the last case goes out.
  const now = () => Math.floor(Date.now() / 1000);
  const cases = [
    [() => ({ "x-edgemetrics-timestamp": String(now()), "x-edgemetrics-signature": "v1=" + "0".repeat(64) }), "bad_signature"],
    [() => sign(body, { secret: "another-secret" }), "bad_signature"],
    [() => ({ "x-edgemetrics-signature": sign(body)["x-edgemetrics-signature"] }), "missing_signature"],
    [() => ({ ...sign(body), "x-edgemetrics-signature": sign(body)["x-edgemetrics-signature"].replace("v1=", "v2=") }), "bad_signature"],
    [() => sign(body, { timestamp: now() - 305 }), "stale_timestamp"],
    [() => sign(body, { timestamp: now() + 305 }), "stale_timestamp"],
  ];
  for (const [makeHeaders, code] of cases) {
    const headers = makeHeaders();
    const res = await mf.dispatchFetch("http://worker.test/v1/batch", { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
    assert.equal(res.status, 401, code);
    assert.equal((await res.json()).error.code, code);
  }
  // A body changed after signing fails too.
  const signed = sign(body);
  const tampered = Buffer.from(body.toString().replace("v4", "v5"));
  const res = await mf.dispatchFetch("http://worker.test/v1/batch", { method: "POST", headers: { "content-type": "application/json", ...signed }, body: tampered });
  assert.equal(res.status, 401);
  assert.equal((await recorded(mf)).points.length, 0);
});

test("a replayed batch id is dropped: 200 duplicate, nothing written twice", async () => {
  await recorded(mf);
  const payload = { batch_id: batchId(), events: [view(6), view(7)] };
  const first = await postBatch(mf, payload);
  assert.equal(first.body.accepted, 2);
  const again = await postBatch(mf, payload);
  assert.equal(again.status, 200);
  assert.deepEqual([again.body.duplicate, again.body.accepted], [true, 0]);
  assert.equal((await recorded(mf)).points.length, 2);
});

test("a replayed batch id is dropped by another isolate too (the KV record)", async () => {
  // Two Worker instances share only KV storage on disk: the second has never seen the id.
  const dir = mkdtempSync(join(tmpdir(), "em-kv-"));
  const payload = { batch_id: batchId(), events: [view(8)] };
  const a = await startWorker({ kvPersist: dir });
  try {
    assert.equal((await postBatch(a.mf, payload)).body.accepted, 1);
  } finally {
    await a.mf.dispose();
  }
  const b = await startWorker({ kvPersist: dir });
  try {
    const again = await postBatch(b.mf, payload);
    assert.deepEqual([again.body.duplicate, again.body.accepted], [true, 0]);
    assert.equal((await recorded(b.mf)).points.length, 0);
  } finally {
    await b.mf.dispose();
  }
});

test("malformed JSON, a wrong shape, an unknown encoding and oversized bodies get clear errors", async () => {
  await recorded(mf);
  const bad = await postBatch(mf, null, { raw: Buffer.from('{"batch_id": "x", "events": [') });
  assert.deepEqual([bad.status, bad.body.error.code], [400, "malformed_json"]);
  const shape = await postBatch(mf, { batch_id: "nothex", events: [] });
  assert.deepEqual([shape.status, shape.body.error.code], [400, "bad_shape"]);
  const noEvents = await postBatch(mf, { batch_id: batchId(), events: {} });
  assert.deepEqual([noEvents.status, noEvents.body.error.code], [400, "bad_shape"]);
  const enc = await postBatch(mf, { batch_id: batchId(), events: [] }, { headers: { "content-encoding": "br" } });
  assert.deepEqual([enc.status, enc.body.error.code], [415, "unsupported_encoding"]);
  const big = Buffer.from(JSON.stringify({ batch_id: batchId(), events: [view(9, { city: "x".repeat(1024 * 1024) })] }));
  const large = await postBatch(mf, null, { raw: big });
  assert.deepEqual([large.status, large.body.error.code], [413, "too_large"]);
  // Under 1 MiB as sent, over 5 MiB once decompressed: a gzip bomb is refused.
  const bomb = Buffer.from(JSON.stringify({ batch_id: batchId(), events: [view(10, { city: " ".repeat(6 * 1024 * 1024) })] }));
  const inflated = await postBatch(mf, null, { raw: bomb, gzip: true });
  assert.deepEqual([inflated.status, inflated.body.error.code], [413, "too_large"]);
  const many = await postBatch(mf, { batch_id: batchId(), events: Array.from({ length: 5001 }, () => ({})) });
  assert.deepEqual([many.status, many.body.error.code], [413, "too_many_events"]);
  assert.equal((await recorded(mf)).points.length, 0);
});

test("gzip bodies are judged by their content, not by the size their trailer declares", async () => {
  await recorded(mf);
  const { gzipSync } = await import("node:zlib");
  const gzipped = { "content-encoding": "gzip" };
  // The trailer's ISIZE (last 4 bytes) claims 1,000 bytes; the content inflates past 5 MiB:
  // refused (gzip's own length check fails before the limit is reached).
  const bomb = gzipSync(Buffer.from(JSON.stringify({ batch_id: batchId(), events: [view(11, { city: " ".repeat(6 * 1024 * 1024) })] })));
  bomb.writeUInt32LE(1000, bomb.length - 4);
  const lying = await postBatch(mf, null, { raw: bomb, headers: gzipped });
  assert.equal(lying.status, 400);
  assert.equal(lying.body.error.code, "malformed_json");
  // A small body whose trailer is wrong fails gzip's own length check.
  const wrong = gzipSync(Buffer.from(JSON.stringify({ batch_id: batchId(), events: [view(12)] })));
  wrong.writeUInt32LE(wrong.readUInt32LE(wrong.length - 4) + 1, wrong.length - 4);
  const bad = await postBatch(mf, null, { raw: wrong, headers: gzipped });
  assert.deepEqual([bad.status, bad.body.error.code], [400, "malformed_json"]);
  const corrupt = gzipSync(Buffer.from(JSON.stringify({ batch_id: batchId(), events: [view(13)] })));
  corrupt.fill(0xff, 12, 20);
  const broken = await postBatch(mf, null, { raw: corrupt, headers: gzipped });
  assert.deepEqual([broken.status, broken.body.error.code], [400, "malformed_json"]);
  // Nothing of the refused batches is written; a good gzip body still goes through.
  assert.equal((await recorded(mf)).points.length, 0);
  const good = await postBatch(mf, { batch_id: batchId(), events: [view(14), view(15)] }, { gzip: true });
  assert.deepEqual([good.status, good.body.accepted], [200, 2]);
  assert.equal((await recorded(mf)).points.length, 2);
});

test("a 1,000-event batch goes through the queue: all written, never over 250 per invocation", async () => {
  await recorded(mf);
  const events = Array.from({ length: 1000 }, (_, i) => view(1000 + i, { city: "Berlin", position: i }));
  events[500] = { type: "view" }; // one bad event: reported, the others kept
  const res = await postBatch(mf, { batch_id: batchId(), events });
  assert.equal(res.status, 202);
  assert.equal(res.body.accepted, 999);
  assert.deepEqual(res.body.rejected.map((r) => r.index), [500]);
  const got = await waitForPoints(mf, 999, 30000);
  assert.equal(got.points.length, 999);
  const positions = got.points.map((p) => p.doubles[3]).sort((a, b) => a - b);
  assert.deepEqual(positions, Array.from({ length: 1000 }, (_, i) => i).filter((i) => i !== 500));
  const queued = got.invocations.filter((i) => i.kind === "queue");
  assert.ok(queued.length >= 4, `expected at least 4 queue invocations, got ${queued.length}`);
  for (const inv of got.invocations) assert.ok(inv.writes <= 250, `an invocation wrote ${inv.writes} points`);
  assert.equal(got.invocations.find((i) => i.kind === "fetch").writes, 0);
});

test("exactly 250 events are written directly in one invocation", async () => {
  await recorded(mf);
  const res = await postBatch(mf, { batch_id: batchId(), events: Array.from({ length: 250 }, (_, i) => view(5000 + i)) });
  assert.equal(res.status, 200);
  const got = await recorded(mf);
  assert.equal(got.points.length, 250);
  assert.deepEqual(got.invocations.map((i) => i.writes), [250]);
});

test("unknown routes and methods answer 404/405", async () => {
  assert.equal((await mf.dispatchFetch("http://worker.test/nope")).status, 404);
  assert.equal((await mf.dispatchFetch("http://worker.test/v1/batch")).status, 405);
});

test("the Worker reports its own health as a pipeline_health point", async () => {
  const { mf: healthy } = await startWorker({ healthInterval: "0" });
  try {
    await postBatch(healthy, { batch_id: batchId(), events: [view(1), view(2), { type: "view" }] });
    const got = await recorded(healthy);
    const health = got.points.filter((p) => p.dataset === "edgemetrics_pipeline");
    assert.equal(health.length, 1);
    const [p] = health;
    assert.deepEqual(p.blobs, ["pipeline_health", "worker"]);
    assert.equal(p.index1, "worker");
    // doubles: [2] events_in, [3] events_exported, [8] rejected, [14] batches, [16] execution_ms
    assert.equal(p.doubles[2], 3);
    assert.equal(p.doubles[3], 2);
    assert.equal(p.doubles[8], 1);
    assert.equal(p.doubles[14], 1);
    assert.ok(p.doubles[16] >= 0);
  } finally {
    await healthy.dispose();
  }
});

test("when KV refuses the batch-id record the batch is still accepted and written", async () => {
  await recorded(mf);
  const res = await postBatch(mf, { batch_id: batchId(), events: [view(77)] }, { headers: { "x-test-kv-put-fails": "1" } });
  assert.equal(res.status, 200);
  assert.equal(res.body.accepted, 1);
  assert.equal((await recorded(mf)).points.length, 1);
});
