"""Queries as data: who asks (a :class:`~edgemetrics.principal.Principal`), over which
time (:class:`TimeRange`), what.

>>> q = Query(metrics=("views",), dimensions=("country",), time_range=TimeRange.preset("7d"))
>>> q.metrics, q.bucket, q.limit
(('views',), None, 1000)
>>> from edgemetrics.principal import Principal
>>> Principal.creator("c1").scope
'creator:c1'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Bucket = Literal["hour", "day", "week", "month"]
BUCKETS: tuple[str, ...] = ("hour", "day", "week", "month")
PRESETS: tuple[str, ...] = ("today", "7d", "30d", "90d", "all")
FilterOp = Literal["eq", "ne", "in", "not_in"]
FILTER_OPS: tuple[str, ...] = ("eq", "ne", "in", "not_in")
MAX_FILTER_VALUES = 100
MAX_LIMIT = 10_000
# "all time" starts here: before any AE data could exist, and a valid DateTime everywhere.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class QueryError(ValueError):
    """A query that cannot be answered; the message names the field and the rule."""


class AccessDenied(QueryError):
    """The principal may not read what the query asks for."""


def zone(tz: str) -> ZoneInfo:
    """The IANA time zone ``tz``, or a :class:`QueryError` naming it.

    >>> zone("Europe/Paris").key
    'Europe/Paris'
    """
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise QueryError(f"tz: unknown time zone {tz!r} [iana_time_zone]") from exc


def _floor_second(t: datetime) -> datetime:
    return t.replace(microsecond=0)


def _ceil_second(t: datetime) -> datetime:
    return t.replace(microsecond=0) + timedelta(seconds=1) if t.microsecond else t


@dataclass(frozen=True)
class TimeRange:
    """A half-open UTC range ``[start, end)``, or a preset resolved when the query runs.

    Presets count local calendar days in ``tz`` and include today: ``7d`` is today and the
    six days before it. Bounds are whole seconds (AE stores seconds).

    >>> r = TimeRange.preset("7d", tz="UTC").resolve(datetime(2024, 5, 10, 12, tzinfo=UTC))
    >>> r.start.isoformat(), r.end.isoformat()
    ('2024-05-04T00:00:00+00:00', '2024-05-10T12:00:00+00:00')
    >>> TimeRange.between(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)).days
    1.0
    """

    start: datetime | None = None
    end: datetime | None = None
    name: str | None = None
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if self.name is None:
            if self.start is None or self.end is None:
                raise QueryError("time_range: give start and end, or a preset [required]")
            for label, value in (("start", self.start), ("end", self.end)):
                if value.tzinfo is None:
                    raise QueryError(f"time_range.{label}: must carry a time zone [aware]")
            object.__setattr__(self, "start", _floor_second(self.start.astimezone(UTC)))
            object.__setattr__(self, "end", _ceil_second(self.end.astimezone(UTC)))
            assert self.start is not None and self.end is not None
            if self.end <= self.start:
                raise QueryError("time_range: end must be after start [ordered]")
        elif self.name not in PRESETS:
            raise QueryError(f"time_range.preset: {self.name!r} is not one of {PRESETS} [enum]")
        zone(self.tz)

    @classmethod
    def preset(cls, name: str, tz: str = "UTC") -> TimeRange:
        """A named range (``today``, ``7d``, ``30d``, ``90d``, ``all``), resolved at run time."""
        return cls(name=name, tz=tz)

    @classmethod
    def between(cls, start: datetime, end: datetime) -> TimeRange:
        """A custom range; both ends need a time zone."""
        return cls(start=start, end=end)

    @classmethod
    def last(cls, duration: timedelta, now: datetime | None = None) -> TimeRange:
        """The ``duration`` before ``now`` (default: the current time)."""
        end = now or datetime.now(UTC)
        return cls(start=end - duration, end=end)

    def resolve(self, now: datetime | None = None) -> TimeRange:
        """The concrete range; a preset is anchored at ``now`` (default: the current time)."""
        if self.name is None:
            return self
        now = (now or datetime.now(UTC)).astimezone(UTC)
        if self.name == "all":
            return TimeRange(start=EPOCH, end=now + timedelta(seconds=1))
        days = {"today": 1, "7d": 7, "30d": 30, "90d": 90}[self.name]
        local = now.astimezone(zone(self.tz))
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
            days=days - 1
        )
        # Re-localise so a DST change inside the range still lands on local midnight.
        start = midnight.replace(tzinfo=None).replace(tzinfo=zone(self.tz))
        return TimeRange(start=start, end=now + timedelta(seconds=1) if now == start else now)

    @property
    def days(self) -> float:
        """The length in days of a concrete range."""
        if self.start is None or self.end is None:
            raise QueryError("time_range: resolve a preset before measuring it [resolved]")
        return (self.end - self.start).total_seconds() / 86400

    def key(self) -> str:
        if self.name is not None:
            return f"preset:{self.name}:{self.tz}"
        assert self.start is not None and self.end is not None
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


@dataclass(frozen=True)
class Filter:
    """A condition on one dimension: ``eq``/``ne`` take one value, ``in``/``not_in`` a list.

    >>> Filter("country", "in", ("FR", "DE")).values
    ('FR', 'DE')
    >>> Filter("country", "eq", "FR").values
    ('FR',)
    """

    dimension: str
    op: FilterOp
    value: str | tuple[str, ...]

    def __post_init__(self) -> None:
        if self.op not in FILTER_OPS:
            raise QueryError(
                f"filters.{self.dimension}.op: {self.op!r} is not one of {FILTER_OPS} [enum]"
            )
        if self.op in ("eq", "ne"):
            if not isinstance(self.value, str):
                raise QueryError(
                    f"filters.{self.dimension}.value: {self.op} takes one string [type]"
                )
        else:
            if isinstance(self.value, str) or not isinstance(self.value, tuple | list):
                raise QueryError(f"filters.{self.dimension}.value: {self.op} takes a list [type]")
            object.__setattr__(self, "value", tuple(self.value))
            if not self.value:
                raise QueryError(f"filters.{self.dimension}.value: empty list [min_items]")
            if len(self.value) > MAX_FILTER_VALUES:
                raise QueryError(
                    f"filters.{self.dimension}.value: more than {MAX_FILTER_VALUES} values "
                    "[max_items]"
                )
        for v in self.values:
            if not isinstance(v, str):
                raise QueryError(f"filters.{self.dimension}.value: {v!r} is not a string [type]")
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise QueryError(
                    f"filters.{self.dimension}.value: not encodable as UTF-8 [utf8]"
                ) from exc

    @property
    def values(self) -> tuple[str, ...]:
        return (self.value,) if isinstance(self.value, str) else tuple(self.value)


@dataclass(frozen=True)
class Query:
    """Metrics x dimensions x filters x time range x time bucket (in ``tz``), sorted and paged.

    ``order_by`` holds metric or dimension names, ``-name`` for descending; the default is
    the time bucket ascending, else the first metric descending. Ties always break on the
    dimensions, ascending, so pages are stable. A query without dimensions or bucket
    answers exactly one row (zeros when nothing matched); ``limit``/``offset`` page grouped
    rows only.
    """

    metrics: tuple[str, ...]
    dimensions: tuple[str, ...] = ()
    filters: tuple[Filter, ...] = ()
    time_range: TimeRange = field(default_factory=lambda: TimeRange.preset("30d"))
    bucket: str | None = None
    tz: str = "UTC"
    order_by: tuple[str, ...] = ()
    limit: int = 1000
    offset: int = 0

    def __post_init__(self) -> None:
        for name in ("metrics", "dimensions", "filters", "order_by"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise QueryError(f"{name}: give a list, not one string [type]")
            object.__setattr__(self, name, tuple(value))
        if not self.metrics:
            raise QueryError("metrics: at least one metric [min_items]")
        if len(set(self.metrics)) != len(self.metrics):
            raise QueryError("metrics: a metric is listed twice [unique]")
        if len(set(self.dimensions)) != len(self.dimensions):
            raise QueryError("dimensions: a dimension is listed twice [unique]")
        if self.bucket is not None and self.bucket not in BUCKETS:
            raise QueryError(f"bucket: {self.bucket!r} is not one of {BUCKETS} [enum]")
        zone(self.tz)
        if not (isinstance(self.limit, int) and 1 <= self.limit <= MAX_LIMIT):
            raise QueryError(f"limit: must be an integer from 1 to {MAX_LIMIT} [range]")
        if not (isinstance(self.offset, int) and self.offset >= 0):
            raise QueryError("offset: must be a non-negative integer [range]")
        for f in self.filters:
            if not isinstance(f, Filter):
                raise QueryError("filters: each filter must be a Filter [type]")

    @property
    def output_dimensions(self) -> tuple[str, ...]:
        """The grouping keys in output order: ``bucket`` first when bucketed."""
        return (("bucket",) if self.bucket else ()) + self.dimensions

    def key(self) -> str:
        """A canonical text of the query, for caching."""
        return json.dumps(
            {
                "m": self.metrics,
                "d": self.dimensions,
                "f": sorted([f.dimension, f.op, list(f.values)] for f in self.filters),
                "t": self.time_range.key(),
                "b": self.bucket,
                "z": self.tz,
                "o": self.order_by,
                "l": self.limit,
                "p": self.offset,
            },
            sort_keys=True,
        )


def finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))
