"""Batch-level validation and encoding: the collector's fast path, column by column.

Building a pydantic model per event and encoding it costs tens of microseconds; a batch
of 250 events of one type mostly repeats the same few values per field. So the collector
works on whole columns, in two tiers:

* :func:`decode_batch` decodes a whole body with msgspec straight into one typed struct
  per event (types generated here from each event type's JSON Schema: JSON types,
  nullability, required fields, defaults, no extra fields, the ``type`` tag). Then each
  column is checked once: a column holding one value is checked once, others by their
  *distinct* values, against the same rules as below; timestamps are parsed once per
  distinct value; and AE columns come out as lists, or as :class:`~edgemetrics.store.Const`
  for a column with one value (most of them). It answers only for a body in which every
  event passes; for anything else (a decode error, any broken rule, a value it is not
  sure about) it returns None and the body takes the second tier.
* :func:`encode_batch` takes the events as parsed by orjson and checks each field's
  distinct values against the rule the event's JSON Schema states (``types[T].schema`` in
  layout.json: type, enum, const, pattern, min/max length, minimum/maximum, nullability,
  no extra fields); any event it is not sure about (a value of another JSON type that
  pydantic might coerce, an unknown format, any broken rule) goes to the slow path,
  :func:`edgemetrics.events.parse_event` plus :func:`edgemetrics.layout.encode`, which
  accepts or rejects it with pydantic's exact error.

Both only ever accept a subset of what the models accept and produce the same values;
``tests/test_columnar.py`` checks all three give identical data points.

>>> cols, rejected = encode_batch([{"type": "view", "content_id": "v1", "creator_id": "c1"},
...                                {"type": "view", "content_id": "bad id"}])
>>> cols.count, rejected[0]["index"], rejected[0]["errors"][0]["field"]
(1, 1, 'content_id')
>>> cols.to_pydict("edgemetrics_content")["index1"]
['c1']
>>> body = b'{"batch_id": "' + b"a" * 32 + b'", "events": [{"type": "view", "content_id": "v1"}]}'
>>> batch_id, cols = decode_batch(body)
>>> cols.count, cols.tables["edgemetrics_content"].columns["blob1"]
(1, Const(value='view'))
"""

from __future__ import annotations

import enum
import math
import operator
import re
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Union

import msgspec

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
from edgemetrics.store import COLUMNS, Column, Const, HexIds

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
    # Each field's JSON type ("string", "integer", "number", "boolean") and whether null
    # is allowed (as the model reads it: a bound the model fills is nullable).
    kinds: dict[str, tuple[str, bool]]


def _or_missing(check: Check) -> Check:
    return lambda v: v is _MISSING or check(v)


