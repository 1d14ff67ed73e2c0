// Bindings (wrangler.toml). AE bindings are named after their dataset, upper-cased
// (layout.json families[*].dataset), so the Worker finds them generically.
export interface Env {
  EDGEMETRICS_CONTENT: AnalyticsEngineDataset;
  EDGEMETRICS_COMMERCE: AnalyticsEngineDataset;
  EDGEMETRICS_PLATFORM: AnalyticsEngineDataset;
  EDGEMETRICS_PIPELINE: AnalyticsEngineDataset;
  /** Daily visitor salts, visitor "seen" state and accepted batch ids, all with expiry. */
  EDGEMETRICS_STATE: KVNamespace;
  /** Producer for batches over 250 events; this Worker is also its consumer. */
  EDGEMETRICS_QUEUE: Queue<QueueMessage>;
  /** Shared HMAC secret for /v1/batch (`wrangler secret put INGEST_SECRET`). */
  INGEST_SECRET: string;
  /** Comma-separated origins allowed to POST /v1/collect; `https://*.example.com` allowed. */
  ALLOWED_ORIGINS?: string;
  /** Seconds between the Worker's own pipeline_health points (default 60). */
  HEALTH_INTERVAL_S?: string;
}

export interface QueueMessage {
  points: import("./encode").Point[];
}

/** Per-invocation context: the clock and the number of points written so far. */
export interface Invocation {
  now: number;
  started: number;
  written: number;
}

export function dataset(env: Env, name: string): AnalyticsEngineDataset {
  const binding = (env as unknown as Record<string, AnalyticsEngineDataset | undefined>)[name.toUpperCase()];
  if (!binding) throw new Error(`no Analytics Engine binding ${name.toUpperCase()} for dataset ${name}`);
  return binding;
}

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

export function errorResponse(status: number, code: string, message: string, headers: Record<string, string> = {}): Response {
  return json({ error: { code, message } }, status, headers);
}
