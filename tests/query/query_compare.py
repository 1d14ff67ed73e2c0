"""Random queries and answer comparison, shared by the tests that check two ways of answering
agree (AE SQL on ClickHouse against DuckDB; derived tables against raw rows)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from hypothesis import strategies as st
from query_data import CONTENT, COUNTRIES, CREATORS, T0, WINDOW_DAYS

from edgemetrics.query import Filter, Principal, Query, TimeRange
from edgemetrics.query.semantic import DIMENSIONS, METRICS

FAMILY_METRICS: dict[str, list[str]] = {}
for _m in METRICS.values():
    FAMILY_METRICS.setdefault(_m.family, []).append(_m.name)
VALUE_POOL = {
    "country": COUNTRIES,
    "content": CONTENT,
    "creator": CREATORS,
    "device_class": ["desktop", "mobile", "", "tv"],
    "authenticated": ["authenticated", "anonymous"],
    "currency": ["EUR", "USD", "GBP"],
    "status_class": ["2xx", "3xx", "4xx", "5xx"],
    "endpoint": ["app GET /a", "app POST /b", "api GET /c/{id}", "nope"],
    "job_name": ["encode", "mail", "'"],
    "source": ["exporter", "worker"],
}
TZS = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]


@st.composite
def queries(draw: st.DrawFn) -> tuple[Query, Principal]:
    family = draw(
        st.sampled_from(["content", "commerce", "platform", "pipeline", "commerce+content"])
    )
    metrics = draw(
        st.lists(st.sampled_from(FAMILY_METRICS[family]), min_size=1, max_size=3, unique=True)
    )
    families = set(family.split("+"))
    applicable = [
        d for d, dim in DIMENSIONS.items() if families <= set(dim.fields) and d in VALUE_POOL
    ]
    dims = (
        draw(st.lists(st.sampled_from(applicable), max_size=2, unique=True)) if applicable else []
    )
    for m in metrics:
        for req in METRICS[m].requires:
            if req not in dims:
                dims.append(req)
    filters = []
    for d in draw(st.lists(st.sampled_from(applicable), max_size=2)) if applicable else []:
        op = draw(st.sampled_from(["eq", "ne", "in", "not_in"]))
        pool = VALUE_POOL[d]
        if op in ("eq", "ne"):
            filters.append(Filter(d, op, draw(st.sampled_from(pool))))
        else:
            filters.append(
                Filter(d, op, tuple(draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))))
            )
    start = T0 + timedelta(seconds=draw(st.integers(-86400, WINDOW_DAYS * 86400)))
    end = start + timedelta(seconds=draw(st.integers(1, (WINDOW_DAYS + 1) * 86400)))
    bucket = draw(st.sampled_from([None, None, "hour", "day", "week", "month"]))
    keys = ([("bucket")] if bucket else []) + dims + metrics
    order = draw(st.lists(st.sampled_from(keys), max_size=2, unique=True))
    order = [draw(st.sampled_from(["", "-"])) + k for k in order]
    query = Query(
        metrics=tuple(metrics),
        dimensions=tuple(dims),
        filters=tuple(filters),
        time_range=TimeRange.between(start, end),
        bucket=bucket,
        tz=draw(st.sampled_from(TZS)),
        order_by=tuple(order),
        limit=draw(st.sampled_from([1, 3, 1000])),
        offset=draw(st.sampled_from([0, 0, 1])),
    )
    if families <= {"content", "commerce"} and draw(st.booleans()):
        principal = Principal.creator(draw(st.sampled_from(CREATORS[:6])))
    else:
        principal = Principal.owner()
    return query, principal


def close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def same(ae: Any, duck: Any) -> None:
    """Two answers agree: the same rows, row counts and flags; values and intervals equal
    (floats to 1e-9, the rounding two summation orders may differ by)."""
    assert len(ae.rows) == len(duck.rows), (ae.sql, duck.sql)
    assert ae.row_count == duck.row_count
    assert ae.estimated == duck.estimated
    for ra, rd in zip(ae.rows, duck.rows, strict=True):
        assert ra.dimensions == rd.dimensions, (ae.sql, ra, rd)
        for name in ra.metrics:
            assert close(ra.metrics[name], rd.metrics[name]), (name, ra, rd, ae.sql)
            assert close(ra.ci[name], rd.ci[name]), (name, ra, rd)
        assert ra.row_count == rd.row_count
        assert ra.estimated == rd.estimated
