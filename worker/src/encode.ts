// Event -> AE data point, generically from layout.json (docs/ingest-protocol.md, "Encoding").
import { LAYOUT, typePlan, type Normalized, type TypePlan, type Value } from "./validate";

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

function blobText(value: Value | undefined): string {
  if (value === undefined || value === null) return "";
  if (typeof value === "boolean") return value ? "True" : "False";
  return String(value);
}

const enum DoubleKind {
  Absent,
  Const,
  Bool,
  Number,
}

/** Where each column of a type's data point comes from: a slot of its TypePlan, or -1. */
interface Plan {
  dataset: string;
  blobNames: (string | null)[];
  doubleNames: string[];
  doubleKinds: DoubleKind[];
  /** Starting columns for encodeValues: "" and 0, the layout version in its const column. */
  blobTemplate: string[];
  doubleTemplate: number[];
  /** The columns filled from slots: [column, slot] (doubles: [column, slot, kind]). */
  liveBlobs: [number, number][];
  liveDoubles: [number, number, DoubleKind][];
  /** Index parts: a slot number for a field (-1: not a field of the type), or a literal word. */
  index: (number | string)[];
  indexNames: (string | null)[];
}

const PLANS = new Map<string, Plan>();

function plan(type: string): Plan {
  let p = PLANS.get(type);
  if (!p) {
    const spec = LAYOUT.types[type];
    const family = LAYOUT.families[spec.family];
    const tp = typePlan(type) as TypePlan;
    const slot = (name: string) => tp.slots.get(name) ?? -1;
    const kindOf = (name: string): DoubleKind => {
      const kind = spec.doubles[name];
      return kind === undefined ? DoubleKind.Absent : kind === "const" ? DoubleKind.Const : kind === "bool" ? DoubleKind.Bool : DoubleKind.Number;
    };
    const blobSlots = family.blobs.map(slot);
    const doubleSlots = family.doubles.map(slot);
    const doubleKinds = family.doubles.map(kindOf);
    p = {
      dataset: family.dataset,
      blobTemplate: family.blobs.map(() => ""),
      doubleTemplate: unboxed(doubleKinds.map((kind) => doubleOf(kind, undefined))),
      liveBlobs: blobSlots.flatMap((s, column): [number, number][] => (s < 0 ? [] : [[column, s]])),
      liveDoubles: doubleSlots.flatMap((s, column): [number, number, DoubleKind][] =>
        s < 0 || doubleKinds[column] === DoubleKind.Absent || doubleKinds[column] === DoubleKind.Const ? [] : [[column, s, doubleKinds[column]]],
      ),
      blobNames: family.blobs.map((name) => (tp.slots.has(name) ? name : null)),
      doubleNames: family.doubles,
      doubleKinds,
      index: spec.index.map((part) => ("field" in part ? slot(part.field) : part.literal)),
      indexNames: spec.index.map((part) => ("field" in part ? part.field : null)),
    };
    PLANS.set(type, p);
  }
  return p;
}

/**
 * The same numbers in an array V8 stores as unboxed doubles (holding a fraction once sets
 * that elements kind for good, and copies keep it): writing a timestamp or 1.5 into a copy
 * then converts nothing, where a copy of an all-integer array would be converted each time.
 */
function unboxed(numbers: number[]): number[] {
  const out = numbers.slice();
  out.push(0.5);
  out.pop();
  return out;
}

function doubleOf(kind: DoubleKind, value: Value | undefined): number {
  if (kind === DoubleKind.Absent) return 0;
  if (kind === DoubleKind.Const) return LAYOUT.version;
  if (kind === DoubleKind.Bool) return value ? 1 : 0;
  return Number(value ?? 0);
}

/** The checks every point passes before writeDataPoint (which throws past AE's limits). */
function finish(type: string, dataset: string, index1: string, blobs: string[], units: number, doubles: number[]): Point | Promise<Point> {
  // UTF-8 takes at most 3 bytes per UTF-16 unit: count bytes only when that bound is over.
  if (units * 3 > LAYOUT.limits.blob_bytes) {
    let bytes = 0;
    for (const text of blobs) bytes += utf8Length(text);
    if (bytes > LAYOUT.limits.blob_bytes) {
      throw new LimitError("event", "blob_bytes", `${type}: blobs total ${bytes} bytes, over AE's ${LAYOUT.limits.blob_bytes}-byte limit`);
    }
  }
  if (index1.length * 3 <= LAYOUT.limits.index_bytes || utf8Length(index1) <= LAYOUT.limits.index_bytes) return { dataset, index1, blobs, doubles };
  return hashedIndex(index1).then((hashed) => ({ dataset, index1: hashed, blobs, doubles }));
}

/**
 * Encode a normalised event (validateEvent's output) into its data point. Synchronous
 * unless index1 is over 96 bytes and needs its SHA-256 suffix.
 */
export function encodeEvent(event: Normalized): Point | Promise<Point> {
  const type = event.type as string;
  const p = plan(type);
  const blobs: string[] = [];
  let units = 0;
  for (const name of p.blobNames) {
    const text = name === null ? "" : blobText(event[name]);
    units += text.length;
    blobs.push(text);
  }
  const doubles: number[] = [];
  for (let i = 0; i < p.doubleNames.length; i++) doubles.push(doubleOf(p.doubleKinds[i], event[p.doubleNames[i]]));
  const index1 = p.indexNames.map((name, i) => (name === null ? (p.index[i] as string) : blobText(event[name]))).join(" ");
  return finish(type, p.dataset, index1, blobs, units, doubles);
}

/**
 * Encode validated slot values (validateInto's output for `tp`, event_id and timestamp
 * filled in) into the same data point encodeEvent gives, without building the event object.
 */
export function encodeValues(tp: TypePlan, values: Value[]): Point | Promise<Point> {
  const p = plan(tp.kind);
  // Copies of the templates, overwritten in place: packed arrays of the right size at once.
  const blobs = p.blobTemplate.slice();
  let units = 0;
  for (const [column, slot] of p.liveBlobs) {
    const value = values[slot];
    const text = typeof value === "string" ? value : blobText(value);
    units += text.length;
    blobs[column] = text;
  }
  const doubles = p.doubleTemplate.slice();
  const { liveDoubles } = p;
  for (let i = 0; i < liveDoubles.length; i++) {
    const [column, slot, kind] = liveDoubles[i];
    doubles[column] = doubleOf(kind, values[slot]);
  }
  // Most types index one field: no array to join.
  const { index } = p;
  let index1 = "";
  for (let i = 0; i < index.length; i++) {
    const part = index[i];
    const text = typeof part === "string" ? part : part < 0 ? "" : blobText(values[part]);
    index1 = i === 0 ? text : index1 + " " + text;
  }
  return finish(tp.kind, p.dataset, index1, blobs, units, doubles);
}
