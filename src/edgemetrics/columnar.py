"""Batch-level columnar validation and encoding: the collector's fast path.

Building a pydantic model per event and encoding it costs tens of microseconds; a batch
of 250 events of one type mostly repeats the same few values per field. So the fast path
works column by column: for each field it checks the *distinct* values once against the
rule the event's JSON Schema states (``types[T].schema`` in layout.json: type, enum,
const, pattern, min/max length, minimum/maximum, nullability, no extra fields), parses
timestamps, and writes AE columns straight from the raw values.

It only ever accepts a subset of what the models accept and produces the same values:
any event it is not sure about (a value of another JSON type that pydantic might coerce,
an unknown format, any broken rule) goes to the slow path, :func:`edgemetrics.events.parse_event`
plus :func:`edgemetrics.layout.encode`, which accepts or rejects it with pydantic's exact
error. ``tests/test_columnar.py`` checks both paths give identical data points.

>>> cols, rejected = encode_batch([{"type": "view", "content_id": "v1", "creator_id": "c1"},
...                                {"type": "view", "content_id": "bad id"}])
>>> cols.count, rejected[0]["index"], rejected[0]["errors"][0]["field"]
(1, 1, 'content_id')
>>> cols.tables["edgemetrics_content"]["index1"]
['c1']
"""

from __future__ import annotations

import enum
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edgemetrics import pii
from edgemetrics.currencies import ISO_4217
from edgemetrics.events import EVENT_TYPES, InvalidEvent, new_event_id, parse_event
from edgemetrics.layout import (
    _CODECS,
    LAYOUT_VERSION,
    MAX_BLOB_BYTES,
    MAX_BLOBS,
    MAX_DOUBLES,
    DataPoint,
    LayoutLimitError,
    encode,
    index_value,
)

Check = Callable[[Any], bool]
_MISSING: Any = object()
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6})?(Z|[+-]\d{2}:\d{2})")
_KNOWN_KEYWORDS = {
    "type",
    "title",
    "default",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "anyOf",
    "$ref",
    "const",
    "enum",
    "format",
    "description",
}
BLOB_COLUMNS = tuple(f"blob{i}" for i in range(1, MAX_BLOBS + 1))
DOUBLE_COLUMNS = tuple(f"double{i}" for i in range(1, MAX_DOUBLES + 1))


# The PII guard (edgemetrics.pii): a value it would refuse or change goes to the slow path,
# which refuses it with the rule's name or stores the stripped value.
_PII_UNCHANGED: dict[str, Check] = {
    "reject": lambda v: pii.find(v) is None,
    "route": lambda v: pii.strip_route(v) == v,
    "fingerprint": lambda v: pii.strip_fingerprint(v) == v,
    "referrer": lambda v: pii.referrer_source(v) == v,
}


def _one_check(schema: Mapping[str, Any]) -> Check:
    if "x-pii" in schema:
        base = _one_check({k: v for k, v in schema.items() if k != "x-pii"})
        clean = _PII_UNCHANGED[schema["x-pii"]]
        return lambda v: base(v) and clean(v)
    unknown = set(schema) - _KNOWN_KEYWORDS
    if unknown:  # a rule this path cannot check: fail loudly at import, never diverge
        raise AssertionError(f"columnar fast path: unsupported schema keywords {unknown}")
    kind = schema.get("type")
    if "const" in schema:
        const = schema["const"]
        return lambda v: type(v) is str and v == const
    if "enum" in schema:
        values = frozenset(schema["enum"])
        return lambda v: type(v) is str and v in values
    if kind == "string":
        pattern = schema.get("pattern")
        low = schema.get("minLength", 0)
        high = schema.get("maxLength", 1 << 62)
        # Rust's regex (pydantic) anchors $ at the very end; fullmatch does the same here.
        match = re.compile(pattern).fullmatch if pattern else None
        if match is None:
            return lambda v: type(v) is str and low <= len(v) <= high
        return lambda v: type(v) is str and low <= len(v) <= high and match(v) is not None
    if kind in ("integer", "number"):
        low = schema.get("minimum", float("-inf"))
        high = schema.get("maximum", float("inf"))
        if kind == "integer":
            return lambda v: type(v) is int and low <= v <= high
        return lambda v: (type(v) is float or type(v) is int) and low <= v <= high
    if kind == "boolean":
        return lambda v: type(v) is bool
    raise AssertionError(f"columnar fast path: unsupported schema {schema}")


