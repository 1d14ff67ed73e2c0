"""Answers: rows of dimension values and metrics, each with its 95% confidence interval.

Under AE's sampling each stored row stands for ``_sample_interval`` events, kept with
probability ``1 / _sample_interval``. Sums are Horvitz-Thompson estimates, whose variance is
estimated by ``sum(e² · s · (s - 1))`` (zero when nothing was sampled); ratios and
differences use the delta method with the covariance of their two sums; a quantile's
interval comes from the ranks ``q ± 1.96 · sqrt(q (1 - q) / n)`` over the ``n`` stored rows,
widened to the next level actually computed. Unsampled answers are exact: their interval is
the value itself, and ``estimated`` is false.

>>> r = ResultRow({"country": "FR"}, {"views": 10.0}, {"views": (10.0, 10.0)}, 10, False)
>>> r["country"], r["views"], r.ci["views"]
('FR', 10.0, (10.0, 10.0))
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from edgemetrics.query.compiler import CI_OFFSETS, Z95, Plan, SqlPart
from edgemetrics.query.model import Query, zone
from edgemetrics.query.semantic import DIMENSIONS, METRICS, Component, label

Key = tuple[Any, ...]


@dataclass(frozen=True)
class ResultRow:
    """One group: its dimension values, metric values and intervals, and the rows behind it."""

    dimensions: dict[str, Any]
    metrics: dict[str, float | None]
    ci: dict[str, tuple[float, float] | None]
    row_count: int
    estimated: bool

    def __getitem__(self, name: str) -> Any:
        if name in self.dimensions:
            return self.dimensions[name]
        return self.metrics[name]

    def record(self) -> dict[str, Any]:
        """A flat dict (dimensions, metrics, ``<metric>_low``/``_high``), e.g. for CSV."""
        out: dict[str, Any] = {}
        for k, v in self.dimensions.items():
            out[k] = v.isoformat() if isinstance(v, datetime) else v
        for name, value in self.metrics.items():
            out[name] = value
            interval = self.ci.get(name)
            out[f"{name}_low"] = interval[0] if interval else None
            out[f"{name}_high"] = interval[1] if interval else None
        out["rows"] = self.row_count
        out["estimated"] = self.estimated
        return out


@dataclass(frozen=True)
class Result:
    """The answer to a query.

    ``row_count`` is the number of stored data points behind the returned rows; ``estimated``
    is true when any of them stood for more than one event (AE sampled them), and then each
    ``ci`` is a real interval rather than the exact value.
    """

    query: Query
    rows: list[ResultRow]
    row_count: int
    estimated: bool
    sql: tuple[str, ...] = ()
    sources: tuple[str, ...] = ("raw",)
    cached: bool = False
    computed_at: datetime | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def records(self) -> list[dict[str, Any]]:
        return [r.record() for r in self.rows]

    def value(self, metric: str) -> float | None:
        """The metric of a query without dimensions (one row)."""
        return self.rows[0].metrics[metric] if self.rows else None


@dataclass
class _Acc:
    rows: dict[str, int] = field(default_factory=dict)  # family -> stored rows
    maxsi: int = 1
    sums: dict[Component, float] = field(default_factory=dict)
    variances: dict[Component, float] = field(default_factory=dict)
    covariances: dict[tuple[Component, Component], float] = field(default_factory=dict)
    quantiles: dict[tuple[int, float], float | None] = field(default_factory=dict)
    quantile_rows: dict[int, int] = field(default_factory=dict)
    ci_quantiles: dict[tuple[int, float], float | None] = field(default_factory=dict)


def _num(v: Any) -> float:
    return 0.0 if v is None else float(v)


class Merger:
    """Adds up the rows of every part (raw and rollup) by dimension key."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.groups: dict[Key, _Acc] = {}
        self.tz = zone(plan.query.tz)

    def _key(self, part: SqlPart, row: dict[str, Any]) -> Key:
        out: list[Any] = []
        for i, name in enumerate(part.keys):
            raw = row[f"d{i}"]
            if name == "bucket":
                if isinstance(raw, date) and not isinstance(raw, datetime):
                    # A rollup day: its local midnight in the query's zone.
                    out.append(
                        int(datetime(raw.year, raw.month, raw.day, tzinfo=self.tz).timestamp())
                    )
                else:
                    out.append(int(float(raw)))
            else:
                out.append(label(DIMENSIONS[name], raw))
        return tuple(out)

    def _add_by_type(self, part: SqlPart, rows: list[dict[str, Any]]) -> None:
        """Rows grouped by event type (and status class): each adds to the sums it belongs to."""
        from edgemetrics.query.compiler import by_type_exprs

        acc = self.groups.setdefault((), _Acc())
        exprs = by_type_exprs(part)
        types = set(part.types)

        def member(c: Component, row: dict[str, Any]) -> bool:
            if row["_type"] not in c.types:
                return False
            return c.min_status_class is None or _num(row.get("_status")) >= c.min_status_class

        for row in rows:
            if row["_type"] not in types:
                continue
            acc.rows[part.family] = acc.rows.get(part.family, 0) + int(_num(row["_rows"]))
            acc.maxsi = max(acc.maxsi, int(_num(row.get("_maxsi"))))
            for c in part.components:
                if member(c, row):
                    i = exprs.index(c.expr)
                    acc.sums[c] = acc.sums.get(c, 0.0) + _num(row.get(f"e{i}"))
                    acc.variances[c] = acc.variances.get(c, 0.0) + _num(row.get(f"ev{i}"))
            for k, (a, b) in enumerate(part.covariances):
                ca, cb = part.components[a], part.components[b]
                if member(ca, row) and member(cb, row):
                    pair = (ca, cb)
                    acc.covariances[pair] = acc.covariances.get(pair, 0.0) + _num(row.get(f"ec{k}"))

    def add(
        self, part: SqlPart, part_index: int, rows: list[dict[str, Any]], *, ci: bool = False
    ) -> None:
        if rows and "_type" in rows[0]:
            self._add_by_type(part, rows)
            return
        for row in rows:
            rows_n = int(_num(row.get("_rows")))
            if rows_n == 0 and part.keys:
                continue
            acc = self.groups.setdefault(self._key(part, row), _Acc())
            if ci:
                assert part.quantile is not None
                for i, q in enumerate(part.ci_levels()):
                    v = row.get(f"q{i}")
                    acc.ci_quantiles[(part_index, q)] = None if v is None else float(v)
                continue
            before = acc.rows.get(part.family, 0)
            # Sum parts of one family (raw, rollup) hold disjoint rows; a quantile part
            # reads rows a sum part of its family already counted.
            acc.rows[part.family] = (
                before + rows_n if part.quantile is None else max(before, rows_n)
            )
            if rows_n:
                acc.maxsi = max(acc.maxsi, int(_num(row.get("_maxsi"))))
            for i, c in enumerate(part.components):
                acc.sums[c] = acc.sums.get(c, 0.0) + _num(row.get(f"s{i}"))
                acc.variances[c] = acc.variances.get(c, 0.0) + _num(row.get(f"v{i}"))
            for k, (a, b) in enumerate(part.covariances):
                pair = (part.components[a], part.components[b])
                acc.covariances[pair] = acc.covariances.get(pair, 0.0) + _num(row.get(f"c{k}"))
            if part.quantile is not None:
                acc.quantile_rows[part_index] = rows_n
                for i, q in enumerate(part.quantile.levels):
                    v = row.get(f"q{i}")
                    acc.quantiles[(part_index, q)] = (
                        None if (v is None or rows_n == 0) else float(v)
                    )

    def sampled_quantile_parts(self) -> set[int]:
        """Parts whose quantiles rest on sampled rows: they need a second, CI pass."""
        out: set[int] = set()
        for acc in self.groups.values():
            if acc.maxsi > 1:
                out.update(i for i, _ in acc.quantiles)
        return out

    def result(
        self, sql: tuple[str, ...], sources: tuple[str, ...], computed_at: datetime
    ) -> Result:
        query = self.plan.query
        keys = query.output_dimensions
        if not keys and not self.groups:
            self.groups[()] = _Acc()
        out = []
        for key, acc in self.groups.items():
            dims: dict[str, Any] = {}
            for name, raw in zip(keys, key, strict=True):
                dims[name] = datetime.fromtimestamp(raw, self.tz) if name == "bucket" else raw
            estimated = acc.maxsi > 1
            values: dict[str, float | None] = {}
            intervals: dict[str, tuple[float, float] | None] = {}
            for name in query.metrics:
                value, interval = self._metric(name, acc, estimated)
                values[name] = value
                intervals[name] = interval
            out.append(ResultRow(dims, values, intervals, sum(acc.rows.values()), estimated))
        if self.plan.sort_in_python:
            out = _sort(out, query)[query.offset : query.offset + query.limit]
        return Result(
            query=query,
            rows=out,
            row_count=sum(r.row_count for r in out),
            estimated=any(r.estimated for r in out),
            sql=sql,
            sources=sources,
            computed_at=computed_at,
        )

    def _sum(self, name: str, acc: _Acc) -> tuple[float, float, Component]:
        c = METRICS[name].sum_components()[0]
        return acc.sums.get(c, 0.0), acc.variances.get(c, 0.0), c

    def _metric(
        self, name: str, acc: _Acc, estimated: bool
    ) -> tuple[float | None, tuple[float, float] | None]:
        m = METRICS[name]
        if m.kind == "sum":
            s, v, _ = self._sum(name, acc)
            half = Z95 * math.sqrt(max(v, 0.0))
            return s, (max(0.0, s - half), s + half)
        if m.kind in ("ratio", "difference"):
            a, va, ca = self._sum(m.parts[0], acc)
            b, vb, cb = self._sum(m.parts[1], acc)
            cov = acc.covariances.get((ca, cb), 0.0)
            if m.kind == "difference":
                d = a - b
                half = Z95 * math.sqrt(max(va + vb - 2 * cov, 0.0))
                return d, (d - half, d + half)
            if b == 0:
                return None, None
            r = a / b
            var = (va - 2 * r * cov + r * r * vb) / (b * b)
            half = Z95 * math.sqrt(max(var, 0.0))
            return r, (max(0.0, r - half), r + half)
        # quantile
        part_index = next(
            i
            for i, p in enumerate(self.plan.parts)
            if p.quantile is not None
            and p.quantile.expr == m.quantile_of
            and p.quantile.types == m.quantile_types
        )
        value = acc.quantiles.get((part_index, m.level))
        if value is None:
            return None, None
        if not estimated:
            return value, (value, value)
        n = max(acc.quantile_rows.get(part_index, 0), 1)
        need = Z95 * math.sqrt(m.level * (1 - m.level) / n)
        offset = CI_OFFSETS[min(bisect.bisect_left(CI_OFFSETS, need), len(CI_OFFSETS) - 1)]
        lo_level = round(max(0.0, m.level - offset), 6)
        hi_level = round(min(1.0, m.level + offset), 6)
        lo = acc.ci_quantiles.get((part_index, lo_level))
        hi = acc.ci_quantiles.get((part_index, hi_level))
        if lo is None or hi is None:
            return value, None
        return value, (min(lo, value), max(hi, value))


def _sort(rows: list[ResultRow], query: Query) -> list[ResultRow]:
    from edgemetrics.query.compiler import _order_keys

    keys = query.output_dimensions
    # Stable sorts, least significant first: dimensions ascending, then the order keys.
    out = sorted(rows, key=lambda r: tuple(r.dimensions[k] for k in keys))
    for key in reversed(_order_keys(query)):
        desc = key.startswith("-")
        name = key.removeprefix("-")

        def value(r: ResultRow, name: str = name) -> Any:
            return r.dimensions[name] if name in r.dimensions else r.metrics[name]

        present = [r for r in out if value(r) is not None]
        missing = [r for r in out if value(r) is None]
        out = sorted(present, key=value, reverse=desc) + missing
    return out
