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

async function indexValue(parts: string[]): Promise<string> {
  const value = parts.join(" ");
  const raw = encoder.encode(value);
  const max = LAYOUT.limits.index_bytes;
  if (raw.length <= max) return value;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", raw));
  let hex = "";
  for (let i = 0; i < 4; i++) hex += digest[i].toString(16).padStart(2, "0");
  // Cut back to a character boundary: drop trailing continuation bytes of a split character.
  let end = max - 9;
  while (end > 0 && (raw[end] & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(raw.subarray(0, end)) + "~" + hex;
}

function blobText(value: Normalized[string] | undefined): string {
  if (value === undefined || value === null) return "";
  if (typeof value === "boolean") return value ? "True" : "False";
  return String(value);
}

/** Encode a normalised event (validateEvent's output) into its data point. */
export async function encodeEvent(event: Normalized): Promise<Point> {
  const spec = LAYOUT.types[event.type as string];
  const family = LAYOUT.families[spec.family];
  const blobs: string[] = [];
  let bytes = 0;
  for (const name of family.blobs) {
    const text = Object.hasOwn(spec.schema.properties, name) ? blobText(event[name]) : "";
    bytes += encoder.encode(text).length;
    blobs.push(text);
  }
  if (bytes > LAYOUT.limits.blob_bytes) {
    throw new LimitError("event", "blob_bytes", `${event.type}: blobs total ${bytes} bytes, over AE's ${LAYOUT.limits.blob_bytes}-byte limit`);
  }
  const doubles: number[] = [];
  for (const name of family.doubles) {
    const kind = spec.doubles[name];
    if (kind === undefined) doubles.push(0);
    else if (kind === "const") doubles.push(LAYOUT.version);
    else if (kind === "bool") doubles.push(event[name] ? 1 : 0);
    else doubles.push(Number(event[name] ?? 0));
  }
  const parts = spec.index.map((part) => ("field" in part ? blobText(event[part.field]) : part.literal));
  return { dataset: family.dataset, index1: await indexValue(parts), blobs, doubles };
}
