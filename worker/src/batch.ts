// POST /v1/batch: signed server batches from the exporter (docs/ingest-protocol.md).
import { encodeValues, LimitError, type Point } from "./encode";
import { errorResponse, json, type Env, type Invocation, type QueueMessage } from "./env";
import { countHealth, MAX_POINTS, writePoints } from "./write";
import { shapeErrors, typePlan, validateInto, type FieldError, type Json } from "./validate";

const MAX_BODY = 1024 * 1024;
const MAX_DECOMPRESSED = 5 * 1024 * 1024;
const MAX_EVENTS = 5000;
const WINDOW_S = 300;
const BATCH_ID = /^[0-9a-f]{32}$/;
const REPLAY_TTL_S = 86400;
// Queue messages are limited to 128 KB; stay well under it.
const QUEUE_MESSAGE_BYTES = 100 * 1024;

// Batch ids accepted by this isolate (fast path); KV holds them across isolates and colos.
const recentBatches = new Map<string, true>();

function rememberLocally(id: string): void {
  recentBatches.set(id, true);
  if (recentBatches.size > 10000) recentBatches.delete(recentBatches.keys().next().value as string);
}

function hexToBytes(hex: string): Uint8Array | null {
  if (!/^[0-9a-f]{64}$/.test(hex)) return null;
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

const keys = new Map<string, Promise<CryptoKey>>();
function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
    keys.set(secret, key);
  }
  return key;
}

async function readLimited(stream: ReadableStream<Uint8Array>, limit: number): Promise<Uint8Array | null> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

/**
 * Gunzip a body whose trailer declares its size (ISIZE) within the limit, natively: the
 * output is piped into a FixedLengthStream of that size, which errors on any byte more, so
 * a lying trailer cannot make it buffer past the limit. Null when the fast path does not
 * apply or fails (another size, several gzip members, bad data): readLimited then decides,
 * chunk by chunk. Reading the chunks in JS costs several times the decompression itself.
 */
async function gunzipDeclared(body: Uint8Array): Promise<Uint8Array | null> {
  if (body.length < 18) return null; // 10-byte header + 8-byte trailer
  const declared = new DataView(body.buffer, body.byteOffset + body.length - 4, 4).getUint32(0, true);
  if (declared > MAX_DECOMPRESSED) return null;
  try {
    const inflate = new DecompressionStream("gzip");
    const sized = new FixedLengthStream(declared);
    const piped = inflate.readable.pipeTo(sized.writable);
    const writer = inflate.writable.getWriter();
    // Errors surface through the pipe and the read below; these promises only mirror them.
    writer.write(body).catch(() => {});
    writer.close().catch(() => {});
    const [out] = await Promise.all([new Response(sized.readable).arrayBuffer(), piped]);
    return new Uint8Array(out);
  } catch {
    return null;
  }
}

export interface Rejection {
  index: number;
  event_id: string | null;
  errors: FieldError[];
}

/** Validate and encode events; one bad event never loses the others. */
export async function validateAll(events: unknown[], now: number, check?: (e: Record<string, unknown>, i: number) => FieldError[]): Promise<{ points: Point[]; rejected: Rejection[] }> {
  const points: Point[] = [];
  const rejected: Rejection[] = [];
  for (let i = 0; i < events.length; i++) {
    const raw = events[i];
    const id = raw && typeof raw === "object" && typeof (raw as Record<string, unknown>).event_id === "string" ? ((raw as Record<string, unknown>).event_id as string) : null;
    const pre = check ? check(raw as Record<string, unknown>, i) : [];
    if (pre.length) {
      rejected.push({ index: i, event_id: id, errors: pre });
      continue;
    }
    const plan = raw !== null && typeof raw === "object" ? typePlan((raw as Record<string, unknown>).type) : undefined;
    if (plan === undefined) {
      rejected.push({ index: i, event_id: id, errors: shapeErrors(raw) as FieldError[] });
      continue;
    }
    // Validate into slot values and encode those: validateEvent + encodeEvent without the
    // normalised event object in between.
    const values = plan.defaults.slice();
    const errors = validateInto(plan, raw as Record<string, Json>, values, now);
    if (errors !== null) {
      rejected.push({ index: i, event_id: id, errors });
      continue;
    }
    try {
      const point = encodeValues(plan, values);
      points.push(point instanceof Promise ? await point : point);
    } catch (err) {
      if (!(err instanceof LimitError)) throw err;
      rejected.push({ index: i, event_id: id, errors: [{ field: err.field, rule: err.rule, message: err.message }] });
    }
  }
  return { points, rejected };
}

/** Split points into queue messages of at most 250 points and ~100 KB each. */
function chunk(points: Point[]): QueueMessage[] {
  const out: QueueMessage[] = [];
  let current: Point[] = [];
  let bytes = 0;
  for (const p of points) {
    const size = JSON.stringify(p).length + 1;
    if (current.length && (current.length >= MAX_POINTS || bytes + size > QUEUE_MESSAGE_BYTES)) {
      out.push({ points: current });
      current = [];
      bytes = 0;
    }
    current.push(p);
    bytes += size;
  }
  if (current.length) out.push({ points: current });
  return out;
}

