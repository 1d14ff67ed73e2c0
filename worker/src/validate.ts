// Event validation from the JSON Schema that pydantic exports into layout.json, with the
// same lax coercions pydantic applies to JSON input, so that the Worker and the Python
// collector accept, normalise and reject exactly the same events (tests/vectors proves it).
import layout from "./layout.json";
import { findPii, piiMessage, stripFor } from "./pii";

export interface FieldError {
  field: string;
  rule: string;
  message: string;
}

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Schema = { [key: string]: any };

export interface Layout {
  version: number;
  limits: { blobs: number; doubles: number; index_bytes: number; blob_bytes: number; points_per_invocation: number };
  families: Record<string, { dataset: string; blobs: string[]; doubles: string[] }>;
  types: Record<string, { family: string; index: ({ field: string } | { literal: string })[]; doubles: Record<string, string>; schema: Schema }>;
  currencies: string[];
}

export const LAYOUT = layout as unknown as Layout;
const CURRENCIES = new Set(LAYOUT.currencies);
const PATTERNS = new Map<string, RegExp>();

function regex(pattern: string): RegExp {
  let re = PATTERNS.get(pattern);
  if (!re) {
    // The "u" flag only where the pattern needs it: it makes V8's matcher slower.
    re = new RegExp(pattern, /[^\x00-\x7f]/.test(pattern) ? "u" : "");
    PATTERNS.set(pattern, re);
  }
  return re;
}

/** A normalised event: coerced values, defaults applied, `timestamp` as epoch milliseconds. */
export type Normalized = Record<string, string | number | boolean | null>;

const TRUE_WORDS = new Set(["1", "on", "t", "true", "y", "yes"]);
const FALSE_WORDS = new Set(["0", "off", "f", "false", "n", "no"]);
const INT_TEXT = /^[+-]?\d+(?:\.0+)?$/;
const FLOAT_TEXT = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$|^[+-]?(?:inf|infinity)$/i;
const DATETIME_TEXT =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt _](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?([Zz]|[+-]\d{2}(?::?\d{2})?)?)?$/;

class Invalid {
  constructor(readonly rule: string, readonly message: string) {}
}

function resolve(schema: Schema, root: Schema): Schema {
  if (schema.$ref) return root.$defs[schema.$ref.split("/").pop()];
  return schema;
}

const NUMERIC_TEXT = /^[+-]?(?:\d+\.?\d*|\.\d+)$/;
const MIN_MS = -62135596800000; // 0001-01-01
const MAX_MS = 253402300800000; // 10000-01-01

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function digits(s: string, from: number, count: number): number {
  let n = 0;
  for (let i = from; i < from + count; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    n = n * 10 + c;
  }
  return n;
}

/**
 * The common shape, `YYYY-MM-DDTHH:MM:SS[.fff...]` + `Z` or `+00:00`, as the exporter sends it,
 * parsed without a regex; -1 when the text is anything else (the general parser decides).
 */
function fastUtc(s: string): number {
  const n = s.length;
  if (n < 20 || s.charCodeAt(4) !== 45 || s.charCodeAt(7) !== 45 || s.charCodeAt(10) !== 84 || s.charCodeAt(13) !== 58 || s.charCodeAt(16) !== 58) return -1;
  let end = n;
  if (s.charCodeAt(n - 1) === 90) end = n - 1;
  else if (s.endsWith("+00:00")) end = n - 6;
  else return -1;
  const y = digits(s, 0, 4);
  const mo = digits(s, 5, 2);
  const d = digits(s, 8, 2);
  const h = digits(s, 11, 2);
  const mi = digits(s, 14, 2);
  const sec = digits(s, 17, 2);
  if (y < 1 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 59) return -1;
  const leap = y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
  if (d > (mo === 2 && leap ? 29 : DAYS_IN_MONTH[mo - 1])) return -1;
  let ms = 0;
  if (end > 19) {
    if (s.charCodeAt(19) !== 46 || end === 20) return -1;
    const frac = digits(s, 20, Math.min(3, end - 20));
    if (frac < 0 || (end > 23 && digits(s, 23, end - 23) < 0)) return -1;
    ms = end - 20 >= 3 ? frac : frac * (end - 20 === 1 ? 100 : 10);
  }
  if (y < 100) return -1; // keep years 0-99 on the general path, as before
  return daysFromCivil(y, mo, d) * 86400000 + ((h * 60 + mi) * 60 + sec) * 1000 + ms;
}

