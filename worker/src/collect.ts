// POST /v1/collect: public browser endpoint (rules: docs/ingest-protocol.md, "/v1/collect").
import { encodeEvent, LimitError, type Point } from "./encode";
import {
  classifyUserAgent,
  decide,
  decideSession,
  isBot,
  isBrowserSession,
  referrerSource,
  SALT_TTL_S,
  saltDay,
  SESSION_STATE_TTL_S,
  sessionKey,
  visitorHash,
  type SessionState,
  type VisitorState,
} from "./enrich";
import { errorResponse, json, type Env, type Invocation } from "./env";
import type { Rejection } from "./batch";
import { validateEvent, type FieldError, type Normalized } from "./validate";
import { countHealth, writePoints } from "./write";

export const COLLECT_MAX_BODY = 16 * 1024;
export const COLLECT_MAX_EVENTS = 50;
const MAX_URL = 2048;
const MAX_AGE_MS = 3600 * 1000;
export const BROWSER_TYPES = new Set(["view", "play_start", "pause", "resume", "complete", "abandon", "watch_time"]);
// What a browser may say; everything else about the event is decided here.
const BROWSER_FIELDS = new Set(["type", "event_id", "content_id", "content_type", "creator_id", "position", "media_duration", "watch_time", "timezone", "age_ms"]);

