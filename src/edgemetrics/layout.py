"""The AE layout: which event field goes to ``index1``, ``blobN`` and ``doubleN``.

Declared once here, versioned, and exported to ``worker/src/layout.json`` for the Worker
(``python -m edgemetrics.layout`` rewrites it; a test fails when it is stale). Columns
may be appended, never moved or removed, once data exists: bump ``LAYOUT_VERSION`` when
appending and keep old positions.

Index choices, in terms of AE's per-index sampling (AE samples each index value on its
own, so a small index value stays exact while a hot one is thinned):

* content: the creator id. Per-creator totals stay exact for small creators and large
  creators are sampled equitably, never drowning the small ones.
* commerce: the creator id, as content. Purchases are low volume, far below the rate at
  which AE starts sampling an index, so revenue is stored unsampled ("exact data").
* platform: the endpoint (``service METHOD route``) or, for other types, the job, queue,
  statement kind or error type. Per-endpoint error rates and latency percentiles then rest
  on their own rows: a rarely called endpoint is never sampled away by a hot one.
* pipeline: the source (exporter, collector, worker): low volume, effectively exact.

>>> from edgemetrics.events import View
>>> point = encode(View(content_id="v1", creator_id="c1", position=3.5))
>>> point.dataset, point.index1, point.blobs[0]
('edgemetrics_content', 'c1', 'view')
>>> decode(point).position
3.5
"""

from __future__ import annotations

import enum
import hashlib
import json
import sys
import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from edgemetrics.currencies import ISO_4217
from edgemetrics.events import EVENT_TYPES, FAMILIES, Event

LAYOUT_VERSION = 1

# AE's limits per data point (writeDataPoint throws a TypeError past them).
MAX_BLOBS = 20
MAX_DOUBLES = 20
MAX_INDEX_BYTES = 96
MAX_BLOB_BYTES = 16 * 1024
MAX_POINTS_PER_INVOCATION = 250

EXPORT_PATH = Path(__file__).resolve().parents[2] / "worker" / "src" / "layout.json"

# The audience context opens the blobs of content and commerce alike (the same columns, so
# one query shape reads both datasets). Frozen: new columns go at the end of a family.
_AUDIENCE_BLOBS: tuple[str, ...] = (
    "type",
    "content_id",
    "content_type",
    "creator_id",
    "session_id",
    "user_id",
    "country",
    "city",
    "device_class",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "referrer_source",
    "timezone",
)

# Field-to-column declaration per family. Append only.
_COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "content": (
        _AUDIENCE_BLOBS,
        (
            "layout_version",
            "timestamp",
            "authenticated",
            "position",
            "media_duration",
            "watch_time",
            "unique_view",
            "new_visitor",
            "new_session",
        ),
    ),
    "commerce": (
        (
            *_AUDIENCE_BLOBS,
            "currency",
            "transaction_id",
            "original_transaction_id",
        ),
        ("layout_version", "timestamp", "authenticated", "amount_minor"),
    ),
    "platform": (
        (
            "type",
            "service",
            "session_id",
            "user_id",
            "method",
            "route",
            "job_name",
            "queue",
            "outcome",
            "fingerprint",
            "operation",
            "database",
            "error_type",
            "source",
        ),
        (
            "layout_version",
            "timestamp",
            "authenticated",
            "status_code",
            "duration_ms",
            "response_bytes",
            "calls",
            "duration_min_ms",
            "duration_max_ms",
            "errors",
            "queue_delay_ms",
            "retries",
            "delay_ms",
            "depth",
            "rows",
        ),
    ),
    "pipeline": (
        ("type", "source"),
        (
            "layout_version",
            "timestamp",
            "events_in",
            "events_exported",
            "dropped_buffer_full",
            "dropped_spool_full",
            "dropped_invalid",
            "dropped_expired",
            "rejected",
            "retries",
            "buffer_depth",
            "spool_depth",
            "spool_age_s",
            "export_latency_ms",
            "batches",
            "batch_size_avg",
            "execution_ms",
            "sample_rate",
        ),
    ),
}

# index1 per type: field names and literal words joined by a space.
_INDEX: dict[str, tuple[str, ...]] = {
    **{t: ("creator_id",) for t in EVENT_TYPES if EVENT_TYPES[t].family in ("content", "commerce")},
    "api_call": ("service", "method", "route"),
    "job": ("service", "'job", "job_name"),
    "queue_delay": ("service", "'queue", "queue"),
    "db_query": ("service", "'db", "operation", "database"),
    "error": ("service", "'error", "error_type"),
    "pipeline_health": ("source",),
}