/** Days from 1970-01-01 to a proleptic Gregorian date (Hinnant's algorithm): Date.UTC's
 * answer for a valid date, in integer arithmetic, cheaper than the builtin call. */
function daysFromCivil(y: number, m: number, d: number): number {
  const year = m <= 2 ? y - 1 : y;
  const era = Math.floor(year / 400);
  const yoe = year - era * 400;
  const doy = Math.floor((153 * (m > 2 ? m - 3 : m + 9) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function parseDatetime(value: Json): number | Invalid {
  if (typeof value === "string") {
    const fast = fastUtc(value);
    if (fast !== -1) return fast;
  }
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return new Invalid("datetime_type", "Input should be a valid datetime");
    // pydantic reads a number as Unix seconds, or milliseconds past 2e10.
    const ms = Math.floor(Math.abs(value) > 2e10 ? value : value * 1000);
    // Python's datetime spans the years 1 to 9999.
    if (ms < MIN_MS || ms >= MAX_MS) return new Invalid("datetime_parsing", "Input should be a valid datetime, dates after 9999 are not supported as unix timestamps");
    return ms;
  }
  if (typeof value !== "string") return new Invalid("datetime_type", "Input should be a valid datetime");
  const bad = new Invalid("datetime_from_date_parsing", "Input should be a valid datetime or date");
  if (NUMERIC_TEXT.test(value)) {
    // A number in a string is a Unix time too.
    const n = Number(value);
    const ms = Math.floor(Math.abs(n) > 2e10 ? n : n * 1000);
    return ms < MIN_MS || ms >= MAX_MS ? bad : ms;
  }
  const m = DATETIME_TEXT.exec(value);
  if (!m) return bad;
  const [, y, mo, d, h, mi, s, frac, zone] = m;
  const hour = +(h ?? 0);
  const minute = +(mi ?? 0);
  const second = +(s ?? 0);
  if (+y < 1) return new Invalid("datetime_parsing", "Input should be a valid datetime");
  if (+mo < 1 || +mo > 12 || +d < 1 || hour > 23 || minute > 59 || second > 59) return bad;
  const day = new Date(Date.UTC(2000, +mo - 1, +d));
  day.setUTCFullYear(+y);
  if (day.getUTCDate() !== +d) return bad; // e.g. February 30
  if (zone === undefined) return new Invalid("value_error", "Value error, must carry a time zone (naive datetimes are ambiguous)");
  const fracMs = frac ? Number((frac + "00").slice(0, 3)) : 0;
  let ms = day.getTime() + ((hour * 60 + minute) * 60 + second) * 1000 + fracMs;
  if (zone !== "Z" && zone !== "z") {
    const sign = zone[0] === "-" ? -1 : 1;
    const digits = zone.slice(1).replace(":", "");
    const offsetHours = +digits.slice(0, 2);
    const offsetMinutes = +(digits.slice(2, 4) || "0");
    if (offsetHours > 23 || offsetMinutes > 59) return bad;
    ms -= sign * (offsetHours * 60 + offsetMinutes) * 60000;
  }
  return ms;
}

/** Code points in a string (what pydantic's length limits count), without allocating. */
function codePoints(value: string): number {
  let n = value.length;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) n--;
  }
  return n;
}

type Check = (value: Json) => Json | Invalid;

const MEMO_SIZE = 512;
const MEMO_MAX_LENGTH = 256;

/**
 * A string check with its answers remembered: the PII guard's scans are the costliest
 * checks, and ids, labels and referrers repeat across the events of a batch. Sound
 * because a check is a pure function of the value. Bounded in entries and in the length
 * of the values kept, so the memory it holds across requests stays small whatever is sent.
 */
