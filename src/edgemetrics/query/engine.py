"""The engine: plans a query, runs it on a backend (and rollups), merges, caches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from edgemetrics.principal import Principal
from edgemetrics.query.aggregates import AggregateReader, Aggregates
from edgemetrics.query.backends import Backend
from edgemetrics.query.cache import ResultCache
from edgemetrics.query.compiler import Plan, compile_part, plan
from edgemetrics.query.model import Query, QueryError, TimeRange
from edgemetrics.query.result import Merger, Result
from edgemetrics.query.rollup import RollupStore, compile_rollup_part

RAW_RETENTION_DAYS = 90


class Engine:
    """Answers queries for principals, from raw data and, past ``raw_days``, from rollups.

    ``run`` returns a :class:`~edgemetrics.query.result.Result`; answers are cached per
    (principal scope, query) for ``cache_ttl`` seconds (0 turns the cache off). A preset
    range is part of the cache key by name, so a cached "last 7 days" is at most
    ``cache_ttl`` seconds behind.

    ``aggregates``: pre-aggregated tables of an embedded store
    (:mod:`edgemetrics.query.aggregates`), read wherever they hold a part of the answer;
    ``"auto"`` (the default) takes the backend's (those its store's retention maintains),
    None reads raw rows only. Either way the answer is the same.
    """

    def __init__(
        self,
        backend: Backend,
        rollups: RollupStore | None = None,
        *,
        cache_ttl: float = 30.0,
        raw_days: int = RAW_RETENTION_DAYS,
        clock: Callable[[], datetime] | None = None,
        aggregates: Aggregates | Literal["auto"] | None = "auto",
    ) -> None:
        self.backend = backend
        self.rollups = rollups
        self.raw_days = raw_days
        self.aggregates = aggregates
        self.cache = ResultCache(ttl=cache_ttl)
        self._clock = clock or (lambda: datetime.now(UTC))

    def raw_boundary(self, now: datetime) -> datetime:
        """The UTC midnight from which raw data is complete (older rows may be deleted)."""
        first = now.astimezone(UTC).date() - timedelta(days=self.raw_days - 1)
        return datetime.combine(first, time(), UTC)

    def run(self, query: Query, principal: Principal) -> Result:
        """Answer ``query`` as ``principal`` sees it."""
        if not isinstance(principal, Principal):
            raise QueryError("principal: a Principal is required [type]")
        key = (principal.scope, self.backend.name, query.key())
        hit = self.cache.get(key)
        if hit is not None:
            cached: Result = hit
            return Result(**{**cached.__dict__, "cached": True})
        result = self._run(query, principal, self._clock())
        self.cache.put(key, result)
        return result

    def _run(self, query: Query, principal: Principal, now: datetime) -> Result:
        rng = query.time_range.resolve(now)
        assert rng.start is not None and rng.end is not None
        boundary = self.raw_boundary(now)
        use_rollups = self.rollups is not None and rng.start < boundary
        the_plan = plan(query, principal)
        if use_rollups and not the_plan.sort_in_python:
            # Two sources: sort and page after merging.
            the_plan.parts = [replace(p, order=(), limit=None, offset=0) for p in the_plan.parts]
            the_plan.sort_in_python = True
        the_plan.resolved = rng
        merger = Merger(the_plan)
        sql: list[str] = []
        sources: list[str] = []
        raw_start = max(rng.start, boundary) if use_rollups else rng.start
        if use_rollups:
            assert self.rollups is not None
            first = _ceil_day(rng.start)
            last = min(boundary, rng.end).date()
            if first < last:
                sources.append("rollup")
                for i, part in enumerate(the_plan.parts):
                    text = compile_rollup_part(
                        part, self.rollups.dialect, query, principal, first, last
                    )
                    sql.append(text)
                    merger.add(part, i, self.rollups.run(text))
        if raw_start < rng.end:
            with self._reading() as reader:
                used = self._run_recent(
                    the_plan, merger, reader, query, principal, raw_start, rng.end, sql
                )
            sources += used
        return merger.result(tuple(sql), tuple(sources), now)

    def _run_recent(
        self,
        the_plan: Plan,
        merger: Merger,
        reader: AggregateReader | None,
        query: Query,
        principal: Principal,
        start: datetime,
        end: datetime,
        sql: list[str],
    ) -> list[str]:
        """Answer ``[start, end)`` from aggregates where they hold a part, raw rows elsewhere;
        returns the sources read."""
        used: dict[str, None] = {}
        sources: dict[int, str | None] = {}
        if reader is not None:
            reader.prepare([p.family for p in the_plan.parts])
        # AE answers are often sampled: ask for the variance sums at once. The embedded
        # store rarely is: ask again with them only when a row stood for several events.
        eager = self.backend.dialect == "ae"
        for i, part in enumerate(the_plan.parts):
            route = reader.route(part, query, principal, start, end) if reader else None
            if route is not None:
                used["aggregate"] = None
            if route is None or route.reads_raw:
                used["raw"] = None
            if route is not None and route.sql is not None:
                sql.append(route.sql)
                merger.add(part, i, self.backend.run(route.sql))
                continue
            source = sources[i] = route.source if route is not None else None
            args = (part, self.backend.dialect, query, principal, start, end)
            text = compile_part(*args, variances=eager, weighted=eager, source=source)
            rows = self.backend.run(text)
            if not eager and any(int(float(r.get("_maxsi") or 1)) > 1 for r in rows):
                text = compile_part(*args, source=source)
                rows = self.backend.run(text)
            sql.append(text)
            merger.add(part, i, rows)
        for i in sorted(merger.sampled_quantile_parts()):
            part = the_plan.parts[i]
            text = compile_part(
                part,
                self.backend.dialect,
                query,
                principal,
                start,
                end,
                ci=True,
                source=sources.get(i),
            )
            sql.append(text)
            merger.add(part, i, self.backend.run(text), ci=True)
        return list(used)

    @contextmanager
    def _reading(self) -> Iterator[AggregateReader | None]:
        """A reader of the aggregates in one snapshot of the store, or None (raw only)."""
        aggregates = self.aggregates
        if aggregates == "auto":
            aggregates = getattr(self.backend, "aggregates", None)
        snapshot = getattr(self.backend, "snapshot", None)
        if aggregates is None or self.backend.dialect != "duckdb" or snapshot is None:
            yield None
            return
        with snapshot() as cursor:
            yield aggregates.reader(cursor)


def _ceil_day(t: datetime) -> date:
    t = t.astimezone(UTC)
    d = t.date()
    return d if t.time() == time() else d + timedelta(days=1)


def run_query(backend: Backend, query: Query, principal: Principal, **kwargs: Any) -> Result:
    """One-off helper: ``Engine(backend, cache_ttl=0).run(query, principal)``."""
    return Engine(backend, cache_ttl=0, **kwargs).run(query, principal)


__all__ = ["Engine", "TimeRange", "run_query"]