DATASET_PREFIX = "edgemetrics_"


class LayoutLimitError(ValueError):
    """An encoded event would break one of AE's per-data-point limits."""


@dataclass(frozen=True, slots=True)
class DataPoint:
    """One AE data point, plus the event id and time the embedded store keeps beside it."""

    dataset: str
    index1: str
    blobs: tuple[str, ...]
    doubles: tuple[float, ...]
    event_id: str
    timestamp: datetime
    sample_interval: int = 1


def dataset_name(family: str) -> str:
    return DATASET_PREFIX + family


def _field_kind(model: type[Event], name: str) -> str:
    """One of str, enum, bool, int, float, time: how a field is stored and read back."""
    if name == "layout_version":
        return "const"
    annotation = model.model_fields[name].annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = args[0]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if origin is Literal:
        return "str"
    if annotation is datetime:
        return "time"
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "enum"
    return "str"


@dataclass(frozen=True)
class _TypeCodec:
    """Precomputed column plan for one event type: encode and decode without lookups."""

    model: type[Event]
    dataset: str
    index_parts: tuple[tuple[bool, str], ...]  # (is_field, name_or_literal)
    blob_fields: tuple[str | None, ...]
    double_fields: tuple[tuple[str | None, str], ...]  # (field or None, kind)


def _build_codecs() -> dict[str, _TypeCodec]:
    codecs = {}
    for type_name, model in EVENT_TYPES.items():
        blobs, doubles = _COLUMNS[model.family]
        fields = set(model.model_fields)
        missing = fields - set(blobs) - set(doubles) - {"event_id"}
        if missing:
            raise AssertionError(f"{type_name}: fields without a column: {sorted(missing)}")
        parts = tuple(
            (False, part[1:]) if part.startswith("'") else (True, part)
            for part in _INDEX[type_name]
        )
        codecs[type_name] = _TypeCodec(
            model=model,
            dataset=dataset_name(model.family),
            index_parts=parts,
            blob_fields=tuple(b if b in fields else None for b in blobs),
            double_fields=tuple(
                (d, _field_kind(model, d)) if d in fields or d == "layout_version" else (None, "")
                for d in doubles
            ),
        )
    return codecs


_CODECS = _build_codecs()


def index_value(parts: list[str]) -> str:
    """Join index parts; past 96 bytes, keep a prefix and add a hash so values stay distinct.

    >>> index_value(["app", "GET", "/v1/items/{id}"])
    'app GET /v1/items/{id}'
    >>> len(index_value(["x" * 200]).encode())
    96
    """
    value = " ".join(parts)
    raw = value.encode("utf-8")
    if len(raw) <= MAX_INDEX_BYTES:
        return value
    digest = hashlib.sha256(raw).hexdigest()[:8]
    head = raw[: MAX_INDEX_BYTES - 9].decode("utf-8", errors="ignore")
    return f"{head}~{digest}"


def encode(event: Event, sample_interval: int = 1) -> DataPoint:
    """Turn an event into its AE data point, checking AE's limits before any write."""
    codec = _CODECS[event.type]
    values = event.__dict__
    blobs = []
    blob_bytes = 0
    for name in codec.blob_fields:
        value = values.get(name) if name else None
        text = "" if value is None else str(value)
        blob_bytes += len(text.encode("utf-8"))
        blobs.append(text)
    if blob_bytes > MAX_BLOB_BYTES:
        raise LayoutLimitError(
            f"{event.type}: blobs total {blob_bytes} bytes, over AE's {MAX_BLOB_BYTES}-byte limit"
        )
    doubles = []
    for name, kind in codec.double_fields:
        if name is None:
            doubles.append(0.0)
        elif kind == "const":
            doubles.append(float(LAYOUT_VERSION))
        elif kind == "time":
            doubles.append(float(round(values[name].timestamp() * 1000)))
        else:
            doubles.append(float(values[name]))
    index = index_value(
        [str(values.get(name) or "") if is_field else name for is_field, name in codec.index_parts]
    )
    return DataPoint(
        dataset=codec.dataset,
        index1=index,
        blobs=tuple(blobs),
        doubles=tuple(doubles),
        event_id=event.event_id,
        timestamp=event.timestamp,
        sample_interval=sample_interval,
    )