function memoized(check: Check): Check {
  const seen = new Map<string, Json | Invalid>();
  return (value) => {
    if (typeof value !== "string" || value.length > MEMO_MAX_LENGTH) return check(value);
    let result = seen.get(value);
    if (result === undefined) {
      result = check(value);
      if (seen.size >= MEMO_SIZE) seen.clear();
      seen.set(value, result);
    }
    return result;
  };
}

// Each schema is compiled once into a closure: the per-event path does no schema lookups.
function compile(schema: Schema, root: Schema): Check {
  if (schema.anyOf) {
    // pydantic's Optional[X]: null passes, anything else is checked against X.
    const inner = compile(resolve((schema.anyOf as Schema[]).filter((b) => b.type !== "null")[0], root), root);
    return (value) => (value === null ? null : inner(value));
  }
  schema = resolve(schema, root);
  if (schema.enum) {
    const allowed = new Set<string>(schema.enum);
    const message = `Input should be ${schema.enum.map((v: string) => `'${v}'`).join(", ")}`;
    return (value) => (typeof value === "string" && allowed.has(value) ? value : new Invalid("enum", message));
  }
  const { minimum, maximum } = schema;
  const bounds = (n: number): number | Invalid => {
    if (minimum !== undefined && !(n >= minimum)) return new Invalid("greater_than_equal", `Input should be greater than or equal to ${minimum}`);
    if (maximum !== undefined && !(n <= maximum)) return new Invalid("less_than_equal", `Input should be less than or equal to ${maximum}`);
    return n;
  };
  switch (schema.type) {
    case "string": {
      if (schema.format === "date-time") return parseDatetime;
      const { minLength, maxLength } = schema;
      const pattern = schema.pattern !== undefined ? regex(schema.pattern) : null;
      // The PII guard (pii.ts): strip modes run before the checks, "reject" after them.
      const pii: string | undefined = schema["x-pii"];
      const strip = pii !== undefined && pii !== "reject" ? pii : undefined;
      const check: Check = (value) => {
        if (typeof value !== "string") return new Invalid("string_type", "Input should be a valid string");
        if (strip !== undefined) value = stripFor(strip, value);
        // A string has between length/2 and length code points: count them only when the
        // UTF-16 length alone cannot settle the limits.
        if ((maxLength !== undefined && value.length > maxLength) || (minLength !== undefined && value.length < 2 * minLength)) {
          const length = codePoints(value);
          if (minLength !== undefined && length < minLength) {
            return new Invalid("string_too_short", `String should have at least ${minLength} character${minLength === 1 ? "" : "s"}`);
          }
          if (maxLength !== undefined && length > maxLength) return new Invalid("string_too_long", `String should have at most ${maxLength} characters`);
        }
        if (pattern !== null && !pattern.test(value)) return new Invalid("string_pattern_mismatch", `String should match pattern '${schema.pattern}'`);
        if (pii === "reject") {
          const rule = findPii(value);
          if (rule !== null) return new Invalid(rule, piiMessage(rule));
        }
        return value;
      };
      return pii === undefined ? check : memoized(check);
    }
    case "integer":
      return (value) => {
        if (typeof value === "number") {
          if (!Number.isInteger(value)) return new Invalid("int_from_float", "Input should be a valid integer, got a number with a fractional part");
          // pydantic converts a float to a 64-bit integer first.
          if (value >= 2 ** 63 || value < -(2 ** 63)) return new Invalid("int_parsing_size", "Unable to parse input string as an integer, exceeded maximum size");
          return bounds(value);
        }
        if (typeof value === "boolean") return bounds(value ? 1 : 0);
        if (typeof value === "string") {
          const text = value.trim();
          if (!INT_TEXT.test(text)) return new Invalid("int_parsing", "Input should be a valid integer, unable to parse string as an integer");
          return bounds(Math.trunc(Number(text)));
        }
        return new Invalid("int_type", "Input should be a valid integer");
      };
    case "number":
      return (value) => {
        if (typeof value === "number") return bounds(value);
        if (typeof value === "boolean") return bounds(value ? 1 : 0);
        if (typeof value === "string") {
          const text = value.trim();
          if (!FLOAT_TEXT.test(text)) return new Invalid("float_parsing", "Input should be a valid number, unable to parse string as a number");
          return bounds(/inf/i.test(text) ? (text.startsWith("-") ? -Infinity : Infinity) : Number(text));
        }
        return new Invalid("float_type", "Input should be a valid number");
      };
    case "boolean":
      return (value) => {
        if (typeof value === "boolean") return value;
        if (typeof value === "number") {
          if (value === 0 || value === 1) return value === 1;
          return Number.isInteger(value) && value < 2 ** 63 && value >= -(2 ** 63)
            ? new Invalid("bool_parsing", "Input should be a valid boolean, unable to interpret input")
            : new Invalid("bool_type", "Input should be a valid boolean");
        }
        if (typeof value === "string") {
          const word = value.toLowerCase();
          if (TRUE_WORDS.has(word)) return true;
          if (FALSE_WORDS.has(word)) return false;
          return new Invalid("bool_parsing", "Input should be a valid boolean, unable to interpret input");
        }
        return new Invalid("bool_type", "Input should be a valid boolean");
      };
  }
  if (schema.const !== undefined) {
    const expected = schema.const;
    return (value) => (value === expected ? value : new Invalid("literal_error", `Input should be '${expected}'`));
  }
  return (value) => value;
}