def _check_for(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> tuple[Check, bool]:
    """A value check for one property, and whether null is allowed."""
    options = prop.get("anyOf", [prop])
    checks: list[Check] = []
    nullable = False
    for option in options:
        if "$ref" in option:
            option = defs[option["$ref"].rsplit("/", 1)[1]]
        if option.get("type") == "null":
            nullable = True
            continue
        rest = {k: v for k, v in option.items() if k not in ("title", "default", "description")}
        checks.append(_one_check(rest))
    if len(checks) != 1:
        raise AssertionError(f"columnar fast path: unsupported union {prop}")
    check = checks[0]
    if nullable:
        return (lambda v: v is None or check(v)), True
    return check, False


@dataclass
class _Plan:
    """Per event type: field checks, fill-ins for absent fields and the column plan."""

    type_name: str
    dataset: str
    names: tuple[str, ...]
    allowed: frozenset[str]
    getter: Callable[[dict[str, Any]], tuple[Any, ...]]
    fill: dict[str, Any]
    checks: dict[str, Check]
    blob_fields: tuple[str | None, ...]
    double_fields: tuple[tuple[str | None, str], ...]
    index_parts: tuple[tuple[bool, str], ...]


def _or_missing(check: Check) -> Check:
    return lambda v: v is _MISSING or check(v)


def _or_none(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _iso_currency(check: Check) -> Check:
    return lambda v: check(v) and v in ISO_4217


def _default(model: type[Any], name: str) -> Any:
    value = model.model_fields[name].default
    return value.value if isinstance(value, enum.Enum) else value


def _build_plans() -> dict[str, _Plan]:
    plans = {}
    for type_name, model in EVENT_TYPES.items():
        schema = model.model_json_schema()
        props = schema["properties"]
        defs = schema.get("$defs", {})
        required = set(schema.get("required", []))
        checks: dict[str, Check] = {}
        # An absent field takes its default; an absent required field is _MISSING (bad);
        # an absent event_id or timestamp is _MISSING and filled in at encode time.
        fill: dict[str, Any] = {}
        for name, prop in props.items():
            if name in required or name in ("event_id", "timestamp"):
                fill[name] = _MISSING
            else:
                fill[name] = _default(model, name)
            if name == "timestamp":
                continue
            check, _ = _check_for(prop, defs)
            if name == "event_id":
                checks[name] = _or_missing(check)
            elif name == "currency":
                checks[name] = _iso_currency(check)
            else:
                checks[name] = check
        if type_name == "api_call":
            # The model fills a missing or null bound from duration_ms.
            for bound in ("duration_min_ms", "duration_max_ms"):
                fill[bound] = None
                checks[bound] = _or_none(checks[bound])
        codec = _CODECS[type_name]
        # Blob columns are written as the raw string values: make sure they are strings.
        for name in codec.blob_fields:
            if name is None:
                continue
            options = props[name].get("anyOf", [props[name]])
            resolved = [defs[o["$ref"].rsplit("/", 1)[1]] if "$ref" in o else o for o in options]
            if any(o.get("type") not in ("string", "null") for o in resolved):
                raise AssertionError(f"columnar fast path: blob field {name} is not a string")
        names = tuple(props)
        plans[type_name] = _Plan(
            type_name=type_name,
            dataset=codec.dataset,
            names=names,
            allowed=frozenset(names),
            getter=operator.itemgetter(*names),
            fill=fill,
            checks=checks,
            blob_fields=codec.blob_fields,
            double_fields=codec.double_fields,
            index_parts=codec.index_parts,
        )
    return plans


_PLANS = _build_plans()


@dataclass
class Columns:
    """AE-shaped columns per dataset, ready for :meth:`EmbeddedStore.write_columns`."""

    tables: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    count: int = 0

    def table(self, dataset: str) -> dict[str, list[Any]]:
        table = self.tables.get(dataset)
        if table is None:
            table = {"event_id": [], "timestamp": [], "index1": [], "_sample_interval": []}
            for name in BLOB_COLUMNS + DOUBLE_COLUMNS:
                table[name] = []
            self.tables[dataset] = table
        return table

    def add_points(self, points: Sequence[DataPoint]) -> None:
        """Append data points built by the slow path."""
        for point in points:
            table = self.table(point.dataset)
            table["event_id"].append(point.event_id)
            table["timestamp"].append(round(point.timestamp.timestamp() * 1000))
            table["index1"].append(point.index1)
            table["_sample_interval"].append(point.sample_interval)
            for i, name in enumerate(BLOB_COLUMNS):
                table[name].append(point.blobs[i] if i < len(point.blobs) else "")
            for i, name in enumerate(DOUBLE_COLUMNS):
                table[name].append(point.doubles[i] if i < len(point.doubles) else 0.0)
            self.count += 1


def _parse_time(value: Any, now_ms: int) -> int | None:
    """Epoch milliseconds (UTC, truncated) or None when the fast path cannot be sure."""
    if value is _MISSING:
        return now_ms
    if type(value) is not str or _TIMESTAMP.fullmatch(value) is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:  # e.g. February 30th: the slow path words the error
        return None
    if parsed.tzinfo is None:
        return None
    parsed = parsed.astimezone(UTC)
    parsed = parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)
    return round(parsed.timestamp() * 1000)


def _bad_positions(column: Sequence[Any], check: Check) -> set[int]:
    try:
        # Distinct (type, value) pairs: 1, 1.0 and True stay apart.
        distinct = set(zip(map(type, column), column, strict=True))
    except TypeError:  # an unhashable value (list, object): check row by row
        return {i for i, v in enumerate(column) if not check(v)}
    bad = {pair for pair in distinct if not check(pair[1])}
    if not bad:
        return set()
    return {i for i, v in enumerate(column) if (type(v), v) in bad}


def _encode_group(plan: _Plan, rows: list[dict[str, Any]], out: Columns, now_ms: int) -> list[int]:
    """Encode the rows that pass every check; return the positions of the others."""
    n_names = len(plan.names)
    fill = plan.fill
    # Rows from the exporter carry every field: then one C-level getter reads them all.
    full = [row if len(row) == n_names else {**fill, **row} for row in rows]
    columns: dict[str, Sequence[Any]] = dict(
        zip(plan.names, zip(*map(plan.getter, full), strict=True), strict=True)
    )
    bad: set[int] = set()
    for name, check in plan.checks.items():
        bad |= _bad_positions(columns[name], check)
    stamps = columns["timestamp"]
    try:
        parsed = {v: _parse_time(v, now_ms) for v in set(stamps)}
    except TypeError:
        parsed = None
    if parsed is None:
        times: list[int | None] = [_parse_time(v, now_ms) for v in stamps]
    else:
        times = [parsed[v] for v in stamps]
    if None in times:
        bad |= {i for i, t in enumerate(times) if t is None}
    if plan.type_name == "api_call":
        duration = columns["duration_ms"]
        for bound in ("duration_min_ms", "duration_max_ms"):
            columns[bound] = [
                d if v is None else v for v, d in zip(columns[bound], duration, strict=True)
            ]
    keep = list(range(len(rows)))
    if bad:
        keep = [i for i in keep if i not in bad]
        columns = {name: [col[i] for i in keep] for name, col in columns.items()}
        times = [times[i] for i in keep]
    if keep:
        over = _emit(plan, columns, times, len(keep), out)  # type: ignore[arg-type]
        if over:
            # Rows that break the blob byte limit go to the slow path, which words it.
            bad |= {keep[i] for i in over}
            kept = [i for i in range(len(keep)) if i not in set(over)]
            columns = {name: [col[i] for i in kept] for name, col in columns.items()}
            _emit(plan, columns, [times[i] for i in kept], len(kept), out)  # type: ignore[misc]
    return sorted(bad)


def _emit(
    plan: _Plan, columns: dict[str, Sequence[Any]], times: list[int], n: int, out: Columns
) -> list[int]:
    """Append the columns; if some row's blobs pass 16 KiB, append nothing and return
    those rows' positions."""
    blobs: list[list[str]] = []
    for name in plan.blob_fields:
        if name is None:
            blobs.append([""] * n)
        else:
            blobs.append(["" if v is None else v for v in columns[name]])
    # Four bytes per character at most: under the limit, no row needs an exact count.
    if 4 * sum(max(map(len, column), default=0) for column in blobs) > MAX_BLOB_BYTES:
        over = [
            i
            for i in range(n)
            if sum(len(column[i].encode("utf-8")) for column in blobs) > MAX_BLOB_BYTES
        ]
        if over:
            return over
    table = out.table(plan.dataset)
    table["event_id"].extend([new_event_id() if v is _MISSING else v for v in columns["event_id"]])
    table["timestamp"].extend(times)
    table["_sample_interval"].extend([1] * n)
    for column, values in zip(BLOB_COLUMNS, blobs, strict=False):
        table[column].extend(values)
    for column in BLOB_COLUMNS[len(blobs) :]:
        table[column].extend([""] * n)
    for column, (name, kind) in zip(DOUBLE_COLUMNS, plan.double_fields, strict=False):
        if name is None:
            table[column].extend([0.0] * n)
        elif kind == "const":
            table[column].extend([float(LAYOUT_VERSION)] * n)
        elif kind == "time":
            table[column].extend(map(float, times))
        else:
            table[column].extend(map(float, columns[name]))
    for column in DOUBLE_COLUMNS[len(plan.double_fields) :]:
        table[column].extend([0.0] * n)
    parts = plan.index_parts
    if len(parts) == 1 and parts[0][0]:
        # 24 characters are at most 96 bytes: only longer values need the byte check.
        table["index1"].extend(
            [
                "" if v is None else v if len(v) <= 24 else index_value([v])
                for v in columns[parts[0][1]]
            ]
        )
    else:
        part_columns = [
            ["" if v is None else str(v) for v in columns[name]] if is_field else [name] * n
            for is_field, name in parts
        ]
        table["index1"].extend(
            [index_value(list(values)) for values in zip(*part_columns, strict=True)]
        )
    out.count += n
    return []


def encode_batch(raw_events: Sequence[Any]) -> tuple[Columns, list[dict[str, Any]]]:
    """Validate and encode a batch; returns the columns and the per-event rejections."""
    out = Columns()
    groups: dict[str, list[int]] = {}
    slow: list[int] = []
    for index, raw in enumerate(raw_events):
        kind = raw.get("type") if type(raw) is dict else None
        plan = _PLANS.get(kind) if type(kind) is str else None
        if plan is not None and raw.keys() <= plan.allowed:
            groups.setdefault(kind, []).append(index)  # type: ignore[arg-type]
        else:
            slow.append(index)
    now_ms = _now_ms()
    for kind, positions in groups.items():
        rows = [raw_events[i] for i in positions]
        slow.extend(positions[i] for i in _encode_group(_PLANS[kind], rows, out, now_ms))
    rejected: list[dict[str, Any]] = []
    points: list[DataPoint] = []
    for index in sorted(slow):
        raw = raw_events[index]
        try:
            points.append(encode(parse_event(raw)))
        except InvalidEvent as exc:
            rejected.append(_rejection(index, raw, exc.errors))
        except LayoutLimitError as exc:
            rejected.append(_rejection(index, raw, [("event", "blob_bytes", str(exc))]))
    out.add_points(points)
    return out, rejected


def _now_ms() -> int:
    now = datetime.now(UTC)
    return round(now.replace(microsecond=now.microsecond // 1000 * 1000).timestamp() * 1000)


def _rejection(index: int, raw: Any, errors: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    event_id = raw.get("event_id") if isinstance(raw, Mapping) else None
    return {
        "index": index,
        "event_id": event_id if isinstance(event_id, str) else None,
        "errors": [{"field": f, "rule": r, "message": m} for f, r, m in errors],
    }
