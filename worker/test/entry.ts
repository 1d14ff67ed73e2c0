// Test entry for Miniflare: the real Worker with recording Analytics Engine bindings
// (Miniflare's own AE binding discards writes) and a pinned clock per request.
// GET /__test/points returns what was recorded and how many points each invocation wrote.
import { handleFetch, handleQueue } from "../src/index";
import type { Env, QueueMessage } from "../src/env";

interface Recorded {
  dataset: string;
  index1: string;
  blobs: string[];
  doubles: number[];
}

let points: Recorded[] = [];
let invocations: { kind: string; writes: number }[] = [];

function recordingEnv(env: Env, kind: string): Env {
  const inv = { kind, writes: 0 };
  invocations.push(inv);
  const wrapped: Record<string, unknown> = { ...env };
  for (const name of ["edgemetrics_content", "edgemetrics_commerce", "edgemetrics_platform", "edgemetrics_pipeline"]) {
    wrapped[name.toUpperCase()] = {
      writeDataPoint(p: AnalyticsEngineDataPoint) {
        inv.writes++;
        if ((p.indexes ?? []).length > 1 || (p.blobs ?? []).length > 20 || (p.doubles ?? []).length > 20) {
          throw new TypeError("over AE's limits");
        }
        points.push({ dataset: name, index1: String((p.indexes ?? [""])[0]), blobs: (p.blobs ?? []).map(String), doubles: [...(p.doubles ?? [])] });
      },
    };
  }
  return wrapped as unknown as Env;
}

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/__test/points") {
      const body = JSON.stringify({ points, invocations });
      if (url.searchParams.get("reset") === "1") {
        points = [];
        invocations = [];
      }
      return new Response(body, { headers: { "content-type": "application/json" } });
    }
    const now = request.headers.get("x-test-now");
    return handleFetch(request, recordingEnv(env, "fetch"), ctx, now ? { now: Number(now) } : {});
  },
  queue(batch: MessageBatch<QueueMessage>, env: Env): Promise<void> {
    return handleQueue(batch, recordingEnv(env, "queue"));
  },
} satisfies ExportedHandler<Env, QueueMessage>;