interface FieldPlan {
  name: string;
  required: boolean;
  fallback: Value;
  check: Check;
  /** ISO 4217 membership: a rule the schema cannot say. */
  currency: boolean;
}

/** One field's normalised value. */
export type Value = Normalized[string];

/**
 * A type's compiled plan. Fields are numbered ("slots") in schema order: validation writes
 * each value into an array at its slot, so the hot path makes no per-event objects.
 */
export interface TypePlan {
  kind: string;
  fields: FieldPlan[];
  slots: Map<string, number>;
  required: number;
  /** Every slot's default: copying it gives an event's starting values. */
  defaults: Value[];
  eventIdSlot: number;
  timestampSlot: number;
  /** The last valid event's keys in order and their slots: see validateInto. */
  lastKeys: string[];
  lastSlots: number[];
}

const PLANS = new Map<string, TypePlan>();

/** The plan for an event type, or undefined when `kind` is not one. */
export function typePlan(kind: unknown): TypePlan | undefined {
  if (typeof kind !== "string") return undefined;
  let p = PLANS.get(kind);
  if (p === undefined) {
    if (!Object.hasOwn(LAYOUT.types, kind)) return undefined;
    const schema = LAYOUT.types[kind].schema;
    const required = new Set<string>(schema.required ?? []);
    const fields = Object.entries(schema.properties as Record<string, Schema>).map(([name, prop]) => ({
      name,
      required: required.has(name),
      fallback: (prop.default ?? null) as Value,
      check: compile(prop, schema),
      currency: name === "currency",
    }));
    const slots = new Map(fields.map((f, i) => [f.name, i]));
    const eventIdSlot = slots.get("event_id");
    const timestampSlot = slots.get("timestamp");
    // Both get defaults at receive time (docs/ingest-protocol.md): every type declares them.
    if (eventIdSlot === undefined || timestampSlot === undefined) throw new Error(`layout.json: type ${kind} lacks event_id or timestamp`);
    p = { kind, fields, slots, required: required.size, defaults: fields.map((f) => f.fallback), eventIdSlot, timestampSlot, lastKeys: [], lastSlots: [] };
    PLANS.set(kind, p);
  }
  return p;
}

export type Validation = { ok: true; event: Normalized } | { ok: false; errors: FieldError[] };

