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
from collections.abc import Callable
from dataclasses import dataclass
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


class _Acc:
    """One group's running totals; sums are indexed like :attr:`Merger.components`."""

    __slots__ = (
        "ci_quantiles",
        "covariances",
        "maxsi",
        "quantile_rows",
        "quantiles",
        "rows",
        "sums",
        "variances",
    )

    def __init__(self, n_components: int, n_families: int) -> None:
        self.rows = [0] * n_families  # stored rows, per family of the plan
        self.maxsi = 1
        self.sums = [0.0] * n_components
        self.variances = [0.0] * n_components
        self.covariances: dict[tuple[int, int], float] = {}
        self.quantiles: dict[tuple[int, float], float | None] = {}
        self.quantile_rows: dict[int, int] = {}
        self.ci_quantiles: dict[tuple[int, float], float | None] = {}


def _num(v: Any) -> float:
    return 0.0 if v is None else float(v)


def _text(raw: Any) -> str:
    return "" if raw is None else str(raw)


class Merger:
    """Adds up the rows of every part (raw, aggregates, rollups) by dimension key.

    Components, columns and key readers are worked out once per plan, so a large answer
    (ten thousand content items) costs a few dictionary operations per row.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.groups: dict[Key, _Acc] = {}
        self.tz = zone(plan.query.tz)
        self.components: dict[Component, int] = {}
        for part in plan.parts:
            for c in part.components:
                self.components.setdefault(c, len(self.components))
        self._families = {f: i for i, f in enumerate(dict.fromkeys(p.family for p in plan.parts))}
        self._columns = [
            (
                [(f"s{j}", f"v{j}", self.components[c]) for j, c in enumerate(p.components)],
                [
                    (f"c{k}", (self.components[p.components[a]], self.components[p.components[b]]))
                    for k, (a, b) in enumerate(p.covariances)
                ],
            )
            for p in plan.parts
        ]
        self._readers = [[self._reader(name) for name in p.keys] for p in plan.parts]
        self._metrics = [(name, self._metric_plan(name)) for name in plan.query.metrics]

    def _new(self) -> _Acc:
        return _Acc(len(self.components), len(self._families))

    def _reader(self, name: str) -> Callable[[Any], Any]:
        if name == "bucket":
            return self._bucket
        dim = DIMENSIONS[name]
        if dim.kind in ("blob", "index"):
            return _text
        return lambda raw: label(dim, raw)

    def _bucket(self, raw: Any) -> int:
        if isinstance(raw, date) and not isinstance(raw, datetime):
            # A rollup day: its local midnight in the query's zone.
            return int(datetime(raw.year, raw.month, raw.day, tzinfo=self.tz).timestamp())
        return int(float(raw))

    def _add_by_type(self, part: SqlPart, rows: list[dict[str, Any]]) -> None:
        """Rows grouped by event type (and status class): each adds to the sums it belongs to."""
        from edgemetrics.query.compiler import by_type_exprs

        acc = self.groups.get(())
        if acc is None:
            acc = self.groups[()] = self._new()
        exprs = by_type_exprs(part)
        types = set(part.types)
        family = self._families[part.family]

        def member(c: Component, row: dict[str, Any]) -> bool:
            if row["_type"] not in c.types:
                return False
            return c.min_status_class is None or _num(row.get("_status")) >= c.min_status_class

        for row in rows:
            if row["_type"] not in types:
                continue
            acc.rows[family] += int(_num(row["_rows"]))
            acc.maxsi = max(acc.maxsi, int(_num(row.get("_maxsi"))))
            for c in part.components:
                if member(c, row):
                    i, e = self.components[c], exprs.index(c.expr)
                    acc.sums[i] += _num(row.get(f"e{e}"))
                    acc.variances[i] += _num(row.get(f"ev{e}"))
            for k, (a, b) in enumerate(part.covariances):
                ca, cb = part.components[a], part.components[b]
                if member(ca, row) and member(cb, row):
                    pair = (self.components[ca], self.components[cb])
                    acc.covariances[pair] = acc.covariances.get(pair, 0.0) + _num(row.get(f"ec{k}"))

    def add(
        self, part: SqlPart, part_index: int, rows: list[dict[str, Any]], *, ci: bool = False
    ) -> None:
        if rows and "_type" in rows[0]:
            self._add_by_type(part, rows)
            return
        readers = [(f"d{i}", read) for i, read in enumerate(self._readers[part_index])]
        sums, covs = self._columns[part_index]
        family = self._families[part.family]
        quantile = part.quantile
        levels = part.ci_levels() if ci else ()
        groups = self.groups
        for row in rows:
            rows_n = int(_num(row.get("_rows")))
            if rows_n == 0 and readers:
                continue
            key = tuple(read(row[column]) for column, read in readers)
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = self._new()
            if ci:
                for i, q in enumerate(levels):
                    v = row.get(f"q{i}")
                    acc.ci_quantiles[(part_index, q)] = None if v is None else float(v)
                continue
            # Sum parts of one family (raw, aggregates, rollup) hold disjoint rows; a
            # quantile part reads rows a sum part of its family already counted.
            if quantile is None:
                acc.rows[family] += rows_n
            else:
                acc.rows[family] = max(acc.rows[family], rows_n)
            if rows_n:
                # The SQL API's JSON may carry numbers as strings: read every value as one.
                acc.maxsi = max(acc.maxsi, int(_num(row.get("_maxsi"))))
            for s_col, v_col, i in sums:
                s, v = row.get(s_col), row.get(v_col)
                if s is not None:
                    acc.sums[i] += float(s)
                if v is not None:
                    acc.variances[i] += float(v)
            for c_col, pair in covs:
                acc.covariances[pair] = acc.covariances.get(pair, 0.0) + _num(row.get(c_col))
            if quantile is not None:
                acc.quantile_rows[part_index] = rows_n
                for i, q in enumerate(quantile.levels):
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
            self.groups[()] = self._new()
        bucket = 0 if query.bucket else None
        out = []
        for key, acc in self.groups.items():
            dims: dict[str, Any] = dict(zip(keys, key, strict=True))
            if bucket is not None:
                dims["bucket"] = datetime.fromtimestamp(key[0], self.tz)
            estimated = acc.maxsi > 1
            values: dict[str, float | None] = {}
            intervals: dict[str, tuple[float, float] | None] = {}
            for name, how in self._metrics:
                values[name], intervals[name] = how(acc, estimated)
            out.append(ResultRow(dims, values, intervals, sum(acc.rows), estimated))
        if self.plan.sort_in_python and keys:
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

    def _metric_plan(
        self, name: str
    ) -> Callable[[_Acc, bool], tuple[float | None, tuple[float, float] | None]]:
        """How to compute metric ``name`` from a group's totals."""
        m = METRICS[name]

        def index(metric: str) -> int:
            return self.components[METRICS[metric].sum_components()[0]]

        if m.kind == "sum":
            i = index(name)

            def total(acc: _Acc, estimated: bool) -> tuple[float, tuple[float, float]]:
                s = acc.sums[i]
                half = Z95 * math.sqrt(max(acc.variances[i], 0.0))
                return s, (max(0.0, s - half), s + half)

            return total
        if m.kind in ("ratio", "difference"):
            ia, ib = index(m.parts[0]), index(m.parts[1])
            difference = m.kind == "difference"

            def combined(acc: _Acc, estimated: bool) -> tuple[float | None, Any]:
                a, va, b, vb = acc.sums[ia], acc.variances[ia], acc.sums[ib], acc.variances[ib]
                cov = acc.covariances.get((ia, ib), 0.0)
                if difference:
                    d = a - b
                    half = Z95 * math.sqrt(max(va + vb - 2 * cov, 0.0))
                    return d, (d - half, d + half)
                if b == 0:
                    return None, None
                r = a / b
                var = (va - 2 * r * cov + r * r * vb) / (b * b)
                half = Z95 * math.sqrt(max(var, 0.0))
                return r, (max(0.0, r - half), r + half)

            return combined
        part_index = next(
            i
            for i, p in enumerate(self.plan.parts)
            if p.quantile is not None
            and p.quantile.expr == m.quantile_of
            and p.quantile.types == m.quantile_types
        )
        level = m.level

        def quantile(acc: _Acc, estimated: bool) -> tuple[float | None, Any]:
            value = acc.quantiles.get((part_index, level))
            if value is None:
                return None, None
            if not estimated:
                return value, (value, value)
            n = max(acc.quantile_rows.get(part_index, 0), 1)
            need = Z95 * math.sqrt(level * (1 - level) / n)
            offset = CI_OFFSETS[min(bisect.bisect_left(CI_OFFSETS, need), len(CI_OFFSETS) - 1)]
            lo = acc.ci_quantiles.get((part_index, round(max(0.0, level - offset), 6)))
            hi = acc.ci_quantiles.get((part_index, round(min(1.0, level + offset), 6)))
            if lo is None or hi is None:
                return value, None
            return value, (min(lo, value), max(hi, value))

        return quantile


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
