"""Derived tables in the embedded store, read transparently by the engine.

A dashboard asks the same few shapes of question over and over: totals, days and top
lists, narrowed by a handful of filters, for the owner or for one creator. Two kinds of
derived table answer them from far fewer rows than the raw tables, in the store's own
DuckDB file:

* an :class:`AggregateSpec` keeps the sums of one set of dimensions per hour (or per day
  once a day is over) and per event type: a few thousand rows where the raw table has
  millions. A query whose dimensions and filters it holds reads it for the time it covers.
  Without ``tenant`` it serves the platform owner only.
* a :class:`TenantRows` keeps a creator family's raw rows (the columns queries read),
  sorted by tenant within each stretch of time, so any query of one creator (quantiles
  too) reads that creator's slice instead of scanning every creator's rows.

Everything else (quantiles for the owner, hourly buckets of a daily spec, local-time
buckets, a dimension no spec keeps) is read from raw rows, as is the part of any range
the derived tables do not cover yet (the last hour or so, and ragged edges).

**The same answer as the raw rows.** A spec row holds the stored row count, the largest
sample interval and, for every row expression of the semantic layer, ``sum(e · s)`` and
``sum(e² · s · (s − 1))`` (and the cross terms a ratio needs): sums, row counts,
``estimated`` and 95% intervals come out as from raw rows (a sum of non-integer values may
differ in the last bits of a double, as two raw runs may). Tenant rows are raw rows.

**Covered time** is a run of contiguous *segments* (an hour, a day, or an empty stretch
from midnight to midnight), each built in one transaction with the count and a checksum
of the raw rows it read. Before using a family's tables, a query checks, in the same
snapshot as the rest of its reads, that the raw table holds exactly as many rows as the
segments counted plus those outside them (``count(*)`` costs nothing in DuckDB; the rows
outside are the recent tail). A late event or a deletion inside covered time fails that
check: the query reads raw rows, and the maintenance thread is asked to rebuild what
changed.

**Maintenance** belongs to the process that owns the store: :meth:`Aggregates.refresh`
builds each hour once it is ``settle_s`` old, replaces a finished day's hours by one day,
and repairs segments whose raw rows changed. :class:`edgemetrics.retention.Retention`
runs it on its schedule (``EmbeddedStore(path, retention=Retention())``) and trims the
segments in the same transaction as it deletes expired raw rows.

>>> import os, tempfile
>>> from datetime import UTC, datetime, timedelta
>>> from edgemetrics.events import View
>>> from edgemetrics.layout import encode
>>> from edgemetrics.store import EmbeddedStore
>>> from edgemetrics.query import EmbeddedBackend, Engine, Principal, Query, TimeRange
>>> now = datetime(2026, 3, 10, 12, tzinfo=UTC)
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
>>> views = [View(content_id=f"v{i % 3}", creator_id="c1", country="FR",
...               timestamp=now - timedelta(hours=i, minutes=1)) for i in range(48)]
>>> _ = store.write([encode(v) for v in views])
>>> # So few rows read faster raw; branch_rows=0 shows the derived path anyway.
>>> aggregates = Aggregates(store, branch_rows=0, clock=lambda: now)
>>> aggregates.refresh().segments_built > 0
True
>>> engine = Engine(EmbeddedBackend(store), aggregates=aggregates, clock=lambda: now)
>>> q = Query(("views",), ("content",), time_range=TimeRange.preset("7d"))
>>> result = engine.run(q, Principal.owner())
>>> [(r["content"], r["views"]) for r in result.rows], result.sources
([('v0', 16.0), ('v1', 16.0), ('v2', 16.0)], ('aggregate', 'raw'))
>>> engine.run(q, Principal.creator("c1")).rows[0]["views"]
16.0
>>> store.close()
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Literal

import duckdb

from edgemetrics.principal import Principal
from edgemetrics.query.compiler import (
    SqlPart,
    _member,
    _time_sql,
    _weighted,
    compile_part,
    dimension_sql,
    filter_sql,
    literal,
    order_sql,
    principal_sql,
)
from edgemetrics.query.model import Query
from edgemetrics.query.semantic import (
    CREATOR_FAMILIES,
    DIMENSIONS,
    EXPRS,
    FAMILIES,
    METRICS,
    QUANTILE_EXPRS,
    TABLES,
    TENANT_COLUMN,
    Component,
    Expr,
    col,
    covariance_pairs,
    dimensions_for,
)

log = logging.getLogger("edgemetrics")

AGG_PREFIX = "edgemetrics_agg_"
SEGMENTS_TABLE = "edgemetrics_agg_segments"
SPECS_TABLE = "edgemetrics_agg_specs"
STATE_TABLE = "edgemetrics_agg_state"  # one row: bumped by every change to the segments
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# Raw rows built in one transaction: a run of days in a small store, one day in a big one.
BATCH_ROWS = 4_000_000
# What one more branch of a statement costs DuckDB (binding, planning, a pipeline), in the
# rows it scans and sums in that time: a few milliseconds. Tiny stores stay on raw rows.
BRANCH_ROWS = 300_000
# DuckDB's row group: the unit its min/max statistics let a scan skip.
ROW_GROUP_ROWS = 122_880
_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

Grain = Literal["hour", "day"]


# --- what the tables hold -------------------------------------------------------------------


@dataclass(frozen=True)
class FamilyColumns:
    """The sums a spec row keeps, one column per event type it applies to (one row per key
    holds every type: a fifth of the rows a row per type would take, for content): the
    stored row count and largest sample interval per type, ``sum(e · s)`` and
    ``sum(e² · s · (s − 1))`` for each row expression ``e`` and type a sum of the semantic
    layer reads (a *cell*), and ``sum(e · f · s · (s − 1))`` for each pair a ratio or
    difference needs, per type both read (the daily rollups keep the same sums). A type is
    named by its position in ``types``."""

    types: tuple[str, ...]
    cells: tuple[tuple[Expr, str], ...]
    crosses: tuple[tuple[Expr, Expr, str], ...]

    def code(self, event_type: str) -> int:
        return self.types.index(event_type)

    def n(self, event_type: str) -> str:
        return f"n_t{self.code(event_type)}"

    def m(self, event_type: str) -> str:
        return f"m_t{self.code(event_type)}"

    def s(self, e: Expr, event_type: str) -> str:
        return f"s_{e.name}_t{self.code(event_type)}"

    def q(self, e: Expr, event_type: str) -> str:
        return f"q_{e.name}_t{self.code(event_type)}"

    def c(self, a: Expr, b: Expr, event_type: str) -> str:
        return f"c_{a.name}__{b.name}_t{self.code(event_type)}"

    def counts(self) -> list[str]:
        return [x for t in self.types for x in (self.n(t), self.m(t))]

    def names(self) -> list[str]:
        """The summed (DOUBLE) columns."""
        out = [x for e, t in self.cells for x in (self.s(e, t), self.q(e, t))]
        return out + [self.c(a, b, t) for a, b, t in self.crosses]


def family_columns(family: str) -> FamilyColumns:
    """Derived from the semantic layer, so a metric added there is covered too (a table
    whose columns change is rebuilt).

    >>> cols = family_columns("content")
    >>> cols.types[:2], [(e.name, t) for e, t in cols.cells][:2], cols.names()[-1]
    (('view', 'play_start'), [('one', 'view'), ('unique_view', 'view')], 'c_position__one_t4')
    """
    types: dict[str, None] = {}
    cells: dict[tuple[Expr, str], None] = {}
    for m in METRICS.values():
        if m.kind == "sum" and m.family == family:
            c = m.sum_components()[0]
            types.update(dict.fromkeys(c.types))
            cells.update(dict.fromkeys((c.expr, t) for t in c.types))
    crosses = [
        (a, b, t)
        for a, b in covariance_pairs()[family]
        for t in types
        if (a, t) in cells and (b, t) in cells
    ]
    return FamilyColumns(tuple(types), tuple(cells), tuple(crosses))


def raw_columns(family: str) -> tuple[str, ...]:
    """The raw columns any query of the family reads (what :class:`TenantRows` copies).

    >>> raw_columns("commerce")[:5]
    ('timestamp', 'index1', '_sample_interval', 'blob1', 'blob4')
    """
    out: dict[str, None] = dict.fromkeys(
        ("timestamp", TENANT_COLUMN, "_sample_interval", col(family, "type"))
    )
    if family in CREATOR_FAMILIES:
        out[col(family, "creator_id")] = None
    for d in dimensions_for(family):
        out[d.column(family)] = None
    for e in (*EXPRS[family].values(), *QUANTILE_EXPRS.values()):
        if e.family == family:
            for f in e.fields:
                out[col(family, f)] = None
    return tuple(out)


def _status_components(family: str) -> bool:
    return any(
        m.kind == "sum" and m.family == family and m.sum_components()[0].min_status_class
        for m in METRICS.values()
    )


def _check_name(name: str) -> None:
    if not _IDENT.match(name):
        raise ValueError(f"aggregates.name: {name!r} must be a lower-case identifier [pattern]")


@dataclass(frozen=True)
class AggregateSpec:
    """A table of a family's sums per ``grain`` of time, per ``dimensions`` and event type.

    ``grain="day"`` replaces a finished day's hourly rows by one row per key: fewer rows,
    but a range that starts or ends inside such a day reads raw rows for that part.
    ``tenant=True`` also keeps the tenant (the AE index) and the creator id, so creators
    can read it, with the same tenancy condition as on raw rows; a spec without them
    serves the platform owner only.

    >>> AggregateSpec("x", "content", ("country",)).table
    'edgemetrics_agg_x'
    >>> AggregateSpec("x", "content", ("job_name",))
    Traceback (most recent call last):
    ...
    ValueError: aggregates.x.dimensions: 'job_name' is not a dimension of content [applicable]
    """

    name: str
    family: str
    dimensions: tuple[str, ...]
    grain: Grain = "day"
    tenant: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.family not in FAMILIES:
            raise ValueError(f"aggregates.{self.name}.family: {self.family!r} is unknown [enum]")
        for d in self.dimensions:
            if d not in DIMENSIONS or self.family not in DIMENSIONS[d].fields:
                raise ValueError(
                    f"aggregates.{self.name}.dimensions: {d!r} is not a dimension of "
                    f"{self.family} [applicable]"
                )
        if self.tenant and self.family not in CREATOR_FAMILIES:
            raise ValueError(f"aggregates.{self.name}.tenant: {self.family} has no tenants")
        if self.grain not in ("hour", "day"):
            raise ValueError(f"aggregates.{self.name}.grain: 'hour' or 'day' [enum]")
        if _status_components(self.family) and "status_class" not in self.dimensions:
            raise ValueError(
                f"aggregates.{self.name}.dimensions: {self.family} sums by status class "
                "(error rates): keep status_class [required]"
            )

    @property
    def table(self) -> str:
        return AGG_PREFIX + self.name

    @property
    def dimension_columns(self) -> tuple[str, ...]:
        """The dimensions kept under their own names (``creator`` is a tenant column)."""
        return tuple(d for d in self.dimensions if not (self.tenant and d == "creator"))

    @property
    def key_columns(self) -> tuple[str, ...]:
        return ("t", *(("tenant", "creator") if self.tenant else ()), *self.dimension_columns)

    def holds(self, dimensions: set[str]) -> bool:
        kept = set(self.dimensions) | ({"creator"} if self.tenant else set())
        return dimensions <= kept

    def ddl(self) -> str:
        cols = family_columns(self.family)
        parts = ["t TIMESTAMP NOT NULL"]
        if self.tenant:
            parts += ["tenant VARCHAR NOT NULL", "creator VARCHAR NOT NULL"]
        for d in self.dimension_columns:
            numeric = DIMENSIONS[d].kind in ("bool", "status_class")
            parts.append(f"{d} {'DOUBLE' if numeric else 'VARCHAR'} NOT NULL")
        parts += [f"{n} BIGINT NOT NULL" for n in cols.counts()]
        parts += [f"{n} DOUBLE NOT NULL" for n in cols.names()]
        return f"CREATE TABLE {self.table} ({', '.join(parts)})"

    def signature(self, raw_types: dict[str, str]) -> str:
        types = ",".join(family_columns(self.family).types)
        return _digest(f"{self.ddl()}|grain={self.grain}|types={types}|sorted")

    def build_sql(self, t0: datetime, t1: datetime, unit: str) -> str:
        """Sum the raw rows of ``[t0, t1)`` into the table: one row per ``unit`` (``hour``
        or ``day``) and key, every event type in its own columns; tenant-kept specs sorted
        by tenant in each unit."""
        family = self.family
        cols = family_columns(family)
        weight = "CAST(_sample_interval AS DOUBLE)"
        keys = [f"date_trunc('{unit}', timestamp)"]
        if self.tenant:
            keys += [TENANT_COLUMN, col(family, "creator_id")]
        keys += [dimension_sql(DIMENSIONS[d], family, "duckdb") for d in self.dimension_columns]
        type_column = col(family, "type")
        code = " ".join(f"WHEN {literal(t, 'duckdb')} THEN {i}" for i, t in enumerate(cols.types))
        names = list(self.key_columns)
        inner = [f"{k} AS {n}" for k, n in zip(keys, names, strict=True)]
        # The type as a small integer, once per row: each sum's filter compares it.
        inner += [f"CASE {type_column} {code} END AS _t", f"{weight} AS _w"]
        exprs: dict[str, str] = {}
        for e, _ in cols.cells:
            exprs[e.name] = e.sql()
        for a, b, _ in cols.crosses:
            exprs[a.name] = a.sql()
            exprs[b.name] = b.sql()
        inner += [f"{x} AS _e_{name}" for name, x in exprs.items() if x != "1"]

        def ref(e: Expr) -> str:
            return "1" if e.sql() == "1" else f"_e_{e.name}"

        def total(value: str, event_type: str, alias: str) -> str:
            only = f"_t = {cols.code(event_type)}"
            return f"coalesce(sum({value}) FILTER (WHERE {only}), 0) AS {alias}"

        w, vw = "_w", "_w * (_w - 1)"
        select = list(names)
        for t in cols.types:
            only = f"_t = {cols.code(t)}"
            select.append(f"count(*) FILTER (WHERE {only}) AS {cols.n(t)}")
            select.append(f"coalesce(max(_w) FILTER (WHERE {only}), 0) AS {cols.m(t)}")
        for e, t in cols.cells:
            x = ref(e)
            square = "1" if x == "1" else f"{x} * {x}"
            select.append(total(_weighted(x, w), t, cols.s(e, t)))
            select.append(total(_weighted(square, vw), t, cols.q(e, t)))
        for a, b, t in cols.crosses:
            product = " * ".join(x for x in (ref(a), ref(b)) if x != "1") or "1"
            select.append(total(_weighted(product, vw), t, cols.c(a, b, t)))
        # Sorted within each unit by the dimensions in their declared order: a filter on
        # the first one reads only the row groups holding its values (DuckDB skips the
        # others by their min/max).
        order = f" ORDER BY {', '.join(['tenant', 'creator', 't'] if self.tenant else names)}"
        columns_ = [*names, *cols.counts(), *cols.names()]
        return (
            f"INSERT INTO {self.table} ({', '.join(columns_)}) "
            f"SELECT {', '.join(select)} FROM (SELECT {', '.join(inner)} "
            f"FROM {TABLES[family]} "
            f"WHERE timestamp >= {_ts(t0)} AND timestamp < {_ts(t1)} "
            f"AND {_member(type_column, [literal(t, 'duckdb') for t in cols.types], 'duckdb')}"
            f") AS r GROUP BY {', '.join(names)}{order}"
        )


@dataclass(frozen=True)
class RowsCopy:
    """A creator family's raw rows (the columns queries read), copied segment by segment
    and sorted within each one, so a query narrowed to one key reads the few row groups
    holding it (DuckDB skips the others by their min/max). The kinds below say which key."""

    name: str
    family: str

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.family not in CREATOR_FAMILIES:
            raise ValueError(f"aggregates.{self.name}.family: {self.family!r} has no tenants")

    @property
    def table(self) -> str:
        return AGG_PREFIX + self.name

    @property
    def tenant(self) -> bool:
        return True

    def sort_columns(self) -> tuple[str, ...]:
        raise NotImplementedError  # each kind names its key

    def ddl(self, raw_types: dict[str, str]) -> str:
        cols = ", ".join(f"{c} {raw_types[c]}" for c in raw_columns(self.family))
        return f"CREATE TABLE {self.table} ({cols})"

    def signature(self, raw_types: dict[str, str]) -> str:
        return _digest(self.ddl(raw_types) + self._signature_suffix())

    def _signature_suffix(self) -> str:
        return "|sorted=" + ",".join(self.sort_columns())

    def build_sql(self, t0: datetime, t1: datetime, unit: str) -> str:
        """Copy the raw rows of ``[t0, t1)``, each ``unit`` sorted by the kind's key."""
        cols = ", ".join(raw_columns(self.family))
        order = ", ".join(self.sort_columns())
        return (
            f"INSERT INTO {self.table} ({cols}) SELECT {cols} FROM {TABLES[self.family]} "
            f"WHERE timestamp >= {_ts(t0)} AND timestamp < {_ts(t1)} "
            f"ORDER BY date_trunc('{unit}', timestamp), {order}, timestamp"
        )