export function originAllowed(origin: string | null, allowed: string | undefined): boolean {
  if (!origin) return false;
  for (const entry of (allowed ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
    if (entry === "*" || entry === origin) return true;
    const star = entry.indexOf("://*.");
    if (star > 0) {
      const scheme = entry.slice(0, star + 3);
      const suffix = entry.slice(star + 4);
      if (origin.startsWith(scheme) && origin.slice(scheme.length).endsWith(suffix)) return true;
    }
  }
  return false;
}

export function corsHeaders(origin: string): Record<string, string> {
  return {
    "access-control-allow-origin": origin,
    "access-control-allow-methods": "POST, OPTIONS",
    "access-control-allow-headers": "content-type",
    "access-control-max-age": "86400",
    vary: "Origin",
  };
}

const salts = new Map<string, string>();

async function dailySalt(env: Env, now: number): Promise<string> {
  const day = saltDay(now);
  const cached = salts.get(day);
  if (cached) return cached;
  const key = `salt:${day}`;
  let salt = await env.EDGEMETRICS_STATE.get(key);
  if (salt === null) {
    const bytes = crypto.getRandomValues(new Uint8Array(32));
    salt = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
    // Deleted by KV after 48 h: once gone, that day's hashes can never be recomputed. If the
    // write is refused this isolate still uses its salt (other isolates may make their own).
    try {
      await env.EDGEMETRICS_STATE.put(key, salt, { expirationTtl: SALT_TTL_S });
    } catch (err) {
      console.warn("edgemetrics: daily salt not saved", err);
    }
  }
  salts.clear();
  salts.set(day, salt);
  return salt;
}

// The one browser session id a consent-mode request may carry: the first well-formed one.
interface RequestSession {
  consent: boolean;
  id: string | null;
}

function sessionErrors(value: unknown, session: RequestSession): FieldError[] {
  if (!session.consent) return [{ field: "session_id", rule: "browser_field", message: 'set by the collector unless the request says "consent": "given"' }];
  if (!isBrowserSession(value)) {
    return [{ field: "session_id", rule: "browser_session", message: "must be 32 lowercase hex digits (the tracker's random session id)" }];
  }
  if (session.id === null) session.id = value;
  else if (value !== session.id) return [{ field: "session_id", rule: "browser_session", message: "one browser session id per request" }];
  return [];
}

function browserErrors(event: unknown, session: RequestSession): FieldError[] {
  if (event === null || typeof event !== "object" || Array.isArray(event)) {
    return [{ field: "event", rule: "type", message: "must be a JSON object" }];
  }
  const e = event as Record<string, unknown>;
  if (typeof e.type !== "string" || !BROWSER_TYPES.has(e.type)) {
    return [{ field: "type", rule: "browser_type", message: `a browser may send only content events (${[...BROWSER_TYPES].join(", ")})` }];
  }
  const errors: FieldError[] = [];
  for (const key of Object.keys(e)) {
    if (!BROWSER_FIELDS.has(key) && key !== "session_id") errors.push({ field: key, rule: "browser_field", message: "set by the collector, not by the browser" });
  }
  if ("session_id" in e) errors.push(...sessionErrors(e.session_id, session));
  if ("age_ms" in e) {
    const age = e.age_ms;
    if (typeof age !== "number" || !Number.isFinite(age)) errors.push({ field: "age_ms", rule: "float_type", message: "Input should be a valid number" });
    else if (age < 0) errors.push({ field: "age_ms", rule: "greater_than_equal", message: "Input should be greater than or equal to 0" });
    else if (age > MAX_AGE_MS) errors.push({ field: "age_ms", rule: "less_than_equal", message: `Input should be less than or equal to ${MAX_AGE_MS}` });
  }
  return errors;
}

function shortText(value: unknown): string | null {
  return typeof value === "string" && value.length <= MAX_URL ? value : null;
}

export interface Geo {
  country?: string | null;
  city?: string | null;
}

export async function handleCollect(request: Request, env: Env, inv: Invocation, ip: string, geo: Geo): Promise<Response> {
  const origin = request.headers.get("origin");
  if (!originAllowed(origin, env.ALLOWED_ORIGINS)) {
    return errorResponse(403, "origin_not_allowed", `origin ${origin ?? "(none)"} is not in ALLOWED_ORIGINS`);
  }
  const cors = corsHeaders(origin as string);
  if (request.method === "OPTIONS") return new Response(null, { status: 204, headers: cors });
  // Honour Do Not Track and Global Privacy Control: accept and drop, so nothing is retried.
  if (request.headers.get("dnt") === "1" || request.headers.get("sec-gpc") === "1") {
    return new Response(null, { status: 204, headers: cors });
  }
  const ua = request.headers.get("user-agent") ?? "";
  if (isBot(ua)) return new Response(null, { status: 204, headers: cors });
  const length = Number(request.headers.get("content-length") ?? "0");
  if (length > COLLECT_MAX_BODY) return errorResponse(413, "too_large", `body is over the ${COLLECT_MAX_BODY}-byte limit`, cors);
  const raw = await request.arrayBuffer();
  if (raw.byteLength > COLLECT_MAX_BODY) return errorResponse(413, "too_large", `body is over the ${COLLECT_MAX_BODY}-byte limit`, cors);
  let data: unknown;
  try {
    data = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(raw));
  } catch (err) {
    return errorResponse(400, "malformed_json", `the body is not valid JSON: ${(err as Error).message}`, cors);
  }
  if (data === null || typeof data !== "object" || !Array.isArray((data as { events?: unknown }).events)) {
    return errorResponse(400, "bad_shape", 'the body must be {"events": [...], "url"?: string, "referrer"?: string, "consent"?: "given"}', cors);
  }
  const body = data as { events: unknown[]; url?: unknown; referrer?: unknown; consent?: unknown };
  if (body.events.length > COLLECT_MAX_EVENTS) {
    return errorResponse(413, "too_many_events", `${body.events.length} events; the limit is ${COLLECT_MAX_EVENTS}`, cors);
  }
  const pageUrl = shortText(body.url);
  const source = referrerSource(shortText(body.referrer), pageUrl);
  const agent = classifyUserAgent(ua);
  const country = typeof geo.country === "string" && /^[A-Z]{2}$/.test(geo.country) && geo.country !== "XX" && geo.country !== "T1" ? geo.country : null;
  const city = typeof geo.city === "string" && geo.city.trim() ? [...geo.city.trim()].slice(0, 64).join("") : null;
  const site = new URL(origin as string).hostname;
  // Only the exact string turns consent mode on; anything else is cookieless.
  const session: RequestSession = { consent: body.consent === "given", id: null };

  // [index, event, whether it carried the browser session id]
  const valid: [number, Normalized, boolean][] = [];
  const rejected: Rejection[] = [];
  for (let i = 0; i < body.events.length; i++) {
    const raw = body.events[i];
    const id = raw && typeof raw === "object" && typeof (raw as Record<string, unknown>).event_id === "string" ? ((raw as Record<string, unknown>).event_id as string) : null;
    const pre = browserErrors(raw, session);
    if (pre.length) {
      rejected.push({ index: i, event_id: id, errors: pre });
      continue;
    }
    // The browser's id never reaches the event: the session id is decided below.
    const { age_ms: age, session_id: carried, ...event } = raw as Record<string, unknown>;
    const result = validateEvent(
      {
        ...event,
        // Milliseconds (a number over 2e10 reads as ms), so no float rounding creeps in.
        timestamp: inv.now - Math.floor(typeof age === "number" ? age : 0),
        country,
        city,
        device_class: agent.device_class,
        browser: agent.browser,
        browser_version: agent.browser_version,
        os: agent.os,
        os_version: agent.os_version,
        referrer_source: source,
      },
      inv.now,
    );
    if (!result.ok) rejected.push({ index: i, event_id: id, errors: result.errors });
    else valid.push([i, result.event, carried !== undefined]);
  }

  const points: Point[] = [];
  if (valid.length) {
    const salt = await dailySalt(env, inv.now);
    const visitor = await visitorHash(salt, site, ip, ua);
    const key = `seen:${visitor}`;
    const stored = await env.EDGEMETRICS_STATE.get(key);
    let state: VisitorState | null = stored === null ? null : (JSON.parse(stored) as VisitorState);
    const consented = session.id !== null && valid.some(([, , c]) => c);
    const sessKey = consented ? await sessionKey(site, session.id as string) : null;
    const sessStored = sessKey === null ? null : await env.EDGEMETRICS_STATE.get(`session:${sessKey}`);
    let browser: SessionState | null = sessStored === null ? null : (JSON.parse(sessStored) as SessionState);
    for (const [index, event, carried] of valid) {
      const [next, u] = await decide(state, visitor, event.type as string, event.content_id as string, event.timestamp as number);
      state = next;
      Object.assign(event, u);
      if (carried && sessKey !== null) {
        // Consent mode: the browser's session decides sessions, not the visitor hash.
        const [nextSession, sid, isNew] = await decideSession(browser, sessKey, event.timestamp as number);
        browser = nextSession;
        event.session_id = sid;
        event.new_session = isNew;
      }
      try {
        points.push(await encodeEvent(event));
      } catch (err) {
        if (!(err instanceof LimitError)) throw err;
        rejected.push({ index, event_id: event.event_id as string, errors: [{ field: err.field, rule: err.rule, message: err.message }] });
      }
    }
    writePoints(env, inv, points);
    // Kept until the end of the salt's day: after that the visitor hash cannot recur. KV takes
    // one write per second per key: a refused write costs uniqueness precision, never events.
    const ttl = Math.max(60, Math.ceil((86400000 - (inv.now % 86400000)) / 1000) + 3600);
    try {
      await env.EDGEMETRICS_STATE.put(key, JSON.stringify(state), { expirationTtl: ttl });
    } catch (err) {
      console.warn("edgemetrics: visitor state not saved", err);
    }
    if (sessKey !== null && browser !== null) {
      try {
        await env.EDGEMETRICS_STATE.put(`session:${sessKey}`, JSON.stringify(browser), { expirationTtl: SESSION_STATE_TTL_S });
      } catch (err) {
        console.warn("edgemetrics: session state not saved", err);
      }
    }
  }
  rejected.sort((a, b) => a.index - b.index);
  countHealth(body.events.length, points.length, rejected.length);
  return json({ accepted: points.length, rejected }, 200, cors);
}