export function randomHex32(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

const NOT_OBJECT: FieldError[] = [{ field: "event", rule: "type", message: "must be a JSON object" }];

/** The errors of an input that is not an event object of a known type, else null. */
export function shapeErrors(input: unknown): FieldError[] | null {
  if (input === null || typeof input !== "object" || Array.isArray(input)) return NOT_OBJECT.map((e) => ({ ...e }));
  const kind = (input as Record<string, unknown>).type;
  if (typePlan(kind) !== undefined) return null;
  const known = Object.keys(LAYOUT.types).sort().join(", ");
  return [{ field: "type", rule: "enum", message: `unknown event type ${JSON.stringify(kind)}; expected one of ${known}` }];
}

/**
 * Check an event object of `plan`'s type field by field, writing each normalised value into
 * `values` at its slot (`values` starts as `plan.defaults`). Returns the errors, or null.
 * An absent event_id gets a fresh random id, an absent timestamp the receive time `nowMs`.
 */
export function validateInto(plan: TypePlan, data: Record<string, Json>, values: Value[], nowMs: number): FieldError[] | null {
  let source = data;
  if (plan.kind === "api_call" && "duration_ms" in source) {
    // One request: min = max = duration (the rule the schema cannot say).
    source = { ...data };
    for (const bound of ["duration_min_ms", "duration_max_ms"]) {
      if (source[bound] === undefined || source[bound] === null) source[bound] = source.duration_ms;
    }
  }
  const { fields, slots } = plan;
  let errors: FieldError[] | null = null;
  let requiredSeen = 0;
  let hasEventId = false;
  let hasTimestamp = false;
  // Senders repeat one key order per type: the key at each position is first compared with
  // the previous event's key there (one comparison of interned strings), and the map is
  // asked only once the order differs.
  const { lastKeys, lastSlots } = plan;
  let position = 0;
  let same = true;
  // The event's own key order (for-in over a JSON object takes V8's fast path; looking up
  // every field name one by one does not), so errors come in the sender's order.
  for (const key in source) {
    let slot: number | undefined;
    if (same && position < lastKeys.length && lastKeys[position] === key) slot = lastSlots[position];
    else {
      same = false;
      slot = slots.get(key);
    }
    position++;
    if (slot === undefined || slot < 0) {
      (errors ??= []).push({ field: key, rule: "extra_forbidden", message: "Extra inputs are not permitted" });
      continue;
    }
    const field = fields[slot];
    if (field.required) requiredSeen++;
    if (slot === plan.eventIdSlot) hasEventId = true;
    else if (slot === plan.timestampSlot) hasTimestamp = true;
    const result = field.check(source[key]);
    if (result instanceof Invalid) {
      (errors ??= []).push({ field: key, rule: result.rule, message: result.message });
    } else if (field.currency && typeof result === "string" && !CURRENCIES.has(result)) {
      (errors ??= []).push({ field: key, rule: "value_error", message: `Value error, '${result}' is not an ISO 4217 currency code` });
    } else {
      values[slot] = result as Value;
    }
  }
  if (requiredSeen < plan.required) {
    for (const field of fields) {
      if (field.required && !Object.hasOwn(source, field.name)) (errors ??= []).push({ field: field.name, rule: "missing", message: "Field required" });
    }
  }
  if (errors !== null) return errors;
  if (!same || position !== lastKeys.length) {
    // Only a valid event's order is kept: its keys are all field names, never a sender's
    // arbitrary (and arbitrarily long) extra keys.
    plan.lastKeys = Object.keys(source);
    plan.lastSlots = plan.lastKeys.map((key) => slots.get(key) ?? -1);
  }
  if (!hasEventId) values[plan.eventIdSlot] = randomHex32();
  if (!hasTimestamp) values[plan.timestampSlot] = nowMs;
  return null;
}

/**
 * Validate one decoded JSON event against its type's schema; on success, the normalised
 * event (defaults filled in, values coerced, timestamp in epoch ms truncated to the ms).
 */
export function validateEvent(input: unknown, nowMs: number): Validation {
  const bad = shapeErrors(input);
  if (bad !== null) return { ok: false, errors: bad };
  const data = input as Record<string, Json>;
  const plan = typePlan(data.type) as TypePlan;
  const values = plan.defaults.slice();
  const errors = validateInto(plan, data, values, nowMs);
  if (errors !== null) return { ok: false, errors };
  const event: Normalized = {};
  for (let i = 0; i < values.length; i++) event[plan.fields[i].name] = values[i];
  return { ok: true, event };
}