def _or_none(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _iso_currency(check: Check) -> Check:
    return lambda v: check(v) and v in ISO_4217


def _default(model: type[Any], name: str) -> Any:
    value = model.model_fields[name].default
    return value.value if isinstance(value, enum.Enum) else value


def _kind(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> tuple[str, bool]:
    options = [
        defs[o["$ref"].rsplit("/", 1)[1]] if "$ref" in o else o for o in prop.get("anyOf", [prop])
    ]
    kinds = {o.get("type") for o in options if o.get("type") != "null"}
    if len(kinds) != 1 or not kinds <= {"string", "integer", "number", "boolean"}:
        raise AssertionError(f"columnar fast path: unsupported field type {prop}")
    return str(kinds.pop()), len(options) > 1 or prop.get("type") == "null"


def _build_plans() -> dict[str, _Plan]:
    plans = {}
    for type_name, model in EVENT_TYPES.items():
        schema = model.model_json_schema()
        props = schema["properties"]
        defs = schema.get("$defs", {})
        required = set(schema.get("required", []))
        checks: dict[str, Check] = {}
        kinds: dict[str, tuple[str, bool]] = {}
        # An absent field takes its default; an absent required field is _MISSING (bad);
        # an absent event_id or timestamp is _MISSING and filled in at encode time.
        fill: dict[str, Any] = {}
        for name, prop in props.items():
            if name in required or name in ("event_id", "timestamp"):
                fill[name] = _MISSING
            else:
                fill[name] = _default(model, name)
            kinds[name] = _kind(prop, defs)
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
                kinds[bound] = (kinds[bound][0], True)
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
            kinds=kinds,
        )
    return plans


_PLANS = _build_plans()


@dataclass
class Rows:
    """One dataset's rows of a batch, column by column: every name in
    :data:`edgemetrics.store.COLUMNS`, as a list or as a :class:`Const` (``timestamp`` in
    epoch milliseconds), ready for :meth:`EmbeddedStore.write_columns`."""

    count: int
    columns: dict[str, Column]

    def column(self, name: str) -> list[Any]:
        """One column's values, one per row."""
        return _values(self.columns[name], self.count)

    def take(self, positions: Sequence[int]) -> Rows:
        """The rows at ``positions``, in that order."""
        columns: dict[str, Column] = {}
        for name, values in self.columns.items():
            if isinstance(values, Const):
                columns[name] = values
            else:
                every = values.split() if isinstance(values, HexIds) else values
                columns[name] = [every[i] for i in positions]
        return Rows(len(positions), columns)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form that :meth:`from_json` reads back exactly (orjson keeps ints,
        floats, -0.0 and every string as they are)."""
        lists: dict[str, Sequence[Any]] = {}
        consts: dict[str, Any] = {}
        hex_ids: dict[str, str] = {}
        for name, values in self.columns.items():
            if isinstance(values, Const):
                consts[name] = values.value
            elif isinstance(values, HexIds):
                hex_ids[name] = values.joined
            else:
                lists[name] = values
        return {"n": self.count, "lists": lists, "consts": consts, "hex": hex_ids}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rows:
        columns: dict[str, Column] = {n: Const(v) for n, v in data["consts"].items()}
        columns.update({n: HexIds(v) for n, v in data.get("hex", {}).items()})
        columns.update(data["lists"])
        return cls(int(data["n"]), columns)


def _same(a: Any, b: Any) -> bool:
    """Equal and of one type (0, 0.0 and False stay apart; so do 0.0 and -0.0)."""
    if type(a) is not type(b) or a != b:
        return False
    return type(a) is not float or math.copysign(1.0, a) == math.copysign(1.0, b)


def concat_rows(parts: Sequence[Rows]) -> Rows:
    """The rows of ``parts`` one after another; a column that holds one value in every
    part stays a :class:`Const`.

    >>> a = Rows(2, {"x": Const(""), "y": ["p", "q"]})
    >>> b = Rows(1, {"x": Const(""), "y": Const("r")})
    >>> concat_rows([a, b])
    Rows(count=3, columns={'x': Const(value=''), 'y': ['p', 'q', 'r']})
    """
    if len(parts) == 1:
        return parts[0]
    count = sum(p.count for p in parts)
    columns: dict[str, Column] = {}
    for name, first in parts[0].columns.items():
        if isinstance(first, Const) and all(
            isinstance(c := p.columns[name], Const) and _same(c.value, first.value)
            for p in parts[1:]
        ):
            columns[name] = first
            continue
        if all(isinstance(p.columns[name], HexIds) for p in parts):
            columns[name] = HexIds("".join(p.columns[name].joined for p in parts))  # type: ignore[union-attr]
            continue
        values: list[Any] = []
        for part in parts:
            values.extend(_values(part.columns[name], part.count))
        columns[name] = values
    return Rows(count, columns)


@dataclass
class Columns:
    """A batch's accepted rows per dataset."""

    tables: dict[str, Rows] = field(default_factory=dict)
    count: int = 0

    def add(self, dataset: str, rows: Rows) -> None:
        """Append one dataset's rows (after any it already has)."""
        if rows.count == 0:
            return
        present = self.tables.get(dataset)
        self.tables[dataset] = rows if present is None else concat_rows([present, rows])
        self.count += rows.count

    def keep(self, dataset: str, positions: Sequence[int]) -> None:
        """Keep only the rows at ``positions`` of one dataset."""
        rows = self.tables[dataset]
        self.count -= rows.count - len(positions)
        if positions:
            self.tables[dataset] = rows.take(positions)
        else:
            del self.tables[dataset]

    def to_pydict(self, dataset: str) -> dict[str, list[Any]]:
        """One dataset's columns as lists (a :class:`Const` repeated per row)."""
        rows = self.tables[dataset]
        return {name: rows.column(name) for name in rows.columns}

    def add_points(self, points: Sequence[DataPoint]) -> None:
        """Append data points built by the slow path."""
        tables = _ListTables()
        for point in points:
            tables.add_point(point)
        tables.into(self)


class _ListTables:
    """AE-shaped columns as plain lists, per dataset, as the second tier builds them."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, list[Any]]] = {}

    def table(self, dataset: str) -> dict[str, list[Any]]:
        table = self.tables.get(dataset)
        if table is None:
            table = {name: [] for name in COLUMNS}
            self.tables[dataset] = table
        return table

    def add_point(self, point: DataPoint) -> None:
        table = self.table(point.dataset)
        table["event_id"].append(point.event_id)
        table["timestamp"].append(round(point.timestamp.timestamp() * 1000))
        table["index1"].append(point.index1)
        table["_sample_interval"].append(point.sample_interval)
        for i, name in enumerate(BLOB_COLUMNS):
            table[name].append(point.blobs[i] if i < len(point.blobs) else "")
        for i, name in enumerate(DOUBLE_COLUMNS):
            table[name].append(point.doubles[i] if i < len(point.doubles) else 0.0)

    def into(self, out: Columns) -> None:
        for dataset, table in self.tables.items():
            out.add(dataset, Rows(len(table["event_id"]), dict(table)))


# --- the first tier: msgspec structs per event type --------------------------------------

_JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}
# Integers beyond int64 are parsed by orjson (the second tier) as floats: leave them to it.
_INT64 = (-(1 << 63), (1 << 63) - 1)


@dataclass
class _Fast:
    """One event type's struct and how its columns are checked."""

    plan: _Plan
    struct: type[msgspec.Struct]
    names: tuple[str, ...]  # the struct's fields, in order
    # Checks left after decoding (msgspec already checked each value's JSON type).
    checks: tuple[tuple[str, Check], ...]
    # number and integer fields without null: their bounds are checked with min()/max().
    bounds: dict[str, tuple[float, float]]
    floats: frozenset[str]
    ints: frozenset[str]
    # Columns the layout alone decides (unused slots, the layout version), and the slots
    # a field fills: (column, field) for blobs, (column, field, kind) for doubles.
    static: dict[str, Column]
    blob_slots: tuple[tuple[str, str], ...]
    double_slots: tuple[tuple[str, str, str], ...]


def _within_int64(check: Check) -> Check:
    return lambda v: check(v) and (v is None or _INT64[0] <= v <= _INT64[1])


def _struct_for(plan: _Plan) -> type[msgspec.Struct]:
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name in plan.names:
        if name == "type":
            continue  # the tag
        kind, nullable = plan.kinds[name]
        annotation: Any = _JSON_TYPES[kind]
        if nullable:
            annotation = annotation | None
        default = plan.fill[name]
        if default is _MISSING and name not in ("event_id", "timestamp"):
            fields.append((name, annotation))
        else:
            # An absent event_id or timestamp decodes as _MISSING, as in the second tier.
            fields.append((name, annotation, default))
    return msgspec.defstruct(
        f"_{plan.type_name}",
        fields,
        tag_field="type",
        tag=plan.type_name,
        forbid_unknown_fields=True,
        kw_only=True,
        gc=False,
    )


def _build_fast() -> dict[type[msgspec.Struct], _Fast]:
    fast = {}
    for plan in _PLANS.values():
        checks: list[tuple[str, Check]] = []
        bounds: dict[str, tuple[float, float]] = {}
        schema = EVENT_TYPES[plan.type_name].model_json_schema()
        for name, check in plan.checks.items():
            if name == "type":
                continue
            kind, nullable = plan.kinds[name]
            if kind == "boolean" and not nullable:
                continue  # decoding made it a bool; there is nothing else to check
            if kind in ("number", "integer") and not nullable:
                prop = schema["properties"][name]
                low = prop.get("minimum", -math.inf)
                high = prop.get("maximum", math.inf)
                if kind == "integer":
                    low, high = max(low, _INT64[0]), min(high, _INT64[1])
                bounds[name] = (low, high)
                continue
            if kind == "integer":
                checks.append((name, _within_int64(check)))
            else:
                checks.append((name, check))
        for is_field, name in plan.index_parts:
            if is_field and plan.kinds[name][0] != "string":
                raise AssertionError(f"columnar fast path: index part {name} is not a string")
        struct = _struct_for(plan)
        static: dict[str, Column] = {"_sample_interval": Const(1)}
        blob_slots = []
        for i, column in enumerate(BLOB_COLUMNS):
            blob = plan.blob_fields[i] if i < len(plan.blob_fields) else None
            if blob is None:
                static[column] = Const("")
            else:
                blob_slots.append((column, blob))
        double_slots = []
        for i, column in enumerate(DOUBLE_COLUMNS):
            double, kind = plan.double_fields[i] if i < len(plan.double_fields) else (None, "")
            if double is None:
                static[column] = Const(0.0)
            elif kind == "const":
                static[column] = Const(float(LAYOUT_VERSION))
            else:
                double_slots.append((column, double, kind))
        fast[struct] = _Fast(
            plan=plan,
            struct=struct,
            names=struct.__struct_fields__,
            checks=tuple(checks),
            bounds=bounds,
            floats=frozenset(n for n, (k, _) in plan.kinds.items() if k == "number"),
            ints=frozenset(n for n, (k, _) in plan.kinds.items() if k == "integer"),
            static=static,
            blob_slots=tuple(blob_slots),
            double_slots=tuple(double_slots),
        )
    return fast


_FAST = _build_fast()
_Body = msgspec.defstruct(
    "_Body",
    [("batch_id", str), ("events", list[Union[tuple(_FAST)]])],  # type: ignore[misc]  # noqa: UP007
    forbid_unknown_fields=True,
    gc=False,
)
_DECODER = msgspec.json.Decoder(_Body)
# The protocol's rule for batch_id (the collector answers bad_shape for any other).
BATCH_ID = re.compile(r"^[0-9a-f]{32}$")
_astuple = msgspec.structs.astuple


def _hex_ids(ids: Sequence[str]) -> HexIds | None:
    """The ids joined, if every one is 32 lowercase hex digits (the event_id rule), checked
    on all at once: 32 characters each, and together they are hex (``fromhex`` takes only
    hex digits and spaces; a space would leave fewer bytes) without an upper-case digit."""
    if min(map(len, ids)) != 32 or max(map(len, ids)) != 32:
        return None
    joined = "".join(ids)
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        return None
    return HexIds(joined) if len(raw) == 16 * len(ids) and joined.lower() == joined else None


def _fast_rows(fast: _Fast, events: list[Any], now_ms: int) -> Rows | None:
    """The rows of one type's events, or None unless every one of them passes."""
    plan = fast.plan
    n = len(events)
    values: dict[str, Sequence[Any]] = {}
    one: dict[str, Any] = {"type": plan.type_name}
    # One C call per event, then one transposition: cheaper than a getter per field.
    transposed = zip(*map(_astuple, events), strict=True)
    floats = fast.floats
    for name, field_values in zip(fast.names, transposed, strict=True):
        first = field_values[0]
        if field_values.count(first) != n or (
            # 0.0 == -0.0: a column of zeros holds one value only if no zero is negative.
            first == 0 and name in floats and array("d", field_values).tobytes() != bytes(8 * n)
        ):
            values[name] = field_values
        else:
            one[name] = first
    for name, (low, high) in fast.bounds.items():
        if name in one:
            if not low <= one[name] <= high:
                return None
        elif not (low <= min(values[name]) and max(values[name]) <= high):
            return None
    checked_ids: HexIds | None = None
    for name, check in fast.checks:
        if name in one:
            if not check(one[name]):
                return None
            continue
        column: Sequence[Any] = values[name]
        if name == "event_id" and _MISSING not in column:
            checked_ids = _hex_ids(column)
            if checked_ids is None:
                return None
            continue
        if not all(map(check, set(column))):
            return None
    # Timestamps: parsed once per distinct value.
    if "timestamp" in one:
        stamp = _parse_time(one["timestamp"], now_ms)
        if stamp is None:
            return None
        times: Const | list[int] = Const(stamp)
    else:
        parsed: dict[Any, int | None] = {
            v: _parse_time(v, now_ms) for v in set(values["timestamp"])
        }
        if None in parsed.values():
            return None
        times = list(map(parsed.__getitem__, values["timestamp"]))  # type: ignore[arg-type]
    if plan.type_name == "api_call":
        # The model fills a missing or null bound from duration_ms.
        for bound in ("duration_min_ms", "duration_max_ms"):
            if bound in one and one[bound] is None:
                if "duration_ms" in one:
                    one[bound] = one["duration_ms"]
                else:
                    del one[bound]
                    values[bound] = values["duration_ms"]
            elif bound not in one and None in values[bound]:
                values[bound] = [
                    d if v is None else v
                    for v, d in zip(
                        values[bound], _column(one, values, "duration_ms", n), strict=True
                    )
                ]
    columns: dict[str, Column] = dict(fast.static)
    # Event ids: an absent one gets a fresh id, as the model's default does.
    if "event_id" in one:
        event_id = one["event_id"]
        columns["event_id"] = (
            [new_event_id() for _ in range(n)] if event_id is _MISSING else Const(event_id)
        )
    elif checked_ids is not None:
        columns["event_id"] = checked_ids
    else:
        ids = values["event_id"]
        columns["event_id"] = [new_event_id() if v is _MISSING else v for v in ids]
    columns["timestamp"] = times
    columns["index1"] = _index(plan, one, values, n)
    bound_bytes = 0
    for column_name, blob_field in fast.blob_slots:
        if blob_field in one:
            text: str = "" if one[blob_field] is None else one[blob_field]
            columns[column_name] = Const(text)
            bound_bytes += 4 * len(text)
        else:
            texts = values[blob_field]
            if None in texts:
                texts = ["" if v is None else v for v in texts]
            columns[column_name] = texts
            bound_bytes += 4 * max(map(len, texts))
    # Four bytes per character at most: under the limit, no row needs an exact count.
    if bound_bytes > MAX_BLOB_BYTES:
        texts_by_row = zip(
            *(_values(columns[c], n) for c in BLOB_COLUMNS[: len(plan.blob_fields)]), strict=True
        )
        if any(sum(len(t.encode("utf-8")) for t in row) > MAX_BLOB_BYTES for row in texts_by_row):
            return None  # the second tier rejects those rows with the rule's words
    for column_name, double_field, kind in fast.double_slots:
        if kind == "time":
            columns[column_name] = (
                Const(float(times.value)) if isinstance(times, Const) else list(map(float, times))
            )
        elif double_field in one:
            columns[column_name] = Const(float(one[double_field]))
        else:
            columns[column_name] = list(map(float, values[double_field]))
    return Rows(n, columns)


def _column(
    one: dict[str, Any], values: dict[str, Sequence[Any]], name: str, n: int
) -> Sequence[Any]:
    return [one[name]] * n if name in one else values[name]


def _values(column: Column, n: int) -> list[Any]:
    if isinstance(column, Const):
        return [column.value] * n
    if isinstance(column, HexIds):
        return column.split()
    return list(column)


def _index(plan: _Plan, one: dict[str, Any], values: dict[str, Sequence[Any]], n: int) -> Column:
    parts = plan.index_parts
    if len(parts) == 1 and parts[0][0]:
        name = parts[0][1]
        if name in one:
            value = one[name]
            return Const(
                "" if value is None else value if len(value) <= 24 else index_value([value])
            )
        texts = values[name]
        if None not in texts and max(map(len, texts)) <= 24:
            return texts  # 24 characters are at most 96 bytes: nothing to shorten
        return ["" if v is None else v if len(v) <= 24 else index_value([v]) for v in texts]
    if all(not is_field or name in one for is_field, name in parts):
        return Const(index_value([str(one[name] or "") if f else name for f, name in parts]))
    part_columns = [
        ["" if v is None else str(v) for v in _column(one, values, name, n)] if f else [name] * n
        for f, name in parts
    ]
    return [index_value(list(row)) for row in zip(*part_columns, strict=True)]


def decode_batch(body: bytes, max_events: int = 5000) -> tuple[str, Columns] | None:
    """The batch id and the rows of a body in which every event is valid; None for any
    other body (malformed, of another shape, over ``max_events``, or with an event this
    tier is not sure about), which :func:`encode_batch` then answers event by event."""
    try:
        decoded: Any = _DECODER.decode(body)
    except msgspec.DecodeError:
        return None
    events: list[Any] = decoded.events
    if len(events) > max_events or not BATCH_ID.match(decoded.batch_id):
        return None
    out = Columns()
    if not events:
        return decoded.batch_id, out
    now_ms = _now_ms()
    kinds = set(map(type, events))
    groups = (
        {kinds.pop(): events}
        if len(kinds) == 1
        else {kind: [e for e in events if type(e) is kind] for kind in kinds}
    )
    for kind, group in groups.items():
        fast = _FAST[kind]
        rows = _fast_rows(fast, group, now_ms)
        if rows is None:
            return None
        out.add(fast.plan.dataset, rows)
    return decoded.batch_id, out


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


def _encode_group(
    plan: _Plan, rows: list[dict[str, Any]], out: _ListTables, now_ms: int
) -> list[int]:
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
    plan: _Plan, columns: dict[str, Sequence[Any]], times: list[int], n: int, out: _ListTables
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
    return []


def encode_batch(raw_events: Sequence[Any]) -> tuple[Columns, list[dict[str, Any]]]:
    """Validate and encode a batch; returns the columns and the per-event rejections."""
    lists = _ListTables()
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
        slow.extend(positions[i] for i in _encode_group(_PLANS[kind], rows, lists, now_ms))
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
    for point in points:
        lists.add_point(point)
    out = Columns()
    lists.into(out)
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
