// Browser enrichment: UA classification, referrer source and cookieless visitor uniqueness.
// The rule tables come from src/edgemetrics/enrich.py (exported to enrich.json), so the
// Worker and the Python collector classify identically.
import rules from "./enrich.json";

export interface UserAgent {
  device_class: string;
  browser: string;
  browser_version: string | null;
  os: string;
  os_version: string | null;
}

const BOT = new RegExp(rules.bot_pattern, "i");
const BROWSERS = rules.browsers.map(([name, p]) => [name, new RegExp(p)] as const);
const OSES = rules.operating_systems.map(([name, p]) => [name, new RegExp(p)] as const);
const DEVICES = rules.device_classes.map(([name, p]) => [name, new RegExp(p)] as const);
const WINDOWS: Record<string, string> = rules.windows_versions;
const REF_HOSTS: Record<string, string> = rules.referrer_hosts;
const REF_PREFIXES: Record<string, string> = rules.referrer_prefixes;
export const SESSION_TIMEOUT_MS: number = rules.session_timeout_ms;
export const SALT_TTL_S: number = rules.salt_ttl_s;
const MAX_VIEWED: number = rules.max_viewed;
const BROWSER_SESSION = new RegExp(rules.browser_session_pattern);
export const SESSION_STATE_TTL_S: number = rules.session_state_ttl_s;
const LABEL_MAX = 64;

export function isBot(ua: string): boolean {
  return ua.trim() === "" || BOT.test(ua);
}

function firstGroup(m: RegExpExecArray): string | null {
  for (let i = 1; i < m.length; i++) if (m[i] !== undefined) return m[i];
  return null;
}

function major(v: string | null): string | null {
  if (v === null || !/^\d{1,4}$/.test(v)) return null;
  return String(parseInt(v, 10));
}

export function classifyUserAgent(ua: string): UserAgent {
  let browser = "Other";
  let browserVersion: string | null = null;
  for (const [name, re] of BROWSERS) {
    const m = re.exec(ua);
    if (m) {
      browser = name;
      browserVersion = major(firstGroup(m));
      break;
    }
  }
  let os = "Other";
  let osVersion: string | null = null;
  for (const [name, re] of OSES) {
    const m = re.exec(ua);
    if (m) {
      os = name;
      const raw = firstGroup(m);
      osVersion = name === "Windows" ? WINDOWS[raw ?? ""] ?? null : major(raw);
      break;
    }
  }
  let device = "other";
  for (const [name, re] of DEVICES) {
    if (re.test(ua)) {
      device = name;
      break;
    }
  }
  return { device_class: device, browser, browser_version: browserVersion, os, os_version: osVersion };
}

function host(url: string): string {
  try {
    return new URL(url.trim()).hostname.toLowerCase().replace(/\.$/, "");
  } catch {
    return "";
  }
}

function queryParam(url: string, key: string): string {
  try {
    return (new URL(url).searchParams.get(key) ?? "").trim();
  } catch {
    return "";
  }
}

/** The referrer source label (rules in docs/ingest-protocol.md and enrich.py). */
export function referrerSource(referrer: string | null, pageUrl: string | null): string {
  const page = pageUrl ?? "";
  if (page) {
    for (const key of ["utm_source", "ref", "source"]) {
      const value = queryParam(page, key);
      if (value) return [...value].slice(0, LABEL_MAX).join("");
    }
  }
  const ref = (referrer ?? "").trim();
  if (!/^https?:\/\//i.test(ref)) return "Direct";
  const h = host(ref);
  if (!h) return "Direct";
  if (page && h === host(page)) return "Internal";
  const labels = h.split(".");
  for (let i = 0; i < labels.length - 1; i++) {
    const label = REF_HOSTS[labels.slice(i).join(".")];
    if (label) return label;
  }
  const bare = h.startsWith("www.") ? h.slice(4) : h;
  for (const [prefix, label] of Object.entries(REF_PREFIXES)) if (bare.startsWith(prefix)) return label;
  return [...bare].slice(0, LABEL_MAX).join("");
}

export function saltDay(nowMs: number): string {
  return new Date(Math.floor(nowMs / 86400000) * 86400000).toISOString().slice(0, 10);
}

async function sha256Hex(text: string, hexDigits: number): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  let hex = "";
  for (let i = 0; i < hexDigits / 2; i++) hex += digest[i].toString(16).padStart(2, "0");
  return hex;
}

export function visitorHash(salt: string, site: string, ip: string, ua: string): Promise<string> {
  return sha256Hex([salt, site, ip, ua].join("|"), 32);
}

export function sessionId(visitor: string, sessionStart: number): Promise<string> {
  return sha256Hex(`${visitor}|${sessionStart}`, 16);
}

export interface VisitorState {
  s: number; // session start (ms)
  l: number; // last seen (ms)
  v: string[]; // content ids viewed today
}

export interface Uniqueness {
  session_id: string;
  unique_view: boolean;
  new_visitor: boolean;
  new_session: boolean;
}

/** Apply one event to the visitor's state (the rules of enrich.decide). */
export async function decide(
  state: VisitorState | null,
  visitor: string,
  type: string,
  contentId: string,
  nowMs: number,
): Promise<[VisitorState, Uniqueness]> {
  let newVisitor = false;
  let newSession = false;
  if (state === null) {
    state = { s: nowMs, l: nowMs, v: [] };
    newVisitor = newSession = true;
  } else if (nowMs - state.l > SESSION_TIMEOUT_MS) {
    state.s = nowMs;
    newSession = true;
  }
  state.l = Math.max(state.l, nowMs);
  let uniqueView = false;
  if (type === "view" && !state.v.includes(contentId)) {
    uniqueView = true;
    state.v.push(contentId);
    if (state.v.length > MAX_VIEWED) state.v.splice(0, state.v.length - MAX_VIEWED);
  }
  return [state, { session_id: await sessionId(visitor, state.s), unique_view: uniqueView, new_visitor: newVisitor, new_session: newSession }];
}

/** A well-formed consent-mode session id: what the tracker makes (128 random bits, hex). */
export function isBrowserSession(value: unknown): value is string {
  return typeof value === "string" && BROWSER_SESSION.test(value);
}

/** Where a consent-mode session's state is filed; the browser's id itself is never stored. */
export function sessionKey(site: string, browserSession: string): Promise<string> {
  return sha256Hex(`${site}|${browserSession}`, 32);
}

export interface SessionState {
  s: number; // session start (ms)
  l: number; // last event (ms)
}

/** Apply one consent-mode event to its browser session (the rules of enrich.decide_session). */
export async function decideSession(state: SessionState | null, key: string, nowMs: number): Promise<[SessionState, string, boolean]> {
  let newSession = false;
  if (state === null) {
    state = { s: nowMs, l: nowMs };
    newSession = true;
  } else if (nowMs - state.l > SESSION_TIMEOUT_MS) {
    state.s = nowMs;
    newSession = true;
  }
  state.l = Math.max(state.l, nowMs);
  return [state, await sessionId(key, state.s), newSession];
}