@dataclass(frozen=True)
class TenantRows(RowsCopy):
    """A creator family's raw rows sorted by tenant within each segment: a creator's
    query, whatever it asks, reads only that creator's slice.

    >>> TenantRows("rows", "content").table
    'edgemetrics_agg_rows'
    """

    def sort_columns(self) -> tuple[str, ...]:
        return (TENANT_COLUMN, col(self.family, "creator_id"))

    def _signature_suffix(self) -> str:
        return ""  # the first kind: tables built before SortedRows keep their signature


@dataclass(frozen=True)
class SortedRows(RowsCopy):
    """A creator family's raw rows sorted by ``by`` (dimensions) within each segment: a
    question narrowed to a few values of the first (an ``eq``/``in`` filter), whatever
    else it asks (any dimension, filter or quantile), reads the row groups holding those
    values in each segment instead of every row of the range. ``by=("content",)`` serves
    an item's page; ``("country", ...)`` lists under a country filter. The platform owner
    reads them; a creator reads its :class:`TenantRows`.

    >>> SortedRows("items", "content", ("content",)).sort_columns()
    ('blob2',)
    >>> SortedRows("x", "content", ("job_name",))
    Traceback (most recent call last):
    ...
    ValueError: aggregates.x.by: 'job_name' is not a dimension of content [applicable]
    """

    by: tuple[str, ...] = ("content",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.by:
            raise ValueError(f"aggregates.{self.name}.by: at least one dimension [min_items]")
        for d in self.by:
            if d not in DIMENSIONS or self.family not in DIMENSIONS[d].fields:
                raise ValueError(
                    f"aggregates.{self.name}.by: {d!r} is not a dimension of {self.family} "
                    "[applicable]"
                )

    def sort_columns(self) -> tuple[str, ...]:
        return tuple(DIMENSIONS[d].column(self.family) for d in self.by)


Spec = AggregateSpec | RowsCopy


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_AUDIENCE = ("content_type", "country", "device_class", "authenticated")

# The dashboard's questions. Owner: totals and days under any of its audience filters
# (hourly, so a range starting at an odd hour reads little raw data), one breakdown each
# under those filters, the per-item lists (alone, by device, by authenticated: a few
# values each), rows sorted by item (an item's page) and by country (lists under a country
# filter: items times countries are nearly as many as the rows); creators: their own rows.
DEFAULT_SPECS: tuple[Spec, ...] = (
    AggregateSpec("content_audience", "content", _AUDIENCE, grain="hour"),
    *(
        AggregateSpec(f"content_by_{d}", "content", (d, *_AUDIENCE))
        for d in ("city", "browser", "os", "referrer_source", "timezone")
    ),
    AggregateSpec("content_items", "content", ("content", "content_type")),
    *(
        AggregateSpec(f"content_items_by_{d}", "content", (d, "content", "content_type"))
        for d in ("device_class", "authenticated")
    ),
    TenantRows("content_tenant_rows", "content"),
    SortedRows("content_item_rows", "content", ("content",)),
    SortedRows("content_audience_rows", "content", ("country", "device_class", "authenticated")),
    AggregateSpec("commerce_sales", "commerce", ("currency", *_AUDIENCE)),
    AggregateSpec("commerce_items", "commerce", ("content", "content_type", "currency")),
    TenantRows("commerce_tenant_rows", "commerce"),
    AggregateSpec(
        "platform_health",
        "platform",
        ("endpoint", "status_class", "job_name", "queue", "operation", "service", "error_type"),
        grain="hour",
    ),
    AggregateSpec("pipeline_sources", "pipeline", ("source",), grain="hour"),
)


class _Rows(list[Any]):
    """A statement's rows, all fetched: DuckDB refuses new work on a cursor while a
    result is still pending, so nothing here leaves one behind."""

    def fetchall(self) -> list[Any]:
        return list(self)

    def fetchone(self) -> Any:
        return self[0] if self else None


def _sql(cur: Any, sql: str, params: Sequence[Any] | None = None) -> _Rows:
    return _Rows(cur.execute(sql, params or []).fetchall())


# --- time -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A stretch of time whose raw rows every table of the family holds."""

    t0: datetime
    t1: datetime
    n_rows: int
    ts_sum: int


@dataclass(frozen=True)
class Coverage:
    """A family's covered time, as one query's snapshot sees it."""

    start: datetime
    end: datetime
    cuts: tuple[datetime, ...]  # segment boundaries: where a daily spec's rows may be cut
    rows: int  # raw rows inside

    def span(self, start: datetime, end: datetime, grain: Grain) -> tuple[datetime, datetime]:
        """The largest ``[a, b)`` inside ``[start, end)`` that spec rows answer exactly
        (empty when ``a >= b``)."""
        lo, hi = max(start, self.start), min(end, self.end)
        if grain == "hour":
            return _ceil_hour(lo), _floor_hour(hi)
        i = bisect.bisect_left(self.cuts, lo)
        j = bisect.bisect_right(self.cuts, hi) - 1
        return (self.cuts[i] if i < len(self.cuts) else hi), (self.cuts[j] if j >= 0 else lo)


def _utc(t: Any) -> datetime:
    assert isinstance(t, datetime)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None)