def decode(point: DataPoint | dict[str, Any]) -> Event:
    """Rebuild the event from a data point (the inverse of :func:`encode`)."""
    if isinstance(point, dict):
        point = point_from_row(point)
    type_name = point.blobs[0]
    codec = _CODECS[type_name]
    data: dict[str, Any] = {"event_id": point.event_id}
    for name, text in zip(codec.blob_fields, point.blobs, strict=False):
        if name is not None and text != "":
            data[name] = text
    for (name, kind), number in zip(codec.double_fields, point.doubles, strict=False):
        if name is None or kind == "const":
            continue
        if kind == "time":
            data[name] = datetime.fromtimestamp(number / 1000, tz=UTC)
        elif kind == "bool":
            data[name] = bool(number)
        elif kind == "int":
            data[name] = int(number)
        else:
            data[name] = number
    return codec.model(**data)


def point_from_row(row: dict[str, Any]) -> DataPoint:
    """A data point from a store row with ``blobN``/``doubleN`` keys."""
    blobs = tuple(row.get(f"blob{i}") or "" for i in range(1, MAX_BLOBS + 1))
    doubles = tuple(float(row.get(f"double{i}") or 0.0) for i in range(1, MAX_DOUBLES + 1))
    return DataPoint(
        dataset=row.get("dataset", ""),
        index1=row.get("index1", ""),
        blobs=blobs,
        doubles=doubles,
        event_id=row["event_id"],
        timestamp=row["timestamp"],
        sample_interval=int(row.get("_sample_interval", 1)),
    )


def columns(family: str) -> dict[str, str]:
    """Field name to AE column (``blobN``/``doubleN``) for a family.

    >>> columns("commerce")["amount_minor"]
    'double4'
    """
    blobs, doubles = _COLUMNS[family]
    out = {name: f"blob{i}" for i, name in enumerate(blobs, 1)}
    out.update({name: f"double{i}" for i, name in enumerate(doubles, 1)})
    return out


def export() -> dict[str, Any]:
    """The layout as JSON data for the Worker: columns, index rules, kinds and schemas."""
    families = {}
    for family in FAMILIES:
        blobs, doubles = _COLUMNS[family]
        families[family] = {
            "dataset": dataset_name(family),
            "blobs": list(blobs),
            "doubles": list(doubles),
        }
    event_types = {}
    for type_name, codec in _CODECS.items():
        event_types[type_name] = {
            "family": codec.model.family,
            "index": [
                {"field": name} if is_field else {"literal": name}
                for is_field, name in codec.index_parts
            ],
            "doubles": {name: kind for name, kind in codec.double_fields if name is not None},
            "schema": codec.model.model_json_schema(),
        }
    return {
        "version": LAYOUT_VERSION,
        "limits": {
            "blobs": MAX_BLOBS,
            "doubles": MAX_DOUBLES,
            "index_bytes": MAX_INDEX_BYTES,
            "blob_bytes": MAX_BLOB_BYTES,
            "points_per_invocation": MAX_POINTS_PER_INVOCATION,
        },
        "families": families,
        "types": event_types,
        "currencies": sorted(ISO_4217),
    }


def export_json() -> str:
    return json.dumps(export(), indent=2, sort_keys=True) + "\n"


def markdown() -> str:
    """The layout as Markdown tables (one per family), for docs/events.md."""
    lines = []
    for family in FAMILIES:
        blobs, doubles = _COLUMNS[family]
        types_in = [t for t, c in _CODECS.items() if c.model.family == family]
        lines += [f"### {family} (dataset `{dataset_name(family)}`)", ""]
        lines += ["| type | index1 |", "|---|---|"]
        for type_name in types_in:
            parts = " + ".join(
                f"`{name}`" if is_field else f'"{name}"'
                for is_field, name in _CODECS[type_name].index_parts
            )
            lines.append(f"| `{type_name}` | {parts} |")
        lines += ["", "| column | field | column | field |", "|---|---|---|---|"]
        for i in range(max(len(blobs), len(doubles))):
            blob = (f"blob{i + 1}", f"`{blobs[i]}`") if i < len(blobs) else ("", "")
            double = (f"double{i + 1}", f"`{doubles[i]}`") if i < len(doubles) else ("", "")
            lines.append(f"| {blob[0]} | {blob[1]} | {double[0]} | {double[1]} |")
        lines.append("")
    return "\n".join(lines)


def _check_limits() -> None:
    for family, (blobs, doubles) in _COLUMNS.items():
        if len(blobs) > MAX_BLOBS or len(doubles) > MAX_DOUBLES:
            raise AssertionError(f"{family}: over AE's column limits")


_check_limits()

if __name__ == "__main__":  # python -m edgemetrics.layout: rewrite the export
    from edgemetrics.cli import main

    sys.exit(main(["layout", "check" if "--check" in sys.argv else "export"]))
