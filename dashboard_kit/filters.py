"""The dashboard's filters, read from the page URL so a view can be shared and reloaded.

``period`` is a preset (``today``, ``7d``, ``30d`` (default), ``90d``, ``all``) or ``custom``
with ``from`` and ``to`` (ISO dates, both included). The other filters narrow audience data:
``content_type``, ``country``, ``device`` and ``authenticated`` (``authenticated`` or
``anonymous``). A bad value raises :class:`FilterError` naming the parameter and the rule.

>>> f = ViewFilters.from_params({"period": "7d", "country": "FR"})
>>> f.period, [(x.dimension, x.value) for x in f.query_filters()]
('7d', [('country', 'FR')])
>>> f.describe()
'period: last 7 days; country: FR'
>>> custom = {"period": "custom", "from": "2024-05-01", "to": "2024-05-03"}
>>> ViewFilters.from_params(custom).describe()
'period: 2024-05-01 to 2024-05-03'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from edgemetrics.query import Filter, TimeRange

PERIODS: dict[str, str] = {
    "today": "today",
    "7d": "last 7 days",
    "30d": "last 30 days",
    "90d": "last 90 days",
    "all": "all time",
    "custom": "custom range",
}
DEVICES = ("desktop", "mobile", "tablet", "tv", "console", "other")
CONTENT_TYPES = ("video", "audio", "post")
AUTH_VALUES = ("authenticated", "anonymous")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
# URL parameter -> semantic-layer dimension.
DIMENSION_OF = {
    "content_type": "content_type",
    "country": "country",
    "device": "device_class",
    "authenticated": "authenticated",
}


class FilterError(ValueError):
    """A filter parameter with a bad value; the message names it and the rule."""


@dataclass(frozen=True)
class ViewFilters:
    """What the viewer chose: a period and optional audience filters."""

    period: str = "30d"
    start: date | None = None
    end: date | None = None
    content_type: str | None = None
    country: str | None = None
    device: str | None = None
    authenticated: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> ViewFilters:
        """Parse URL query parameters; empty values mean "no filter"."""

        def get(name: str) -> str | None:
            value = params.get(name)
            return value.strip() if value and value.strip() else None

        period = get("period") or "30d"
        if period not in PERIODS:
            raise FilterError(f"period: must be one of {', '.join(PERIODS)} [enum]")
        start = end = None
        if period == "custom":
            start = _date("from", get("from"))
            end = _date("to", get("to"))
            if end < start:
                raise FilterError("to: must not be before from [ordered]")
        content_type = _choice("content_type", get("content_type"), CONTENT_TYPES)
        device = _choice("device", get("device"), DEVICES)
        authenticated = _choice("authenticated", get("authenticated"), AUTH_VALUES)
        country = get("country")
        if country is not None:
            country = country.upper()
            if not _COUNTRY.match(country):
                raise FilterError("country: must be a two-letter ISO country code [pattern]")
        return cls(period, start, end, content_type, country, device, authenticated)

    def time_range(self) -> TimeRange:
        """The engine's time range (UTC days; a custom range includes its last day)."""
        if self.period == "custom":
            assert self.start is not None and self.end is not None
            return TimeRange.between(
                datetime.combine(self.start, time(), UTC),
                datetime.combine(self.end + timedelta(days=1), time(), UTC),
            )
        return TimeRange.preset(self.period)

    def previous_range(self, now: datetime | None = None) -> TimeRange | None:
        """The period of the same length just before this one (None for all time)."""
        if self.period == "all":
            return None
        current = self.time_range().resolve(now)
        assert current.start is not None and current.end is not None
        length = current.end - current.start
        return TimeRange.between(current.start - length, current.start)

    def query_filters(
        self, *, include: tuple[str, ...] = tuple(DIMENSION_OF)
    ) -> tuple[Filter, ...]:
        """The audience filters as engine filters (only the parameters in ``include``)."""
        out = []
        for param, dimension in DIMENSION_OF.items():
            value = getattr(self, param)
            if value is not None and param in include:
                out.append(Filter(dimension, "eq", value))
        return tuple(out)

    def params(self) -> dict[str, str]:
        """Back to URL parameters (defaults left out)."""
        out: dict[str, str] = {}
        if self.period != "30d":
            out["period"] = self.period
        if self.start is not None and self.end is not None:
            out["from"], out["to"] = self.start.isoformat(), self.end.isoformat()
        for param in DIMENSION_OF:
            value = getattr(self, param)
            if value is not None:
                out[param] = value
        return out

    def describe(self) -> str:
        """One line for people and CSV headers: the period, then each filter applied."""
        if self.period == "custom":
            assert self.start is not None and self.end is not None
            parts = [f"period: {self.start.isoformat()} to {self.end.isoformat()}"]
        else:
            parts = [f"period: {PERIODS[self.period]}"]
        for param in DIMENSION_OF:
            value = getattr(self, param)
            if value is not None:
                parts.append(f"{param.replace('_', ' ')}: {value}")
        return "; ".join(parts)


def _date(name: str, value: str | None) -> date:
    if value is None:
        raise FilterError(f"{name}: a custom period needs from and to dates [required]")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise FilterError(f"{name}: must be a date like 2024-05-31 [iso_date]") from None


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise FilterError(f"{name}: must be one of {', '.join(allowed)} [enum]")
    return value