def _floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(t: datetime) -> datetime:
    f = _floor_hour(t)
    return f if f == t else f + HOUR


def _floor_day(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _ts(t: datetime) -> str:
    return _time_sql(t, "duckdb")


# --- maintenance ----------------------------------------------------------------------------


@dataclass
class RefreshReport:
    """What one :meth:`Aggregates.refresh` did."""

    segments_built: int = 0
    segments_repaired: int = 0
    families: dict[str, int] = field(default_factory=dict)  # family -> segments built


class Aggregates:
    """The derived tables of one :class:`~edgemetrics.store.EmbeddedStore` (its owner).

    Creating one makes the tables (and starts a family over when one of its tables'
    columns changed); reading is safe at once, since a query uses only segments that still
    match the raw rows. :meth:`refresh` builds what is missing. ``settle_s``: how long
    after an hour ends it is built (later events are caught by the check and repaired);
    ``verify_every_s``: how often a refresh compares every segment's checksum with the raw
    rows even when the counts agree. ``branch_rows`` and ``row_group_rows`` feed the
    routing's estimate of the rows each way reads (a statement branch's fixed cost, and
    the rows a skipped or read row group holds); tests lower them to take the derived
    paths on a few rows.
    """

    def __init__(
        self,
        store: Any,
        specs: Sequence[Spec] = DEFAULT_SPECS,
        *,
        settle_s: float = 300.0,
        verify_every_s: float = 86_400.0,
        branch_rows: int = BRANCH_ROWS,
        row_group_rows: int = ROW_GROUP_ROWS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("aggregates: two specs share a name [unique]")
        for family in FAMILIES:
            if sum(isinstance(s, TenantRows) and s.family == family for s in specs) > 1:
                raise ValueError(f"aggregates: more than one TenantRows for {family} [unique]")
        self.store = store
        self.specs: tuple[Spec, ...] = tuple(specs)
        self.settle_s = settle_s
        self.verify_every_s = verify_every_s
        self.branch_rows = branch_rows
        self.row_group_rows = row_group_rows
        self.clock = clock
        self.families = tuple(f for f in FAMILIES if any(s.family == f for s in self.specs))
        self.sizes: dict[str, int] = {}
        self.drifts = 0  # queries that found a family's segments stale (and read raw rows)
        self._lock = threading.RLock()
        self._verified: dict[str, float] = {}
        self._wanted = threading.Event()
        # The segments of every family as of one generation of the state table.
        self._known: tuple[int, dict[str, list[Segment]]] = (-1, {})
        self._stop = threading.Event()
        self._local = threading.local()
        self._prepare()

    def specs_of(self, family: str) -> list[Spec]:
        return [s for s in self.specs if s.family == family]

    # -- tables -------------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        # The thread's own cursor, the one store.query/execute use: a caller's transaction
        # (retention deleting raw rows) covers what is done here too.
        cur: duckdb.DuckDBPyConnection = self.store._cursor()
        return cur

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A transaction on this thread's cursor of the store (the one ``store.execute``
        uses), or the one it is already in; yields the cursor."""
        with self._transaction() as cur:
            yield cur

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cur = self._cursor()
        # Nested (a build inside retention's delete): the outer one commits. Tracked here,
        # since a BEGIN that fails inside a transaction would abort it.
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            if depth:
                yield cur
                return
            _sql(cur, "BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                _sql(cur, "ROLLBACK")
                raise
            _sql(cur, "COMMIT")
        finally:
            self._local.depth = depth

    def _raw_types(self, cur: duckdb.DuckDBPyConnection, family: str) -> dict[str, str]:
        rows = _sql(
            cur,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? AND table_schema = current_schema()",
            [TABLES[family]],
        ).fetchall()
        return {str(name): str(kind) for name, kind in rows}

    def _prepare(self) -> None:
        with self._lock, self._transaction() as cur:
            _sql(
                cur,
                f"CREATE TABLE IF NOT EXISTS {SPECS_TABLE} (name VARCHAR PRIMARY KEY, "
                "family VARCHAR NOT NULL, signature VARCHAR NOT NULL)",
            )
            _sql(
                cur,
                f"CREATE TABLE IF NOT EXISTS {SEGMENTS_TABLE} (family VARCHAR NOT NULL, "
                "t0 TIMESTAMP NOT NULL, t1 TIMESTAMP NOT NULL, n_rows BIGINT NOT NULL, "
                "ts_sum HUGEINT NOT NULL, built_at TIMESTAMP NOT NULL)",
            )
            _sql(cur, f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (generation BIGINT NOT NULL)")
            if not _sql(cur, f"SELECT count(*) FROM {STATE_TABLE}").fetchall()[0][0]:
                _sql(cur, f"INSERT INTO {STATE_TABLE} VALUES (0)")
            self._bump(cur)
            known = {
                str(r[0]): (str(r[1]), str(r[2]))
                for r in _sql(cur, f"SELECT name, family, signature FROM {SPECS_TABLE}").fetchall()
            }
            types = {f: self._raw_types(cur, f) for f in self.families}
            wanted = {s.name: s for s in self.specs}
            stale: set[str] = set()
            for name, (family, signature) in known.items():
                spec = wanted.get(name)
                if (
                    spec is None
                    or spec.family != family
                    or spec.signature(types[family]) != signature
                ):
                    _sql(cur, f"DROP TABLE IF EXISTS {AGG_PREFIX}{name}")
                    _sql(cur, f"DELETE FROM {SPECS_TABLE} WHERE name = ?", [name])
                    if spec is not None:
                        stale.add(spec.family)
            for spec in self.specs:
                if spec.name in known and spec.family not in stale:
                    continue
                _sql(cur, f"DROP TABLE IF EXISTS {spec.table}")
                raw_types = types[spec.family]
                _sql(cur, spec.ddl(raw_types) if isinstance(spec, RowsCopy) else spec.ddl())
                _sql(
                    cur,
                    f"INSERT OR REPLACE INTO {SPECS_TABLE} VALUES (?, ?, ?)",
                    [spec.name, spec.family, spec.signature(raw_types)],
                )
                stale.add(spec.family)
            # A family with a new or changed table starts over: each table holds each segment.
            for family in stale:
                for spec in self.specs_of(family):
                    _sql(cur, f"DELETE FROM {spec.table}")
                _sql(cur, f"DELETE FROM {SEGMENTS_TABLE} WHERE family = ?", [family])
        self._measure()

    @staticmethod
    def _bump(cur: duckdb.DuckDBPyConnection) -> None:
        _sql(cur, f"UPDATE {STATE_TABLE} SET generation = generation + 1")

    def _measure(self) -> None:
        cur = self._cursor()
        for spec in self.specs:
            row = _sql(cur, f"SELECT count(*) FROM {spec.table}").fetchone()
            self.sizes[spec.name] = int(row[0]) if row else 0

    def segments(self, family: str) -> list[Segment]:
        """The family's segments, oldest first."""
        where = f"family = {literal(family, 'duckdb')}"
        return self._segments(self._cursor(), where).get(family, [])

    @staticmethod
    def _segments(cur: Any, where: str = "true") -> dict[str, list[Segment]]:
        out: dict[str, list[Segment]] = {}
        for family, t0, t1, n_rows, ts_sum in _sql(
            cur,
            f"SELECT family, t0, t1, n_rows, ts_sum FROM {SEGMENTS_TABLE} WHERE {where} "
            "ORDER BY family, t0",
        ).fetchall():
            segment = Segment(_utc(t0), _utc(t1), int(n_rows), int(ts_sum))
            out.setdefault(str(family), []).append(segment)
        return out

    def known_segments(self, generation: int, cur: Any) -> dict[str, list[Segment]]:
        """Every family's segments at ``generation``, read through ``cur`` (a cursor in a
        snapshot that saw that generation) unless this process knows them already."""
        held = self._known
        if held[0] == generation:
            return held[1]
        segs = self._segments(cur)
        if generation > self._known[0]:
            self._known = (generation, segs)
        return segs

    # -- maintenance ----------------------------------------------------------------------------

    def request_refresh(self) -> None:
        """Ask the maintenance thread to run soon (a query found stale segments)."""
        self._wanted.set()

    def wait_requested(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for :meth:`request_refresh`; clears the request."""
        asked = self._wanted.wait(timeout)
        self._wanted.clear()
        return asked

    def refresh(
        self, now: datetime | None = None, *, stop: threading.Event | None = None
    ) -> RefreshReport:
        """Repair segments whose raw rows changed, build every settled hour not built yet
        (whole settled days at once), and replace each finished day's hours by the day.

        Each segment is one transaction: an interrupted run (``stop`` set, a crash)
        resumes where it stopped.
        """
        moment = (now or self.clock()).astimezone(UTC)
        settled = _floor_hour(moment - timedelta(seconds=self.settle_s))
        report = RefreshReport()
        with self._lock:
            self._stop = stop or threading.Event()
            for family in self.families:
                if self._stop.is_set():
                    break
                before = report.segments_built
                self._refresh_family(family, settled, report)
                report.families[family] = report.segments_built - before
            self._measure()
        return report

    def _one(self, sql: str) -> tuple[Any, ...]:
        row = _sql(self._cursor(), sql).fetchone()
        assert row is not None
        return tuple(row)

    def _refresh_family(self, family: str, settled: datetime, report: RefreshReport) -> None:
        table = TABLES[family]
        segs = self.segments(family)
        if segs:
            start, end = segs[0].t0, segs[-1].t1
            total, head, tail = self._one(
                f"SELECT (SELECT count(*) FROM {table}), "
                f"(SELECT count(*) FROM {table} WHERE timestamp < {_ts(start)}), "
                f"(SELECT count(*) FROM {table} WHERE timestamp >= {_ts(end)})"
            )
            # The first refresh of a process verifies too: the file may have been changed
            # by another program (privacy erasure) while no one kept it.
            last = self._verified.get(family)
            due = last is None or time.monotonic() - last >= self.verify_every_s
            if total - head - tail != sum(s.n_rows for s in segs) or due:
                self._repair(family, segs, settled, report)
                self._verified[family] = time.monotonic()
            if head:
                # Rows older than anything covered arrived: cover back to their day.
                (first,) = self._one(
                    f"SELECT min(timestamp) FROM {table} WHERE timestamp < {_ts(start)}"
                )
                self._fill(family, _floor_day(_utc(first)), start, settled, report)
        else:
            (first,) = self._one(f"SELECT min(timestamp) FROM {table}")
            if first is None:
                return
            end = _floor_day(_utc(first))
        self._fill(family, end, settled, settled, report)
        hourly_days = {_floor_day(s.t0) for s in self.segments(family) if s.t1 - s.t0 == HOUR}
        for day in sorted(hourly_days):
            if day + DAY <= settled and not self._stop.is_set():
                self._build(family, day, day + DAY, DAY, replacing=True)
                report.segments_built += 1

    def _fill(
        self, family: str, start: datetime, stop: datetime, settled: datetime, report: RefreshReport
    ) -> None:
        """Cover ``[start, stop)``: whole settled days as days, the rest hour by hour, and a
        stretch of whole days without rows as one empty segment. Runs of days (or hours)
        are built together, up to :data:`BATCH_ROWS` raw rows per transaction."""
        if start >= stop:
            return
        hours = {
            _utc(h): int(n)
            for h, n in _sql(
                self._cursor(),
                f"SELECT date_trunc('hour', timestamp), count(*) FROM {TABLES[family]} "
                f"WHERE timestamp >= {_ts(start)} AND timestamp < {_ts(stop)} GROUP BY 1",
            )
        }
        busy = sorted(hours)
        units: list[tuple[datetime, datetime, int]] = []
        t = start
        while t < stop:
            if t == _floor_day(t):
                i = bisect.bisect_left(busy, t)
                quiet = _floor_day(busy[i]) if i < len(busy) else _floor_day(stop)
                if quiet - t >= DAY:
                    units.append((t, quiet, 0))
                    t = quiet
                    continue
            step = DAY if t == _floor_day(t) and t + DAY <= min(settled, stop) else HOUR
            lo, hi = bisect.bisect_left(busy, t), bisect.bisect_left(busy, t + step)
            units.append((t, t + step, sum(hours[h] for h in busy[lo:hi])))
            t += step
        batch: list[tuple[datetime, datetime, int]] = []

        def flush() -> None:
            if not batch or self._stop.is_set():
                return
            t0, t1 = batch[0][0], batch[-1][1]
            length = batch[0][1] - batch[0][0]
            if length in (HOUR, DAY):
                self._build(family, t0, t1, length)
            elif not self._build_empty(family, t0, t1):
                self._fill(family, t0, t1, settled, report)  # rows arrived meanwhile
                return
            report.segments_built += len(batch)
            batch.clear()

        for unit in units:
            length = unit[1] - unit[0]
            if batch and (
                length != batch[0][1] - batch[0][0]
                or length not in (HOUR, DAY)
                or sum(u[2] for u in batch) + unit[2] > BATCH_ROWS
                or len(batch) >= 31
            ):
                flush()
                batch.clear()
            batch.append(unit)
        flush()

    def _repair(
        self, family: str, segs: list[Segment], settled: datetime, report: RefreshReport
    ) -> None:
        """Rebuild the segments whose raw rows no longer add up to what they hold."""
        starts = [s.t0 for s in segs]
        seen: dict[int, list[int]] = {}
        rows = _sql(
            self._cursor(),
            f"SELECT date_trunc('hour', timestamp) AS h, count(*), sum(epoch_ms(timestamp)) "
            f"FROM {TABLES[family]} WHERE timestamp >= {_ts(segs[0].t0)} "
            f"AND timestamp < {_ts(segs[-1].t1)} GROUP BY h",
        ).fetchall()
        for hour, n, ts_sum in rows:
            acc = seen.setdefault(bisect.bisect_right(starts, _utc(hour)) - 1, [0, 0])
            acc[0] += int(n)
            acc[1] += int(ts_sum)
        for i, seg in enumerate(segs):
            if tuple(seen.get(i, [0, 0])) == (seg.n_rows, seg.ts_sum):
                continue
            log.info(
                "edgemetrics: raw rows of %s %s..%s changed; rebuilding its aggregates",
                family,
                seg.t0.isoformat(),
                seg.t1.isoformat(),
            )
            report.segments_repaired += 1
            if seg.t1 - seg.t0 in (HOUR, DAY):
                self._build(family, seg.t0, seg.t1, seg.t1 - seg.t0, replacing=True)
                continue
            # A stretch built empty got rows: cover it again, day by day and hour by hour.
            with self._transaction() as cur:
                _sql(
                    cur,
                    f"DELETE FROM {SEGMENTS_TABLE} WHERE family = ? AND t0 = ?",
                    [family, _naive(seg.t0)],
                )
                self._bump(cur)
            self._fill(family, seg.t0, seg.t1, settled, report)

    def _build(
        self, family: str, t0: datetime, t1: datetime, unit: timedelta, *, replacing: bool = False
    ) -> None:
        """Make each ``unit`` (an hour or a day) of ``[t0, t1)`` a segment holding exactly the
        raw rows of this snapshot, in one transaction; ``replacing``: drop what the tables
        hold there first."""
        trunc = "hour" if unit == HOUR else "day"
        where = f"timestamp >= {_ts(t0)} AND timestamp < {_ts(t1)}"
        with self._transaction() as cur:
            counts = {
                _utc(u): (int(n), int(ts_sum))
                for u, n, ts_sum in _sql(
                    cur,
                    f"SELECT date_trunc('{trunc}', timestamp), count(*), "
                    f"sum(epoch_ms(timestamp)) FROM {TABLES[family]} WHERE {where} GROUP BY 1",
                )
            }
            for spec in self.specs_of(family):
                column = "timestamp" if isinstance(spec, RowsCopy) else "t"
                if replacing:
                    _sql(
                        cur,
                        f"DELETE FROM {spec.table} WHERE {column} >= {_ts(t0)} "
                        f"AND {column} < {_ts(t1)}",
                    )
                if not counts:
                    continue
                if isinstance(spec, RowsCopy):
                    _sql(cur, spec.build_sql(t0, t1, trunc))
                else:
                    _sql(cur, spec.build_sql(t0, t1, "hour" if spec.grain == "hour" else trunc))
            rows = []
            t = t0
            while t < t1:
                n, ts_sum = counts.get(t, (0, 0))
                rows.append((t, t + unit, n, ts_sum))
                t += unit
            self._record(cur, family, t0, t1, rows)

    def _build_empty(self, family: str, t0: datetime, t1: datetime) -> bool:
        """Make ``[t0, t1)``, whole days without rows, one empty segment; False if rows
        arrived meanwhile."""
        with self._transaction() as cur:
            (n,) = _sql(
                cur,
                f"SELECT count(*) FROM {TABLES[family]} "
                f"WHERE timestamp >= {_ts(t0)} AND timestamp < {_ts(t1)}",
            )[0]
            if n:
                return False
            self._record(cur, family, t0, t1, [(t0, t1, 0, 0)])
        return True

    def _record(
        self,
        cur: Any,
        family: str,
        t0: datetime,
        t1: datetime,
        rows: list[tuple[datetime, datetime, int, int]],
    ) -> None:
        """Replace the segments overlapping ``[t0, t1)`` by ``rows``."""
        _sql(
            cur,
            f"DELETE FROM {SEGMENTS_TABLE} WHERE family = ? AND t0 < ? AND t1 > ?",
            [family, _naive(t1), _naive(t0)],
        )
        built = _ts(datetime.now(UTC))
        values = ", ".join(
            f"({literal(family, 'duckdb')}, {_ts(a)}, {_ts(b)}, {n}, {ts_sum}, {built})"
            for a, b, n, ts_sum in rows
        )
        _sql(cur, f"INSERT INTO {SEGMENTS_TABLE} VALUES {values}")
        self._bump(cur)

    def trim(self, family: str, cutoff: datetime) -> None:
        """Follow the deletion of a family's raw rows older than ``cutoff`` (retention): drop
        the segments before it and rebuild the one it cuts. Call it inside the transaction
        that deleted the rows, so no query sees one without the other."""
        cutoff = cutoff.astimezone(UTC)
        with self._lock:
            segs = self.segments(family)
            gone = [s for s in segs if s.t1 <= cutoff]
            with self._transaction() as cur:
                if gone:
                    bound = _ts(gone[-1].t1)
                    for spec in self.specs_of(family):
                        column = "timestamp" if isinstance(spec, RowsCopy) else "t"
                        _sql(cur, f"DELETE FROM {spec.table} WHERE {column} < {bound}")
                    _sql(
                        cur,
                        f"DELETE FROM {SEGMENTS_TABLE} WHERE family = ? AND t1 <= ?",
                        [family, _naive(gone[-1].t1)],
                    )
                    self._bump(cur)
                for s in segs:
                    # An empty stretch stays empty; a cut hour or day is built again.
                    if s.t0 < cutoff < s.t1 and s.n_rows:
                        self._build(family, s.t0, s.t1, s.t1 - s.t0, replacing=True)

    # -- reading ------------------------------------------------------------------------------

    def reader(self, cursor: Any) -> AggregateReader:
        """A reader for one query; ``cursor`` runs its SQL inside the query's snapshot."""
        return AggregateReader(self, cursor)


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """How one part is read: a whole statement over a spec's rows (``sql``), or the raw
    compiler's statement over a tenant-rows source (``source``, a ``FROM`` item)."""

    spec: Spec
    reads_raw: bool
    sql: str | None = None
    source: str | None = None


class AggregateReader:
    """Routes one query's parts to derived tables, inside the query's snapshot."""

    def __init__(self, aggregates: Aggregates, cursor: Any) -> None:
        self.aggregates = aggregates
        self.cursor = cursor
        self._coverage: dict[str, Coverage | None] = {}

    def prepare(self, families: Sequence[str]) -> None:
        """Check the families' segments against the raw rows: one statement, when the
        segments this process knows are the snapshot's (the usual case)."""
        wanted = [
            f
            for f in dict.fromkeys(families)
            if f in self.aggregates.families and f not in self._coverage
        ]
        if not wanted:
            return
        generation, segs = self.aggregates._known
        while True:
            terms = [f"(SELECT generation FROM {STATE_TABLE})"]
            for f in wanted:
                table, run = TABLES[f], segs.get(f, [])
                terms.append(f"(SELECT count(*) FROM {table})")
                if run:
                    terms.append(
                        f"(SELECT count(*) FROM {table} WHERE timestamp >= {_ts(run[-1].t1)})"
                    )
            row = _sql(self.cursor, f"SELECT {', '.join(terms)}").fetchone()
            if int(row[0]) == generation:
                break
            # Maintenance committed since: read this snapshot's segments, count again.
            generation = int(row[0])
            segs = self.aggregates.known_segments(generation, self.cursor)
        values = iter(row[1:])
        for f in wanted:
            run = segs.get(f, [])
            total = int(next(values))
            if not run:
                self._coverage[f] = None
                continue
            # Every row before the end of covered time must be in a segment: a late row
            # older than the first segment fails this too (and refresh covers back to it).
            inside = total - int(next(values))
            contiguous = all(a.t1 == b.t0 for a, b in pairwise(run))
            if contiguous and inside == sum(s.n_rows for s in run):
                cuts = (*(s.t0 for s in run), run[-1].t1)
                self._coverage[f] = Coverage(run[0].t0, run[-1].t1, cuts, inside)
            else:
                self._coverage[f] = None
                self.aggregates.drifts += 1
                self.aggregates.request_refresh()

    def coverage(self, family: str) -> Coverage | None:
        """The family's covered time, or None if there is none or its raw rows changed."""
        self.prepare([family])
        return self._coverage.get(family)

    def route(
        self,
        part: SqlPart,
        query: Query,
        principal: Principal,
        start: datetime,
        end: datetime,
    ) -> Route | None:
        """How to read ``part`` over ``[start, end)``, or None for raw rows only."""
        sums = self._sums(part, query, principal, start, end)
        if principal.role == "owner":
            # The owner: a sum spec or sorted rows, whichever reads fewer rows.
            options = [o for o in (sums, self._sorted(part, query, start, end)) if o is not None]
            return min(options, key=lambda o: o[0])[1] if options else None
        if sums is not None:
            return sums[1]
        rows = next(
            (s for s in self.aggregates.specs_of(part.family) if isinstance(s, TenantRows)), None
        )
        coverage = self.coverage(part.family) if rows is not None else None
        if rows is None or coverage is None or coverage.start >= end or coverage.end <= start:
            return None
        return Route(rows, end > coverage.end, source=_rows_source(rows, coverage))

    def _sorted(
        self, part: SqlPart, query: Query, start: datetime, end: datetime
    ) -> tuple[float, Route] | None:
        """The sorted rows for a part narrowed to a few values of their first key, with
        the rows they are expected to read, if fewer than the raw rows of the range."""
        copies = [s for s in self.aggregates.specs_of(part.family) if isinstance(s, SortedRows)]
        coverage = self.coverage(part.family) if copies else None
        if coverage is None or coverage.start >= end or coverage.end <= start:
            return None
        lo, hi = max(start, coverage.start), min(end, coverage.end)
        covered = (coverage.end - coverage.start).total_seconds()
        in_range = coverage.rows * max((hi - lo).total_seconds(), 0.0) / covered
        cuts = coverage.cuts
        segments = bisect.bisect_left(cuts, hi) - bisect.bisect_right(cuts, lo) + 1
        best: tuple[float, Route] | None = None
        for rows in copies:
            counts = [
                len(f.values)
                for f in query.filters
                if f.dimension == rows.by[0] and f.op in ("eq", "in")
            ]
            if not counts:
                continue
            # Each segment is sorted by the key: a value's rows in it lie in a row group or
            # two, and DuckDB skips the others by their min/max.
            read = min(in_range, segments * min(counts) * self.aggregates.row_group_rows)
            cost = read + self.aggregates.branch_rows * 2
            if cost < in_range + self.aggregates.branch_rows and (best is None or cost < best[0]):
                best = cost, Route(rows, end > coverage.end, source=_rows_source(rows, coverage))
        return best

    def _fits(self, part: SqlPart, query: Query, principal: Principal) -> list[AggregateSpec]:
        """The sum specs holding every dimension the part groups or filters by, readable by
        ``principal`` (a creator: only specs that keep the tenant)."""
        if part.quantile is not None:
            return []
        if query.bucket is not None and query.tz != "UTC":
            return []  # local calendar days do not fall on UTC hours everywhere
        needed = {k for k in part.keys if k != "bucket"} | {f.dimension for f in query.filters}
        return [
            s
            for s in self.aggregates.specs_of(part.family)
            if isinstance(s, AggregateSpec)
            and s.holds(needed)
            and (principal.role == "owner" or s.tenant)
            and (query.bucket != "hour" or s.grain == "hour")
        ]

    def _sums(
        self,
        part: SqlPart,
        query: Query,
        principal: Principal,
        start: datetime,
        end: datetime,
    ) -> tuple[float, Route] | None:
        """One statement answering ``part`` from a sum spec's rows and the raw rows around
        them (sorted and paged as the part says), with the rows it is expected to read,
        or None.

        Of the specs that fit, the one expected to read the fewest rows: its own rows in
        the span it answers, plus the raw rows of the edges it leaves (a daily spec leaves
        up to a day at each end of a range that does not start at midnight)."""
        fits = self._fits(part, query, principal)
        coverage = self.coverage(part.family) if fits else None
        if coverage is None:
            return None
        lo, hi = max(start, coverage.start), min(end, coverage.end)
        covered = (coverage.end - coverage.start).total_seconds()
        per_second = coverage.rows / covered
        # Rows after covered time are read either way; nothing lies before it (the check).
        best: tuple[float, AggregateSpec, datetime, datetime] | None = None
        for spec in fits:
            a, b = coverage.span(start, end, spec.grain)
            if a >= b:
                continue
            own = self.aggregates.sizes.get(spec.name, 0) * (b - a).total_seconds() / covered
            edges = (a - lo).total_seconds() + (hi - b).total_seconds()
            raw_branch = edges > 0 or end > coverage.end
            cost = own + per_second * edges + self.aggregates.branch_rows * (1 + raw_branch)
            if best is None or cost < best[0]:
                best = (cost, spec, a, b)
        all_raw = per_second * max((hi - lo).total_seconds(), 0.0) + self.aggregates.branch_rows
        if best is None or best[0] >= all_raw:
            return None
        cost, spec, a, b = best
        select = _spec_select(spec, part, query, principal, a, b)
        if lo >= a and end <= b:
            return cost, Route(spec, False, sql=select + order_sql(part, "duckdb"))
        # One raw branch for both edges and the tail: [lo, end) but not [a, b).
        bare = replace(part, order=(), limit=None, offset=0)
        rest = compile_part(
            bare, "duckdb", query, principal, lo, end, grouped_by_type=False, outside=(a, b)
        )
        keys = [f"d{i}" for i in range(len(part.keys))]
        totals = ["sum(_rows) AS _rows", "max(_maxsi) AS _maxsi"]
        for i in range(len(part.components)):
            totals += [f"sum(s{i}) AS s{i}", f"sum(v{i}) AS v{i}"]
        totals += [f"sum(c{k}) AS c{k}" for k in range(len(part.covariances))]
        sql = f"SELECT {', '.join(keys + totals)} FROM (({select}) UNION ALL BY NAME ({rest})) AS u"
        if keys:
            sql += f" GROUP BY {', '.join(keys)}"
        if part.order or part.limit is not None:
            # ORDER BY must see the totals, not the branches' columns of the same names.
            sql = f"SELECT * FROM ({sql}) AS g{order_sql(part, 'duckdb')}"
        return cost, Route(spec, True, sql=sql)


def _rows_source(rows: RowsCopy, coverage: Coverage) -> str:
    """A ``FROM`` item with the raw table's columns: the copy holds every row before the
    end of covered time (the check says so), the raw table the rest."""
    cols = ", ".join(raw_columns(rows.family))
    return (
        f"(SELECT {cols} FROM {rows.table} UNION ALL SELECT {cols} "
        f"FROM {TABLES[rows.family]} WHERE timestamp >= {_ts(coverage.end)}) AS r"
    )


def _spec_select(
    spec: AggregateSpec,
    part: SqlPart,
    query: Query,
    principal: Principal,
    a: datetime,
    b: datetime,
) -> str:
    """The part's columns (``d0``.., ``_rows``, ``_maxsi``, ``s0``, ``v0``.., ``c0``..) from the
    spec's rows of ``[a, b)``, with the same tenancy and filters as on raw rows."""
    keys = []
    for i, name in enumerate(part.keys):
        if name == "bucket":
            assert query.bucket is not None
            keys.append(f"epoch(date_trunc('{query.bucket}', t)) AS d{i}")
        else:
            keys.append(f"{name} AS d{i}")

    cols = family_columns(part.family)

    def plus(names: Sequence[str]) -> str:
        return " + ".join(names) if len(names) > 1 else names[0]

    def status(*cs: Component) -> str | None:
        least = [c.min_status_class for c in cs if c.min_status_class is not None]
        return f"status_class >= {max(least)}" if least else None

    def total(value: str, where: str | None) -> str:
        return f"sum({value})" + (f" FILTER (WHERE {where})" if where else "")

    types = part.types
    maxsi = cols.m(types[0]) if len(types) == 1 else f"greatest({', '.join(map(cols.m, types))})"
    select = [*keys, f"sum({plus([cols.n(t) for t in types])}) AS _rows", f"max({maxsi}) AS _maxsi"]
    for i, c in enumerate(part.components):
        where = status(c)
        select.append(f"{total(plus([cols.s(c.expr, t) for t in c.types]), where)} AS s{i}")
        select.append(f"{total(plus([cols.q(c.expr, t) for t in c.types]), where)} AS v{i}")
    for k, (ia, ib) in enumerate(part.covariances):
        ca, cb = part.components[ia], part.components[ib]
        both = [t for t in ca.types if t in cb.types]
        value = plus([cols.c(ca.expr, cb.expr, t) for t in both]) if both else "0.0"
        select.append(f"{total(value, status(ca, cb))} AS c{k}")
    conds = [
        f"t >= {_ts(a)}",
        f"t < {_ts(b)}",
        # A row holding none of the part's types is not one of its rows.
        f"{plus([cols.n(t) for t in types])} > 0",
    ]
    tenancy = principal_sql(principal, part.family, "duckdb", tenant="tenant", creator="creator")
    if tenancy is not None:
        assert spec.tenant, "a creator reads only specs that keep the tenant"
        conds.append(tenancy)
    conds += [filter_sql(f, part.family, "duckdb", column=f.dimension) for f in query.filters]
    sql = f"SELECT {', '.join(select)} FROM {spec.table} WHERE {' AND '.join(conds)}"
    if part.keys:
        sql += " GROUP BY " + ", ".join(f"d{i}" for i in range(len(part.keys)))
    return sql
