// The shared ingest vectors (tests/vectors/*.json), run against the Worker in workerd.
// pytest runs the same files against the Python side: same input, same data points.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { batchId, postBatch, recorded, root, startWorker } from "./harness.mjs";

const dir = join(root, "tests", "vectors");
const files = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();

const errorsOf = (errors) =>
  [...new Map(errors.map((e) => [`${e.field}\u0000${e.rule}`, { field: e.field, rule: e.rule }])).values()].sort((a, b) =>
    a.field < b.field ? -1 : a.field > b.field ? 1 : a.rule < b.rule ? -1 : a.rule > b.rule ? 1 : 0,
  );
const strip = ({ dataset, index1, blobs, doubles }) => ({ dataset, index1, blobs, doubles });

test("there are vectors of both kinds", () => {
  assert.ok(files.some((f) => f.startsWith("batch_")));
  assert.ok(files.some((f) => f.startsWith("collect_")));
});

for (const file of files) {
  const vector = JSON.parse(readFileSync(join(dir, file), "utf8"));
  test(`vector ${file}`, async () => {
    const allowed = (vector.allowed_origins ?? ["https://app.example.com"]).join(",");
    const { mf } = await startWorker({ allowedOrigins: allowed });
    try {
      if (vector.kind === "batch") {
        const res = await postBatch(mf, { batch_id: batchId(), events: vector.events }, { now: Date.now() });
        assert.equal(res.status, 200);
        const got = await recorded(mf);
        assert.deepEqual(got.points, vector.expect.points.map(strip));
        assert.deepEqual(
          res.body.rejected.map((r) => ({ index: r.index, errors: errorsOf(r.errors) })),
          vector.expect.rejected,
        );
        assert.equal(res.body.accepted, vector.expect.points.length);
      } else {
        const kv = await mf.getKVNamespace("EDGEMETRICS_STATE");
        for (const [day, salt] of Object.entries(vector.salts)) await kv.put(`salt:${day}`, salt);
        for (const [i, req] of vector.requests.entries()) {
          const res = await mf.dispatchFetch("http://worker.test/v1/collect", {
            method: "POST",
            headers: { ...req.headers, "cf-connecting-ip": req.ip, "x-test-now": String(req.now) },
            cf: req.cf,
            body: req.body,
          });
          const text = await res.text();
          const where = `${file} request ${i}`;
          assert.equal(res.status, req.expect.status, `${where}: status (${text})`);
          if (res.status === 200) {
            const body = JSON.parse(text);
            assert.deepEqual(body.rejected.map((r) => ({ index: r.index, errors: errorsOf(r.errors) })), req.expect.rejected, where);
          } else if (req.expect.error) {
            assert.equal(JSON.parse(text).error.code, req.expect.error, where);
          }
          const got = await recorded(mf);
          assert.deepEqual(got.points, req.expect.points.map(strip), where);
        }
      }
    } finally {
      await mf.dispose();
    }
  });
}
