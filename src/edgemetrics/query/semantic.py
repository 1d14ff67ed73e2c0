"""The semantic layer: the only metrics and dimensions a query may name, mapped onto AE columns.

Every identifier that reaches SQL comes from here; nothing a caller passes is ever spliced
into SQL except as an escaped literal. Columns come from :func:`edgemetrics.layout.columns`.

A metric is built from *components*: weighted sums ``sum(e * _sample_interval)`` of a
per-row expression ``e`` over rows of some event types. Sums add up across sampling, across
SQL statements and across daily rollups; ratios and differences are computed from them, and
so is the variance behind each confidence interval (see :mod:`edgemetrics.query.result`).
Quantiles are the exception: ``quantileExactWeighted`` over raw rows only.

>>> METRICS["completion_rate"].kind, METRICS["completion_rate"].family
('ratio', 'content')
>>> DIMENSIONS["country"].column("commerce")
'blob7'
>>> sorted(m for m in METRICS if METRICS[m].owner_only)[:3]
['api_calls', 'api_errors', 'api_rows']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edgemetrics.layout import columns
from edgemetrics.store import DATASETS

FAMILIES: tuple[str, ...] = ("content", "commerce", "platform", "pipeline")
TABLES: dict[str, str] = dict(zip(FAMILIES, DATASETS, strict=True))
# The families a creator may read; the others are platform health, for the owner only.
CREATOR_FAMILIES: frozenset[str] = frozenset({"content", "commerce"})
# Content and commerce are indexed by the creator id (see layout.py): the tenancy key.
TENANT_COLUMN = "index1"


def col(family: str, field_name: str) -> str:
    return columns(family)[field_name]


# --- dimensions ---------------------------------------------------------------------------

DimKind = Literal["blob", "index", "bool", "status_class"]


@dataclass(frozen=True)
class Dimension:
    """A grouping key. ``kind`` says how its value is read and how a filter value is parsed."""

    name: str
    kind: DimKind
    fields: dict[str, str]  # family -> field name (or "index1")
    description: str

    def column(self, family: str) -> str:
        if self.kind == "index":
            return "index1"
        return col(family, self.fields[family])

    def families(self) -> frozenset[str]:
        return frozenset(self.fields)


_AUDIENCE = ("content", "commerce")


def _blob(name: str, field_name: str, families: tuple[str, ...], description: str) -> Dimension:
    return Dimension(name, "blob", {f: field_name for f in families}, description)


DIMENSIONS: dict[str, Dimension] = {
    d.name: d
    for d in (
        _blob("content", "content_id", _AUDIENCE, "content id"),
        _blob("content_type", "content_type", _AUDIENCE, "video, audio or post"),
        _blob("creator", "creator_id", _AUDIENCE, "creator id"),
        _blob("country", "country", _AUDIENCE, "ISO country code"),
        _blob("city", "city", _AUDIENCE, "city name"),
        _blob("device_class", "device_class", _AUDIENCE, "desktop, mobile, tablet, tv, bot"),
        _blob("browser", "browser", _AUDIENCE, "browser family"),
        _blob("os", "os", _AUDIENCE, "operating system family"),
        _blob("referrer_source", "referrer_source", _AUDIENCE, "referrer source"),
        _blob("timezone", "timezone", _AUDIENCE, "the viewer's IANA time zone"),
        _blob("currency", "currency", ("commerce",), "ISO 4217 currency"),
        Dimension(
            "authenticated",
            "bool",
            {f: "authenticated" for f in ("content", "commerce", "platform")},
            "'authenticated' or 'anonymous'",
        ),
        Dimension("endpoint", "index", {"platform": "index1"}, "service METHOD route"),
        Dimension("status_class", "status_class", {"platform": "status_code"}, "2xx .. 5xx"),
        _blob("job_name", "job_name", ("platform",), "background job name"),
        _blob("service", "service", ("platform",), "service name"),
        _blob("queue", "queue", ("platform",), "queue name"),
        _blob("operation", "operation", ("platform",), "SQL statement kind"),
        _blob("error_type", "error_type", ("platform",), "exception class"),
        _blob("source", "source", ("pipeline",), "pipeline source"),
    )
}

BOOL_LABELS = {1: "authenticated", 0: "anonymous"}
STATUS_CLASSES = {"1xx": 1, "2xx": 2, "3xx": 3, "4xx": 4, "5xx": 5}


def parse_filter_value(dim: Dimension, value: str) -> str | int:
    """A filter value as the column holds it: text for blobs, a number for derived keys.

    >>> parse_filter_value(DIMENSIONS["status_class"], "5xx")
    5
    """
    if dim.kind == "bool":
        for number, label in BOOL_LABELS.items():
            if value == label:
                return number
        raise ValueError(
            f"filters.{dim.name}.value: {value!r} is not one of "
            f"{sorted(BOOL_LABELS.values())} [enum]"
        )
    if dim.kind == "status_class":
        if value not in STATUS_CLASSES:
            raise ValueError(
                f"filters.{dim.name}.value: {value!r} is not one of {sorted(STATUS_CLASSES)} [enum]"
            )
        return STATUS_CLASSES[value]
    return value


def label(dim: Dimension, raw: object) -> str:
    """The display value of a dimension read back from SQL."""
    if dim.kind == "bool":
        return BOOL_LABELS[1 if raw and float(raw) > 0 else 0]  # type: ignore[arg-type]
    if dim.kind == "status_class":
        return f"{int(float(raw))}xx"  # type: ignore[arg-type]
    return "" if raw is None else str(raw)


# --- row expressions and components -----------------------------------------------------


@dataclass(frozen=True)
class Expr:
    """A per-row number: ``1`` or a sum of double columns of one family."""

    family: str
    name: str
    fields: tuple[str, ...] = ()  # empty: the constant 1

    def sql(self) -> str:
        if not self.fields:
            return "1"
        cols = [col(self.family, f) for f in self.fields]
        return cols[0] if len(cols) == 1 else "(" + " + ".join(cols) + ")"


@dataclass(frozen=True)
class Component:
    """``sum(expr * _sample_interval)`` over rows whose type is in ``types`` (and, optionally,
    whose status class is at least ``min_status_class``)."""

    expr: Expr
    types: tuple[str, ...]
    min_status_class: int | None = None

    @property
    def family(self) -> str:
        return self.expr.family

    def overlaps(self, other: Component) -> bool:
        return self.family == other.family and bool(set(self.types) & set(other.types))


MetricKind = Literal["sum", "ratio", "difference", "quantile"]


@dataclass(frozen=True)
class Metric:
    name: str
    kind: MetricKind
    description: str
    component: Component | None = None  # sum
    parts: tuple[str, ...] = ()  # ratio: (numerator, denominator); difference: (a, b)
    level: float = 0.0  # quantile
    quantile_of: Expr | None = None
    quantile_types: tuple[str, ...] = ()
    requires: tuple[str, ...] = field(default=())  # dimensions the answer must be split by

    @property
    def families(self) -> frozenset[str]:
        if self.kind == "sum":
            assert self.component is not None
            return frozenset({self.component.family})
        if self.kind == "quantile":
            assert self.quantile_of is not None
            return frozenset({self.quantile_of.family})
        out: frozenset[str] = frozenset()
        for p in self.parts:
            out |= METRICS[p].families
        return out

    @property
    def family(self) -> str:
        fams = sorted(self.families)
        return fams[0] if len(fams) == 1 else "+".join(fams)

    @property
    def owner_only(self) -> bool:
        return not self.families <= CREATOR_FAMILIES

    def sum_components(self) -> list[Component]:
        if self.kind == "sum":
            assert self.component is not None
            return [self.component]
        out: list[Component] = []
        for p in self.parts:
            out.extend(METRICS[p].sum_components())
        return out


def _e(family: str, name: str, *fields: str) -> Expr:
    return Expr(family, name, tuple(fields))


ONE = {f: _e(f, "one") for f in FAMILIES}
EXPRS: dict[str, dict[str, Expr]] = {
    "content": {
        "one": ONE["content"],
        "unique_view": _e("content", "unique_view", "unique_view"),
        "new_visitor": _e("content", "new_visitor", "new_visitor"),
        "new_session": _e("content", "new_session", "new_session"),
        "watch_time": _e("content", "watch_time", "watch_time"),
        "position": _e("content", "position", "position"),
    },
    "commerce": {"one": ONE["commerce"], "amount": _e("commerce", "amount", "amount_minor")},
    "platform": {
        "one": ONE["platform"],
        "calls": _e("platform", "calls", "calls"),
        "duration": _e("platform", "duration", "duration_ms"),
        "delay": _e("platform", "delay", "delay_ms"),
    },
    "pipeline": {
        "one": ONE["pipeline"],
        "events_in": _e("pipeline", "events_in", "events_in"),
        "dropped": _e(
            "pipeline",
            "dropped",
            "dropped_buffer_full",
            "dropped_spool_full",
            "dropped_invalid",
            "dropped_expired",
        ),
        "sample_rate": _e("pipeline", "sample_rate", "sample_rate"),
        "spool_depth": _e("pipeline", "spool_depth", "spool_depth"),
    },
}
# Quantiles read the raw column; their expressions are not summed in rollups.
QUANTILE_EXPRS: dict[str, Expr] = {
    "position": EXPRS["content"]["position"],
    "duration": EXPRS["platform"]["duration"],
    "delay": EXPRS["platform"]["delay"],
}


def _sum(
    name: str,
    family: str,
    expr: str,
    types: tuple[str, ...],
    description: str,
    *,
    min_status_class: int | None = None,
    requires: tuple[str, ...] = (),
) -> Metric:
    return Metric(
        name,
        "sum",
        description,
        component=Component(EXPRS[family][expr], types, min_status_class),
        requires=requires,
    )


def _ratio(name: str, num: str, den: str, description: str) -> Metric:
    return Metric(name, "ratio", description, parts=(num, den))


def _quantile(
    name: str, expr: str, types: tuple[str, ...], level: float, description: str
) -> Metric:
    return Metric(
        name,
        "quantile",
        description,
        level=level,
        quantile_of=QUANTILE_EXPRS[expr],
        quantile_types=types,
    )


_METRIC_LIST: list[Metric] = [
    # content
    _sum("views", "content", "one", ("view",), "content views"),
    _sum("unique_views", "content", "unique_view", ("view",), "views marked unique at capture"),
    _sum("unique_visitors", "content", "new_visitor", ("view",), "visitors new that day"),
    _sum("visits", "content", "new_session", ("view",), "sessions started with a view"),
    _sum("plays", "content", "one", ("play_start",), "playback starts"),
    _sum("completions", "content", "one", ("complete",), "playbacks completed"),
    _ratio("completion_rate", "completions", "plays", "completions per play"),
    _sum("watch_time", "content", "watch_time", ("watch_time",), "seconds watched"),
    _ratio("avg_watch_time", "watch_time", "views", "seconds watched per view"),
    _sum("abandons", "content", "one", ("abandon",), "playbacks abandoned"),
    _sum("abandon_position_total", "content", "position", ("abandon",), "sum of abandon positions"),
    _ratio(
        "avg_abandon_position", "abandon_position_total", "abandons", "mean abandon position, s"
    ),
    _quantile("abandon_position_p25", "position", ("abandon",), 0.25, "abandon position, 25th pct"),
    _quantile("abandon_position_p50", "position", ("abandon",), 0.5, "abandon position, median"),
    _quantile("abandon_position_p75", "position", ("abandon",), 0.75, "abandon position, 75th pct"),
    _quantile("abandon_position_p90", "position", ("abandon",), 0.9, "abandon position, 90th pct"),
    # commerce: amounts in minor units, always split by currency
    _sum("purchases", "commerce", "one", ("purchase",), "purchases"),
    _sum(
        "revenue",
        "commerce",
        "amount",
        ("purchase",),
        "gross revenue, minor units",
        requires=("currency",),
    ),
    _sum("refund_count", "commerce", "one", ("refund",), "refunds"),
    _sum(
        "refunds",
        "commerce",
        "amount",
        ("refund",),
        "refunded, minor units",
        requires=("currency",),
    ),
    Metric(
        "net_revenue",
        "difference",
        "revenue less refunds, minor units",
        parts=("revenue", "refunds"),
        requires=("currency",),
    ),
    _ratio("conversion_rate", "purchases", "views", "purchases per view"),
    # platform (owner only)
    _sum("api_calls", "platform", "calls", ("api_call",), "API requests"),
    _sum(
        "api_errors",
        "platform",
        "calls",
        ("api_call",),
        "API requests answered 5xx",
        min_status_class=5,
    ),
    _ratio("error_rate", "api_errors", "api_calls", "share of requests answered 5xx"),
    _sum("response_time_total", "platform", "duration", ("api_call",), "sum of response times"),
    _sum("api_rows", "platform", "one", ("api_call",), "API call data points"),
    _ratio("avg_response_time", "response_time_total", "api_rows", "mean response time, ms"),
    _quantile("p50_response_time", "duration", ("api_call",), 0.5, "median response time, ms"),
    _quantile("p95_response_time", "duration", ("api_call",), 0.95, "95th pct response time, ms"),
    _quantile("p99_response_time", "duration", ("api_call",), 0.99, "99th pct response time, ms"),
    _sum("jobs", "platform", "one", ("job",), "background jobs run"),
    _sum("job_duration_total", "platform", "duration", ("job",), "sum of job durations"),
    _ratio("avg_job_duration", "job_duration_total", "jobs", "mean job duration, ms"),
    _quantile("p95_job_duration", "duration", ("job",), 0.95, "95th pct job duration, ms"),
    _sum("queue_samples", "platform", "one", ("queue_delay",), "queue delay samples"),
    _sum("queue_delay_total", "platform", "delay", ("queue_delay",), "sum of queue delays"),
    _ratio("avg_queue_delay", "queue_delay_total", "queue_samples", "mean queue delay, ms"),
    _quantile("p95_queue_delay", "delay", ("queue_delay",), 0.95, "95th pct queue delay, ms"),
    _sum("db_queries", "platform", "one", ("db_query",), "database queries"),
    _sum("db_query_time_total", "platform", "duration", ("db_query",), "sum of query times"),
    _ratio("avg_db_query_time", "db_query_time_total", "db_queries", "mean query time, ms"),
    _quantile("p95_db_query_time", "duration", ("db_query",), 0.95, "95th pct query time, ms"),
    _sum("errors", "platform", "one", ("error",), "unhandled errors"),
    # pipeline (owner only)
    _sum("pipeline_snapshots", "pipeline", "one", ("pipeline_health",), "health snapshots"),
    _sum("pipeline_events_in", "pipeline", "events_in", ("pipeline_health",), "events captured"),
    _sum("pipeline_dropped", "pipeline", "dropped", ("pipeline_health",), "events dropped"),
    _ratio("pipeline_drop_rate", "pipeline_dropped", "pipeline_events_in", "dropped per captured"),
    _sum("sample_rate_total", "pipeline", "sample_rate", ("pipeline_health",), "sum of rates"),
    _ratio("sampling_rate", "sample_rate_total", "pipeline_snapshots", "mean client sample rate"),
    _sum(
        "spool_depth_total",
        "pipeline",
        "spool_depth",
        ("pipeline_health",),
        "sum of reported spool depths",
    ),
    _ratio(
        "avg_spool_depth",
        "spool_depth_total",
        "pipeline_snapshots",
        "mean spool depth per snapshot, events",
    ),
]
METRICS: dict[str, Metric] = {m.name: m for m in _METRIC_LIST}


def covariance_pairs() -> dict[str, list[tuple[Expr, Expr]]]:
    """Per family, the expression pairs whose covariance a ratio or difference needs."""
    out: dict[str, list[tuple[Expr, Expr]]] = {f: [] for f in FAMILIES}
    for m in METRICS.values():
        if m.kind in ("ratio", "difference"):
            a = METRICS[m.parts[0]].sum_components()[0]
            b = METRICS[m.parts[1]].sum_components()[0]
            if a.overlaps(b) and (a.expr, b.expr) not in out[a.family]:
                out[a.family].append((a.expr, b.expr))
    return out


def dimensions_for(family: str) -> list[Dimension]:
    return [d for d in DIMENSIONS.values() if family in d.fields]
