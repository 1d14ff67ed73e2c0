// Event -> AE data point, generically from layout.json (docs/ingest-protocol.md, "Encoding").
import { LAYOUT, type Normalized } from "./validate";

export interface Point {
  dataset: string;
  index1: string;
  blobs: string[];
  doubles: number[];
}

export class LimitError extends Error {
  constructor(readonly field: string, readonly rule: string, message: string) {
    super(message);
  }
}

const encoder = new TextEncoder();

/** UTF-8 byte length, computed in JS: no encoder call per blob on the hot path. */
export function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

async function hashedIndex(value: string): Promise<string> {
  const raw = encoder.encode(value);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", raw));
  let hex = "";
  for (let i = 0; i < 4; i++) hex += digest[i].toString(16).padStart(2, "0");
  // Cut back to a character boundary: drop trailing continuation bytes of a split character.
  let end = LAYOUT.limits.index_bytes - 9;
  while (end > 0 && (raw[end] & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(raw.subarray(0, end)) + "~" + hex;
}

function blobText(value: Normalized[string] | undefined): string {
  if (value === undefined || value === null) return "";
  if (typeof value === "boolean") return value ? "True" : "False";
  return String(value);
}

interface Plan {
  dataset: string;
  blobs: (string | null)[];
  doubles: [string, string | undefined][];
  index: ({ field: string } | { literal: string })[];
}

const PLANS = new Map<string, Plan>();

function plan(type: string): Plan {
  let p = PLANS.get(type);
  if (!p) {
    const spec = LAYOUT.types[type];
    const family = LAYOUT.families[spec.family];
    const props = spec.schema.properties;
    p = {
      dataset: family.dataset,
      blobs: family.blobs.map((name) => (Object.hasOwn(props, name) ? name : null)),
      doubles: family.doubles.map((name) => [name, spec.doubles[name]]),
      index: spec.index,
    };
    PLANS.set(type, p);
  }
  return p;
}

/**
 * Encode a normalised event (validateEvent's output) into its data point. Synchronous
 * unless index1 is over 96 bytes and needs its SHA-256 suffix.
 */
export function encodeEvent(event: Normalized): Point | Promise<Point> {
  const p = plan(event.type as string);
  const blobs: string[] = [];
  let bytes = 0;
  for (const name of p.blobs) {
    const text = name === null ? "" : blobText(event[name]);
    bytes += utf8Length(text);
    blobs.push(text);
  }
  if (bytes > LAYOUT.limits.blob_bytes) {
    throw new LimitError("event", "blob_bytes", `${event.type}: blobs total ${bytes} bytes, over AE's ${LAYOUT.limits.blob_bytes}-byte limit`);
  }
  const doubles: number[] = [];
  for (const [name, kind] of p.doubles) {
    if (kind === undefined) doubles.push(0);
    else if (kind === "const") doubles.push(LAYOUT.version);
    else if (kind === "bool") doubles.push(event[name] ? 1 : 0);
    else doubles.push(Number(event[name] ?? 0));
  }
  const index1 = p.index.map((part) => ("field" in part ? blobText(event[part.field]) : part.literal)).join(" ");
  if (utf8Length(index1) <= LAYOUT.limits.index_bytes) return { dataset: p.dataset, index1, blobs, doubles };
  return hashedIndex(index1).then((hashed) => ({ dataset: p.dataset, index1: hashed, blobs, doubles }));
}
