// edgemetrics ingest Worker: routes, the queue consumer, and the invocation bookkeeping.
import { handleBatch } from "./batch";
import { handleCollect, originAllowed, corsHeaders } from "./collect";
import { errorResponse, type Env, type Invocation, type QueueMessage } from "./env";
import { finishInvocation, MAX_POINTS, writePoints } from "./write";

declare const __TRACKER_JS__: string;

export interface Options {
  /** The receive time in epoch ms; tests pin it, production reads the clock. */
  now?: number;
}

function trackerResponse(): Response {
  return new Response(__TRACKER_JS__, {
    headers: {
      "content-type": "application/javascript; charset=utf-8",
      "cache-control": "public, max-age=3600",
      "access-control-allow-origin": "*",
      "x-content-type-options": "nosniff",
    },
  });
}

export async function handleFetch(request: Request, env: Env, ctx: ExecutionContext, options: Options = {}): Promise<Response> {
  const started = Date.now();
  const inv: Invocation = { now: options.now ?? started, started, written: 0 };
  const url = new URL(request.url);
  let response: Response;
  try {
    if (url.pathname === "/v1/batch") {
      response = request.method === "POST" ? await handleBatch(request, env, inv) : errorResponse(405, "method_not_allowed", "use POST");
    } else if (url.pathname === "/v1/collect") {
      if (request.method === "POST" || request.method === "OPTIONS") {
        const cf = (request.cf ?? {}) as { country?: string; city?: string };
        // Cloudflare sets CF-Connecting-IP; it is used only inside the visitor hash.
        const ip = request.headers.get("cf-connecting-ip") ?? "";
        response = await handleCollect(request, env, inv, ip, { country: cf.country, city: cf.city });
      } else response = errorResponse(405, "method_not_allowed", "use POST");
    } else if (url.pathname === "/tracker.js" && (request.method === "GET" || request.method === "HEAD")) {
      response = trackerResponse();
    } else {
      response = errorResponse(404, "not_found", `no route ${request.method} ${url.pathname}`);
    }
  } catch (err) {
    console.error("edgemetrics worker error", err);
    const origin = request.headers.get("origin");
    const cors = url.pathname === "/v1/collect" && originAllowed(origin, env.ALLOWED_ORIGINS) ? corsHeaders(origin as string) : {};
    response = errorResponse(500, "internal", "the Worker failed; retry with the same batch_id", cors);
  }
  await finishInvocation(env, inv);
  return response;
}

export async function handleQueue(batch: MessageBatch<QueueMessage>, env: Env): Promise<void> {
  const started = Date.now();
  const inv: Invocation = { now: started, started, written: 0 };
  for (const message of batch.messages) {
    const points = message.body.points;
    // AE takes at most 250 points per invocation: whatever does not fit waits for the next one.
    if (inv.written + points.length > MAX_POINTS) {
      message.retry();
      continue;
    }
    writePoints(env, inv, points);
    message.ack();
  }
  await finishInvocation(env, inv);
}

export default {
  fetch: (request: Request, env: Env, ctx: ExecutionContext) => handleFetch(request, env, ctx),
  queue: (batch: MessageBatch<QueueMessage>, env: Env) => handleQueue(batch, env),
} satisfies ExportedHandler<Env, QueueMessage>;
