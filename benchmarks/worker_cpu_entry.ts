// Benchmark entry (bundled by worker_cpu.mjs): runs the real /v1/batch handler on N signed,
// gzipped 250-event batches inside one workerd invocation. KV and AE are in-memory stand-ins,
// so there is no I/O and the elapsed time is the handler's CPU time.
import { handleFetch } from "../worker/src/index";
import type { Env } from "../worker/src/env";

const hex = (bytes: ArrayBuffer | Uint8Array) => [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");

async function gzip(text: string): Promise<Uint8Array> {
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

let prepared: { body: Uint8Array; headers: Record<string, string> }[] = [];
let writes = 0;
let benchEnvironment: Env | null = null;

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    if (new URL(request.url).pathname === "/run") {
      // Run what /prepare built: the bench script reads workerd's CPU time around this call.
      const t0 = performance.now();
      // Bodies cannot cross requests in workerd: the Request objects are made here.
      for (const { body, headers } of prepared) {
        const res = await handleFetch(new Request("http://bench/v1/batch", { method: "POST", headers, body }), benchEnvironment as Env, ctx);
        if (res.status !== 200) throw new Error(`status ${res.status}: ${await res.text()}`);
      }
      const elapsed = performance.now() - t0;
      const n = prepared.length;
      prepared = [];
      const written = writes;
      writes = 0;
      return Response.json({ per_batch_ms: elapsed / n, batches: n, writes: written });
    }
    const { events, n } = (await request.json()) as { events: unknown[]; n: number };
    const secret = "bench-secret";
    const kv = new Map<string, string>();
    const dataset = { writeDataPoint: () => void writes++ };
    const benchEnv = {
      ...env,
      EDGEMETRICS_CONTENT: dataset,
      EDGEMETRICS_COMMERCE: dataset,
      EDGEMETRICS_PLATFORM: dataset,
      EDGEMETRICS_PIPELINE: dataset,
      EDGEMETRICS_STATE: { get: async (k: string) => kv.get(k) ?? null, put: async (k: string, v: string) => void kv.set(k, v) },
      INGEST_SECRET: secret,
      HEALTH_INTERVAL_S: "3600",
    } as unknown as Env;
    const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const stamp = String(Math.floor(Date.now() / 1000));
    const requests: { body: Uint8Array; headers: Record<string, string> }[] = [];
    const run = hex(crypto.getRandomValues(new Uint8Array(8))); // fresh ids: replays are dropped
    for (let i = 0; i < n; i++) {
      const body = await gzip(JSON.stringify({ batch_id: run + i.toString(16).padStart(16, "0"), events }));
      const signed = new Uint8Array([...new TextEncoder().encode(stamp + "."), ...body]);
      const mac = hex(await crypto.subtle.sign("HMAC", key, signed));
      requests.push({
        body,
        headers: { "content-type": "application/json", "content-encoding": "gzip", "x-edgemetrics-timestamp": stamp, "x-edgemetrics-signature": `v1=${mac}` },
      });
    }
    prepared = requests;
    benchEnvironment = benchEnv;
    return Response.json({ prepared: n });
  },
};