export async function handleBatch(request: Request, env: Env, inv: Invocation): Promise<Response> {
  const encoding = (request.headers.get("content-encoding") ?? "identity").trim().toLowerCase();
  if (encoding !== "identity" && encoding !== "gzip") {
    return errorResponse(415, "unsupported_encoding", `Content-Encoding ${encoding} is not supported; send identity or gzip`);
  }
  const length = Number(request.headers.get("content-length") ?? "0");
  if (length > MAX_BODY) return errorResponse(413, "too_large", `body is ${length} bytes; the limit is ${MAX_BODY}`);
  // A declared length within the limit is read natively in one piece; otherwise stream with a cap.
  const body = !request.body
    ? new Uint8Array()
    : length > 0
      ? new Uint8Array(await request.arrayBuffer())
      : await readLimited(request.body, MAX_BODY);
  if (body !== null && body.length > MAX_BODY) return errorResponse(413, "too_large", `body is over the ${MAX_BODY}-byte limit`);
  if (body === null) return errorResponse(413, "too_large", `body is over the ${MAX_BODY}-byte limit`);

  const stamp = request.headers.get("x-edgemetrics-timestamp");
  const signature = request.headers.get("x-edgemetrics-signature");
  if (!stamp || !signature) {
    return errorResponse(401, "missing_signature", "X-Edgemetrics-Timestamp and X-Edgemetrics-Signature are required");
  }
  const sigBytes = signature.startsWith("v1=") ? hexToBytes(signature.slice(3)) : null;
  const signed = new TextEncoder().encode(`${stamp}.`);
  const message = new Uint8Array(signed.length + body.length);
  message.set(signed);
  message.set(body, signed.length);
  // subtle.verify compares in constant time.
  const valid = sigBytes !== null && env.INGEST_SECRET !== undefined && env.INGEST_SECRET !== "" &&
    (await crypto.subtle.verify("HMAC", await hmacKey(env.INGEST_SECRET), sigBytes, message));
  if (!valid) return errorResponse(401, "bad_signature", "the signature does not match the body and timestamp");
  const ts = Number(stamp);
  if (!/^\d{1,12}$/.test(stamp) || Math.abs(inv.now / 1000 - ts) > WINDOW_S) {
    return errorResponse(401, "stale_timestamp", `X-Edgemetrics-Timestamp must be within ${WINDOW_S} s of the receiver's clock`);
  }

  let text: Uint8Array = body;
  if (encoding === "gzip") {
    let inflated = await gunzipDeclared(body);
    if (inflated === null) {
      try {
        inflated = await readLimited(new Blob([body]).stream().pipeThrough(new DecompressionStream("gzip")), MAX_DECOMPRESSED);
        if (inflated === null) return errorResponse(413, "too_large", `decompressed body is over the ${MAX_DECOMPRESSED}-byte limit`);
      } catch {
        return errorResponse(400, "malformed_json", "the body is not valid gzip");
      }
    }
    text = inflated;
  }
  let data: unknown;
  try {
    data = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(text));
  } catch (err) {
    return errorResponse(400, "malformed_json", `the body is not valid JSON: ${(err as Error).message}`);
  }
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    return errorResponse(400, "bad_shape", 'the body must be {"batch_id": "<32 hex>", "events": [...]}');
  }
  const { batch_id: batchId, events } = data as { batch_id?: unknown; events?: unknown };
  if (typeof batchId !== "string" || !BATCH_ID.test(batchId)) return errorResponse(400, "bad_shape", "batch_id must be 32 lowercase hex digits");
  if (!Array.isArray(events)) return errorResponse(400, "bad_shape", "events must be an array");
  if (events.length > MAX_EVENTS) return errorResponse(413, "too_many_events", `${events.length} events; the limit is ${MAX_EVENTS}`);

  if (recentBatches.has(batchId) || (await env.EDGEMETRICS_STATE.get(`batch:${batchId}`)) !== null) {
    return json({ batch_id: batchId, accepted: 0, rejected: [], duplicate: true });
  }
  const { points, rejected } = await validateAll(events, inv.now);
  let status = 200;
  if (points.length + inv.written <= MAX_POINTS) {
    writePoints(env, inv, points);
  } else {
    status = 202;
    // One message per send: sendBatch caps the total size at 256 KB.
    for (const message of chunk(points)) await env.EDGEMETRICS_QUEUE.send(message);
  }
  rememberLocally(batchId);
  try {
    await env.EDGEMETRICS_STATE.put(`batch:${batchId}`, "1", { expirationTtl: REPLAY_TTL_S });
  } catch (err) {
    // The events are written: answer success, or the sender would resend them all.
    console.warn("edgemetrics: batch id not recorded in KV", err);
  }
  countHealth(events.length, points.length, rejected.length);
  return json({ batch_id: batchId, accepted: points.length, rejected, duplicate: false }, status);
}
