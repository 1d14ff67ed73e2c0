# ruff: noqa: E501  (long lines are SQL text)
"""Latency of every dashboard query on the embedded store, against a straightforward SQLite
implementation answering the same questions on the same rows, measured in the same run.

    python benchmarks/queries.py                 # 1M and 10M events
    python benchmarks/queries.py --sizes 1000000 # one size
    python benchmarks/queries.py --with-100m     # also 100M (SQLite up to --sqlite-max)
    python benchmarks/queries.py --reuse         # keep data files (and built tables) in --dir
    python benchmarks/queries.py --reuse --prepare-only  # only generate the data files

For each size, synthetic events (``benchmarks/synthetic.py``) are bulk-loaded into an
``EmbeddedStore``, its derived tables are built (``edgemetrics.query.aggregates``, timed)
and the rows are copied into SQLite (same columns, no index). Then:

* **The dashboard's questions**, generated from its own cards (``dashboard_kit/cards.py``):
  every card of every section (Overview, Content, Revenue, Audience, Platform health,
  and the page of one content item) is built for the platform owner and for the largest
  creator, for each period (7, 30, 90 days, all time) and each filter choice (none,
  content type, country, device, authenticated, all four), with an engine that records
  each distinct query it is asked. Each is timed on the engine (cache off; median of
  ``--repeat`` runs after a warm-up; CPU time of all threads beside it), and its answer
  compared with the engine reading raw rows only and with SQLite (up to ``--sqlite-all-max``
  every question, up to ``--sqlite-max`` those of the default view). The goal: every
  question at most 2 s at 100M events.
* **The whole Overview**: every card of the Overview section for one view, its distinct
  queries one after another, and its cards built in parallel through the dashboard's own
  shared answers (as the page loads them), for each view. The goal: at most 300 ms at 10M.
* **The earlier table** (14 hand-written queries, with hand-written SQLite), including
  its 8-query OVERVIEW figure, so runs stay comparable.

SQLite answers are compared with a relative tolerance of 1e-6, raw-row answers with 1e-9
(values, intervals, row counts and flags; ``tests/query`` holds the same check).
"""

from __future__ import annotations

import argparse
import math
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edgemetrics.dashboard_kit.answers import SharedAnswers
from edgemetrics.dashboard_kit.cards import CARDS, Context, section_cards
from edgemetrics.dashboard_kit.filters import ViewFilters
from synthetic import generate

from edgemetrics.layout import columns
from edgemetrics.query import EmbeddedBackend, Engine, Filter, Principal, Query, Result, TimeRange
from edgemetrics.query.aggregates import Aggregates
from edgemetrics.query.semantic import DIMENSIONS, METRICS, TABLES, col
from edgemetrics.store import DATASETS, EmbeddedStore

C = columns("content")
M = columns("commerce")
P = columns("platform")
L = columns("pipeline")
# Data files of another shape are generated again (2: time-ordered, item content types).
SHAPE = 2
PERIODS = ("7d", "30d", "90d", "all")
FILTER_SETS: tuple[dict[str, str], ...] = (
    {},
    {"content_type": "video"},
    {"country": "US"},
    {"device": "mobile"},
    {"authenticated": "authenticated"},
    {
        "content_type": "video",
        "country": "US",
        "device": "mobile",
        "authenticated": "authenticated",
    },
)
OVERVIEW_GOAL_MS = 300.0
QUERY_GOAL_MS = 2000.0


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the earlier table: hand-written queries and SQLite ---------------------------------------


@dataclass
class Bench:
    name: str
    query: Query
    principal: Principal
    sqlite: Callable[[int, int], str]  # (start_ms, end_ms) -> SQL
    keys: tuple[str, ...]  # result columns that identify a row
    overview: bool = False


def _range(s: int, e: int) -> str:
    return f"timestamp >= {s} AND timestamp < {e}"


def _weighted_quantile(
    table: str, value: str, where: str, keys: tuple[str, ...], level: float
) -> str:
    """quantileExactWeighted in plain SQL: the first value whose running weight reaches
    ``total * level`` (weights are integers, so that is ``ceil(total * level)``)."""
    part = f"PARTITION BY {', '.join(keys)} " if keys else ""
    k = "".join(f"{x}, " for x in keys)
    return (
        f"WITH g AS (SELECT {k}{value} AS v, sum(_sample_interval) AS w FROM {table} "
        f"WHERE {where} GROUP BY {k}v), "
        f"c AS (SELECT *, sum(w) OVER ({part}ORDER BY v ROWS UNBOUNDED PRECEDING) AS cw, "
        f"sum(w) OVER ({part.strip()}) AS tw FROM g) "
        f"SELECT {k}min(CASE WHEN cw >= tw * {level!r} THEN v END) AS q FROM c"
        + (f" GROUP BY {', '.join(keys)}" if keys else "")
    )


def benches(window: TimeRange, top_creator: str) -> list[Bench]:
    o = Principal.owner()
    t = "edgemetrics_content"
    views = f"sum(CASE WHEN {C['type']} = 'view' THEN _sample_interval ELSE 0 END)"

    def q(metrics: tuple[str, ...], dims: tuple[str, ...] = (), **kw: Any) -> Query:
        return Query(metrics, dims, time_range=window, **kw)

    return [
        Bench(
            "overview cards (content)",
            q(
                (
                    "views",
                    "unique_visitors",
                    "plays",
                    "completion_rate",
                    "watch_time",
                    "avg_watch_time",
                )
            ),
            o,
            lambda s, e: (
                f"SELECT {views} AS views, "
                f"sum(CASE WHEN {C['type']} = 'view' THEN {C['new_visitor']} * _sample_interval ELSE 0 END) AS unique_visitors, "
                f"sum(CASE WHEN {C['type']} = 'play_start' THEN _sample_interval ELSE 0 END) AS plays, "
                f"1.0 * sum(CASE WHEN {C['type']} = 'complete' THEN _sample_interval ELSE 0 END) / "
                f"sum(CASE WHEN {C['type']} = 'play_start' THEN _sample_interval ELSE 0 END) AS completion_rate, "
                f"sum(CASE WHEN {C['type']} = 'watch_time' THEN {C['watch_time']} * _sample_interval ELSE 0 END) AS watch_time, "
                f"sum(CASE WHEN {C['type']} = 'watch_time' THEN {C['watch_time']} * _sample_interval ELSE 0 END) / {views} AS avg_watch_time "
                f"FROM {t} WHERE {_range(s, e)}"
            ),
            (),
            True,
        ),
        Bench(
            "overview cards (revenue by currency)",
            q(("purchases", "revenue", "net_revenue"), ("currency",)),
            o,
            lambda s, e: (
                f"SELECT {M['currency']} AS currency, "
                f"sum(CASE WHEN {M['type']} = 'purchase' THEN _sample_interval ELSE 0 END) AS purchases, "
                f"sum(CASE WHEN {M['type']} = 'purchase' THEN {M['amount_minor']} * _sample_interval ELSE 0 END) AS revenue, "
                f"sum(CASE WHEN {M['type']} = 'purchase' THEN {M['amount_minor']} * _sample_interval "
                f"WHEN {M['type']} = 'refund' THEN -{M['amount_minor']} * _sample_interval ELSE 0 END) AS net_revenue "
                f"FROM edgemetrics_commerce WHERE {_range(s, e)} GROUP BY currency"
            ),
            ("currency",),
            True,
        ),
        Bench(
            "views per day",
            q(("views",), bucket="day"),
            o,
            lambda s, e: (
                f"SELECT (timestamp / 86400000) * 86400 AS bucket, {views} AS views "
                f"FROM {t} WHERE {_range(s, e)} AND {C['type']} = 'view' GROUP BY bucket"
            ),
            ("bucket",),
            True,
        ),
        Bench(
            "revenue per day",
            q(("revenue",), ("currency",), bucket="day"),
            o,
            lambda s, e: (
                f"SELECT (timestamp / 86400000) * 86400 AS bucket, {M['currency']} AS currency, "
                f"sum({M['amount_minor']} * _sample_interval) AS revenue FROM edgemetrics_commerce "
                f"WHERE {_range(s, e)} AND {M['type']} = 'purchase' GROUP BY bucket, currency"
            ),
            ("bucket", "currency"),
            True,
        ),
        Bench(
            "top content",
            q(("views",), ("content",), limit=10),
            o,
            lambda s, e: (
                f"SELECT {C['content_id']} AS content, {views} AS views FROM {t} "
                f"WHERE {_range(s, e)} AND {C['type']} = 'view' GROUP BY content "
                "ORDER BY views DESC, content LIMIT 10"
            ),
            ("content",),
            True,
        ),
        Bench(
            "countries",
            q(("views",), ("country",), limit=10),
            o,
            lambda s, e: (
                f"SELECT {C['country']} AS country, {views} AS views FROM {t} "
                f"WHERE {_range(s, e)} AND {C['type']} = 'view' GROUP BY country "
                "ORDER BY views DESC, country LIMIT 10"
            ),
            ("country",),
            True,
        ),
        Bench(
            "devices",
            q(("views",), ("device_class",)),
            o,
            lambda s, e: (
                f"SELECT {C['device_class']} AS device_class, {views} AS views FROM {t} "
                f"WHERE {_range(s, e)} AND {C['type']} = 'view' GROUP BY device_class"
            ),
            ("device_class",),
            True,
        ),
        Bench(
            "referrers",
            q(("views",), ("referrer_source",)),
            o,
            lambda s, e: (
                f"SELECT {C['referrer_source']} AS referrer_source, {views} AS views FROM {t} "
                f"WHERE {_range(s, e)} AND {C['type']} = 'view' GROUP BY referrer_source"
            ),
            ("referrer_source",),
        ),
        Bench(
            "creator: top content (largest creator)",
            q(("views", "completions"), ("content",), limit=10),
            Principal.creator(top_creator),
            lambda s, e: (
                f"SELECT {C['content_id']} AS content, {views} AS views, "
                f"sum(CASE WHEN {C['type']} = 'complete' THEN _sample_interval ELSE 0 END) AS completions "
                f"FROM {t} WHERE {_range(s, e)} AND index1 = '{top_creator}' "
                f"AND {C['creator_id']} = '{top_creator}' GROUP BY content "
                "ORDER BY views DESC, content LIMIT 10"
            ),
            ("content",),
        ),
        Bench(
            "api p95 per endpoint",
            q(("api_calls", "p95_response_time"), ("endpoint",), limit=1000),
            o,
            lambda s, e: (
                f"SELECT a.endpoint, a.api_calls, b.q AS p95_response_time FROM "
                f"(SELECT index1 AS endpoint, sum({P['calls']} * _sample_interval) AS api_calls "
                f"FROM edgemetrics_platform WHERE {_range(s, e)} AND {P['type']} = 'api_call' GROUP BY index1) a "
                f"JOIN ({_weighted_quantile('edgemetrics_platform', P['duration_ms'], _range(s, e) + ' AND ' + P['type'] + chr(61) + repr('api_call'), ('index1',), 0.95)}) b "
                "ON a.endpoint = b.index1"
            ),
            ("endpoint",),
        ),
        Bench(
            "error rate per day",
            q(("error_rate", "api_calls"), bucket="day"),
            o,
            lambda s, e: (
                f"SELECT (timestamp / 86400000) * 86400 AS bucket, "
                f"1.0 * sum(CASE WHEN {P['status_code']} >= 500 THEN {P['calls']} * _sample_interval ELSE 0 END) "
                f"/ sum({P['calls']} * _sample_interval) AS error_rate, sum({P['calls']} * _sample_interval) AS api_calls "
                f"FROM edgemetrics_platform WHERE {_range(s, e)} AND {P['type']} = 'api_call' GROUP BY bucket"
            ),
            ("bucket",),
        ),
        Bench(
            "job duration per job",
            q(("jobs", "avg_job_duration"), ("job_name",)),
            o,
            lambda s, e: (
                f"SELECT {P['job_name']} AS job_name, sum(_sample_interval) AS jobs, "
                f"sum({P['duration_ms']} * _sample_interval) / sum(_sample_interval) AS avg_job_duration "
                f"FROM edgemetrics_platform WHERE {_range(s, e)} AND {P['type']} = 'job' GROUP BY job_name"
            ),
            ("job_name",),
        ),
        Bench(
            "db query p95",
            q(("db_queries", "p95_db_query_time")),
            o,
            lambda s, e: (
                f"SELECT (SELECT sum(_sample_interval) FROM edgemetrics_platform WHERE {_range(s, e)} "
                f"AND {P['type']} = 'db_query') AS db_queries, (SELECT q FROM ("
                f"{_weighted_quantile('edgemetrics_platform', P['duration_ms'], _range(s, e) + ' AND ' + P['type'] + chr(61) + repr('db_query'), (), 0.95)})) "
                "AS p95_db_query_time"
            ),
            (),
        ),
        Bench(
            "pipeline drop rate",
            q(("pipeline_drop_rate", "pipeline_events_in")),
            o,
            lambda s, e: (
                f"SELECT sum(({L['dropped_buffer_full']} + {L['dropped_spool_full']} + "
                f"{L['dropped_invalid']} + {L['dropped_expired']}) * _sample_interval) / "
                f"sum({L['events_in']} * _sample_interval) AS pipeline_drop_rate, "
                f"sum({L['events_in']} * _sample_interval) AS pipeline_events_in "
                f"FROM edgemetrics_pipeline WHERE {_range(s, e)}"
            ),
            (),
        ),
    ]


# --- any engine query, answered by plain SQLite SQL ------------------------------------------


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sqlite_dim(name: str, family: str) -> str:
    dim = DIMENSIONS[name]
    column = dim.column(family)
    if dim.kind == "status_class":
        return f"CAST({column} / 100 AS INTEGER)"
    return column


def _sqlite_filter(flt: Filter, family: str) -> str:
    dim = DIMENSIONS[flt.dimension]
    expr = _sqlite_dim(flt.dimension, family)
    values = []
    for v in flt.values:
        if dim.kind == "bool":
            values.append("1" if v == "authenticated" else "0")
        elif dim.kind == "status_class":
            values.append(str(int(v[0])))
        else:
            values.append(_sql_text(v))
    cond = f"{expr} IN ({', '.join(values)})"
    return f"NOT ({cond})" if flt.op in ("ne", "not_in") else cond


def _sqlite_label(name: str, raw: Any) -> Any:
    dim = DIMENSIONS[name]
    if dim.kind == "bool":
        return "authenticated" if raw and float(raw) > 0 else "anonymous"
    if dim.kind == "status_class":
        return f"{int(raw)}xx"
    return raw


def sqlite_answer(
    con: sqlite3.Connection, query: Query, principal: Principal, now: datetime
) -> list[dict[str, Any]]:
    """The answer to ``query`` computed the plain way: one ``GROUP BY`` per family with
    ``sum(CASE ...)`` per summed component, a window query per quantile, ratios and
    differences in Python, then sorted and paged like the engine (ties on dimensions)."""
    rng = query.time_range.resolve(now)
    assert rng.start is not None and rng.end is not None
    start_ms, end_ms = int(rng.start.timestamp() * 1000), int(rng.end.timestamp() * 1000)
    if query.bucket not in (None, "day", "hour") or (query.bucket and query.tz != "UTC"):
        raise ValueError("the SQLite peer buckets UTC days and hours only")
    width = {"day": 86_400_000, "hour": 3_600_000}.get(query.bucket or "", 0)
    keys = query.output_dimensions
    groups: dict[tuple[Any, ...], dict[str, float]] = {}
    quantiles: dict[tuple[Any, ...], dict[str, float | None]] = defaultdict(dict)

    def key_sql(family: str) -> list[str]:
        out = []
        for name in keys:
            out.append(
                f"(timestamp / {width}) * {width // 1000}"
                if name == "bucket"
                else _sqlite_dim(name, family)
            )
        return out

    def where(family: str, types: Iterable[str]) -> str:
        conds = [
            _range(start_ms, end_ms),
            f"{col(family, 'type')} IN ({', '.join(_sql_text(t) for t in types)})",
        ]
        if principal.role == "creator":
            assert principal.creator_id is not None
            who = _sql_text(principal.creator_id)
            conds.append(f"index1 = {who} AND {col(family, 'creator_id')} = {who}")
        conds += [_sqlite_filter(f, family) for f in query.filters]
        return " AND ".join(conds)

    def label(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            v if n == "bucket" else _sqlite_label(n, v) for n, v in zip(keys, row, strict=True)
        )

    components: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for name in query.metrics:
        m = METRICS[name]
        if m.kind == "quantile":
            continue
        for part in m.parts or (name,):
            c = METRICS[part].sum_components()[0]
            if (part, c) not in components[c.family]:
                components[c.family].append((part, c))
    for family, comps in components.items():
        sums = []
        for _part, c in comps:
            cond = f"{col(c.family, 'type')} IN ({', '.join(_sql_text(t) for t in c.types)})"
            if c.min_status_class is not None:
                cond += f" AND CAST({col(c.family, 'status_code')} / 100 AS INTEGER) >= {c.min_status_class}"
            sums.append(f"sum(CASE WHEN {cond} THEN {c.expr.sql()} * _sample_interval ELSE 0 END)")
        types = sorted({t for _, c in comps for t in c.types})
        ks = key_sql(family)
        sql = f"SELECT {', '.join([*ks, *sums])} FROM {TABLES[family]} WHERE {where(family, types)}"
        if ks:
            sql += f" GROUP BY {', '.join(str(i + 1) for i in range(len(ks)))}"
        for row in con.execute(sql).fetchall():
            if ks and all(v is None for v in row[len(ks) :]):
                continue
            g = groups.setdefault(label(row[: len(ks)]), {})
            for (part, _), v in zip(comps, row[len(ks) :], strict=True):
                g[part] = float(v or 0.0)
    for name in query.metrics:
        m = METRICS[name]
        if m.kind != "quantile":
            continue
        assert m.quantile_of is not None
        family = m.quantile_of.family
        ks = key_sql(family)
        aliased = [f"{k} AS k{i}" for i, k in enumerate(ks)]
        value = m.quantile_of.sql()
        table = f"(SELECT {', '.join([*aliased, '*'])} FROM {TABLES[family]} WHERE {where(family, m.quantile_types)})"
        sql = _weighted_quantile(
            table, value, "1 = 1", tuple(f"k{i}" for i in range(len(ks))), m.level
        )
        for row in con.execute(sql).fetchall():
            key = label(row[: len(ks)])
            quantiles[key][name] = row[len(ks)]
            groups.setdefault(key, {})
    out = []
    if not keys and not groups:
        groups[()] = {}
    for key, sums in groups.items():
        rec: dict[str, Any] = dict(zip(keys, key, strict=True))
        for name in query.metrics:
            m = METRICS[name]
            if m.kind == "sum":
                rec[name] = sums.get(name, 0.0)
            elif m.kind == "difference":
                rec[name] = sums.get(m.parts[0], 0.0) - sums.get(m.parts[1], 0.0)
            elif m.kind == "ratio":
                den = sums.get(m.parts[1], 0.0)
                rec[name] = sums.get(m.parts[0], 0.0) / den if den else None
            else:
                rec[name] = quantiles.get(key, {}).get(name)
        out.append(rec)
    if keys:
        out.sort(key=lambda r: tuple(r[k] for k in keys))
        order = query.order_by or (("bucket",) if query.bucket else ("-" + query.metrics[0],))
        for spec in reversed(order):
            name = spec.removeprefix("-")
            present = [r for r in out if r[name] is not None]
            missing = [r for r in out if r[name] is None]
            out = sorted(present, key=lambda r: r[name], reverse=spec.startswith("-")) + missing
        out = out[query.offset : query.offset + query.limit]
    return out


# --- comparing answers ------------------------------------------------------------------------


def _norm(v: Any) -> Any:
    if isinstance(v, datetime):
        return int(v.timestamp())
    if isinstance(v, float) and v.is_integer() and abs(v) > 1e6:
        return int(v)
    return v


def _close(x: Any, y: Any, rel: float) -> bool:
    if x is None or y is None:
        return x is y
    return math.isclose(float(x), float(y), rel_tol=rel, abs_tol=1e-9)


def same_as_sqlite(
    result: Result, rows: list[dict[str, Any]], keys: tuple[str, ...], metrics: tuple[str, ...]
) -> bool:
    def index(found: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        return {tuple(_norm(r[k]) for k in keys): r for r in found}

    a = index([{**r.dimensions, **r.metrics} for r in result.rows])
    b = index(rows)
    if a.keys() != b.keys():
        return False
    return all(_close(ra[m], b[k][m], 1e-6) for k, ra in a.items() for m in metrics)


def same_as_raw(a: Result, b: Result) -> bool:
    if len(a.rows) != len(b.rows) or a.row_count != b.row_count or a.estimated != b.estimated:
        return False
    for ra, rb in zip(a.rows, b.rows, strict=True):
        if ra.dimensions != rb.dimensions or ra.row_count != rb.row_count:
            return False
        for name, value in ra.metrics.items():
            if not _close(value, rb.metrics[name], 1e-9):
                return False
            ia, ib = ra.ci[name], rb.ci[name]
            if (ia is None) != (ib is None) or (
                ia and ib and not all(_close(x, y, 1e-9) for x, y in zip(ia, ib, strict=True))
            ):
                return False
    return True


# --- the dashboard's questions ----------------------------------------------------------------


View = tuple[str, str, str]  # (principal scope, period, filters)


@dataclass
class Question:
    query: Query
    principal: Principal
    cards: set[str] = field(default_factory=set)
    views: set[View] = field(default_factory=set)
    wall: float = 0.0
    cpu: float = 0.0

    def describe(self) -> str:
        q = self.query
        parts = [",".join(q.metrics)]
        if q.output_dimensions:
            parts.append("by " + ",".join(q.output_dimensions))
        if q.filters:
            parts.append(
                "where " + ",".join(f"{f.dimension}={'|'.join(f.values)}" for f in q.filters)
            )
        parts.append(q.time_range.name or "custom range")
        who = "creator" if self.principal.role == "creator" else "owner"
        return f"{who}: {' '.join(parts)} [{', '.join(sorted(self.cards))}]"


class Recorder:
    """The engine a card is built with: answers through a caching engine, and remembers
    each distinct question with the cards and views that asked it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.questions: dict[tuple[str, str], Question] = {}
        self.card = ""
        self.view: View = ("", "", "")

    def run(self, query: Query, principal: Principal) -> Result:
        q = self.questions.setdefault((principal.scope, query.key()), Question(query, principal))
        q.cards.add(self.card)
        q.views.add(self.view)
        return self.engine.run(query, principal)


def view_name(view: View) -> str:
    scope, period, filters = view
    return f"{'owner' if scope == 'owner' else 'creator'} {period} {filters or 'no filter'}"


def views_of(principals: list[Principal]) -> list[tuple[View, Principal, ViewFilters]]:
    out = []
    for principal in principals:
        for period in PERIODS:
            for fs in FILTER_SETS:
                filters = ViewFilters.from_params({"period": period, **fs})
                label = ",".join(f"{k}={v}" for k, v in fs.items())
                out.append(((principal.scope, period, label), principal, filters))
    return out


def dashboard_questions(
    engine: Engine, now: datetime, principals: list[Principal], item: str
) -> Recorder:
    recorder = Recorder(
        Engine(engine.backend, aggregates=engine.aggregates, cache_ttl=3600, clock=lambda: now)
    )
    for view, principal, filters in views_of(principals):
        for card in CARDS.values():
            if card.owner_only and principal.role != "owner":
                continue
            recorder.card, recorder.view = card.id, view
            content_id = item if card.section == "item" else None
            card.build(
                Context(
                    recorder, principal, filters, lambda ids: {}, content_id=content_id, now=now
                )
            )
    return recorder


def measure(run: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Median wall and CPU seconds of ``repeat`` runs after a warm-up, and the last answer."""
    out = run()
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = run()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def overview_times(
    engine: Engine,
    now: datetime,
    view: View,
    principal: Principal,
    filters: ViewFilters,
    questions: list[Question],
    repeat: int,
) -> tuple[float, float, float]:
    """The whole Overview of one view: its distinct queries one after another (wall, CPU),
    and its cards built in parallel through the dashboard's shared answers (wall)."""

    def one_after_another() -> None:
        for q in questions:
            engine.run(q.query, q.principal)

    cards = section_cards("overview")

    def in_parallel() -> None:
        shared = SharedAnswers(engine, ttl=30)  # a fresh page load: nothing answered yet
        with ThreadPoolExecutor(len(cards)) as pool:
            list(
                pool.map(
                    lambda c: c.build(Context(shared, principal, filters, lambda ids: {}, now=now)),
                    cards,
                )
            )

    wall, cpu, _ = measure(one_after_another, repeat)
    parallel, _, _ = measure(in_parallel, repeat)
    return wall, cpu, parallel


# --- data ---------------------------------------------------------------------------------------

# The store's unique event-id index serves ingestion (replays are stored once); reads never
# use it. At 100M rows it would cost several GB of memory to build, so the largest size is
# loaded into the same tables without it.
UNIQUE_INDEX_MAX = 20_000_000


def _tables_without_unique_index(path: str) -> None:
    import duckdb

    from edgemetrics.store import _ddl

    con = duckdb.connect(path)
    for table in DATASETS:
        con.execute(
            _ddl(table).replace("event_id VARCHAR PRIMARY KEY", "event_id VARCHAR NOT NULL")
        )
    con.close()


def _meta(store: EmbeddedStore) -> dict[str, Any] | None:
    rows = store.query(
        "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'bench_meta'"
    )
    if not rows[0]["n"]:
        return None
    found = store.query("SELECT * FROM bench_meta")
    return found[0] if found else None


def load_sqlite(store: EmbeddedStore, path: str) -> float:
    started = time.perf_counter()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    for table in DATASETS:
        names = [
            r["column_name"]
            for r in store.query(
                f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' "
                "ORDER BY ordinal_position"
            )
        ]
        con.execute(f"CREATE TABLE {table} ({', '.join(names)})")
        select = ", ".join(
            "epoch_ms(timestamp) AS timestamp" if n == "timestamp" else n for n in names
        )
        cur = store._cursor().execute(f"SELECT {select} FROM {table}")
        marks = ", ".join("?" for _ in names)
        while True:
            batch = cur.fetchmany(100_000)
            if not batch:
                break
            con.executemany(f"INSERT INTO {table} VALUES ({marks})", batch)
        con.commit()
    con.close()
    return time.perf_counter() - started


def open_store(n: int, workdir: str, reuse: bool) -> tuple[EmbeddedStore, datetime, str]:
    path = os.path.join(workdir, f"bench-{n}.duckdb")
    sqlite_path = os.path.join(workdir, f"bench-{n}.sqlite")
    if reuse and os.path.exists(path):
        store = EmbeddedStore(path)
        meta = _meta(store)
        if meta and meta["n"] == n and meta.get("shape") == SHAPE:
            now = meta["generated_at"].replace(tzinfo=UTC)
            print(f"\n== {n:,} events: reusing {path} (generated {now.isoformat()})")
            return store, now, sqlite_path
        store.close()
    for p in (path, path + ".wal", sqlite_path):
        if os.path.exists(p):
            os.remove(p)
    if n > UNIQUE_INDEX_MAX:
        _tables_without_unique_index(path)
    store = EmbeddedStore(path)
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = time.perf_counter()
    generate(store, n, now=now)
    store.execute("CREATE TABLE bench_meta (n BIGINT, generated_at TIMESTAMP, shape INTEGER)")
    store.execute("INSERT INTO bench_meta VALUES (?, ?, ?)", [n, now.replace(tzinfo=None), SHAPE])
    store.execute("CHECKPOINT")
    print(f"\n== {n:,} events: generated in DuckDB in {time.perf_counter() - t0:.1f} s")
    return store, now, sqlite_path


def build_derived(store: EmbeddedStore, now: datetime) -> Aggregates:
    t, c = time.perf_counter(), time.process_time()
    aggregates = Aggregates(store, clock=lambda: now)
    report = aggregates.refresh()
    took, cpu = time.perf_counter() - t, time.process_time() - c
    store.execute("CHECKPOINT")
    rows = sum(aggregates.sizes.values())
    if report.segments_built:
        print(
            f"   derived tables built: {report.segments_built} segments in {took:.1f} s wall, {cpu:.1f} s CPU "
            f"(load average {load_average()})"
        )
    else:
        print(
            f"   derived tables: already built (a refresh found nothing to do in {took * 1000:.0f} ms)"
        )
    largest = sorted(aggregates.sizes.items(), key=lambda kv: -kv[1])
    print(
        f"   derived rows: {rows:,} in {len(aggregates.sizes)} tables; "
        + ", ".join(f"{k} {v:,}" for k, v in largest)
    )
    return aggregates


# --- one size -----------------------------------------------------------------------------------


def legacy_table(
    engine: Engine,
    store: EmbeddedStore,
    sq: sqlite3.Connection | None,
    now: datetime,
    top: str,
    repeat: int,
) -> None:
    window = TimeRange.between(now - timedelta(days=30), now + timedelta(seconds=1))
    assert window.start is not None and window.end is not None
    s_ms, e_ms = int(window.start.timestamp() * 1000), int(window.end.timestamp() * 1000)
    print("\n   The earlier table (14 hand-written queries, last 30 days):")
    print(
        f"   {'query':42} {'embedded':>11} {'(cpu)':>11} {'sqlite':>11} {'ratio':>8}  same answer"
    )
    overview_e = overview_cpu = overview_s = 0.0
    all_benches = benches(window, top)
    for b in all_benches:
        e_t, e_cpu, result = measure(lambda b=b: engine.run(b.query, b.principal), repeat)
        line = f"   {b.name:42} {e_t * 1000:9.1f}ms {e_cpu * 1000:9.1f}ms"
        if sq is not None:
            t = time.perf_counter()
            rows = [dict(r) for r in sq.execute(b.sqlite(s_ms, e_ms)).fetchall()]
            s_t = time.perf_counter() - t
            ok = same_as_sqlite(result, rows, b.keys, b.query.metrics)
            line += f" {s_t * 1000:9.1f}ms {s_t / e_t:7.1f}x  {'yes' if ok else 'NO'}"
            overview_s += s_t if b.overview else 0.0
        else:
            line += f" {'-':>11} {'-':>8}  -"
        if b.overview:
            overview_e += e_t
            overview_cpu += e_cpu
        print(line)
    chosen = [b for b in all_benches if b.overview]

    def parallel() -> None:
        with ThreadPoolExecutor(len(chosen)) as pool:
            list(pool.map(lambda b: engine.run(b.query, b.principal), chosen))

    wall, _, _ = measure(parallel, repeat)
    line = f"   {'OVERVIEW (these 8), one after another':42} {overview_e * 1000:9.1f}ms {overview_cpu * 1000:9.1f}ms"
    if sq is not None:
        line += f" {overview_s * 1000:9.1f}ms {overview_s / overview_e:7.1f}x"
    print(line)
    print(f"   {'OVERVIEW (these 8), in parallel (wall)':42} {wall * 1000:9.1f}ms")


def run_size(n: int, args: argparse.Namespace) -> None:
    store, now, sqlite_path = open_store(n, args.dir, args.reuse)
    print(f"   load average {load_average()}")
    if args.prepare_only:
        print(
            f"   data ready (--prepare-only: derived tables are built by the run itself); load average {load_average()}"
        )
        store.close()
        return
    aggregates = build_derived(store, now)
    top = store.query(
        "SELECT index1 FROM edgemetrics_content GROUP BY index1 ORDER BY count(*) DESC LIMIT 1"
    )[0]["index1"]
    item = store.query(
        f"SELECT {C['content_id']} AS c FROM edgemetrics_content WHERE index1 = ? AND {C['type']} = 'view' "
        "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
        [top],
    )[0]["c"]
    sq = None
    if n <= args.sqlite_max:
        if not os.path.exists(sqlite_path):
            took = load_sqlite(store, sqlite_path)
            print(f"   copied into SQLite in {took:.1f} s")
        sq = sqlite3.connect(sqlite_path)
        sq.row_factory = sqlite3.Row
    engine = Engine(EmbeddedBackend(store), aggregates=aggregates, cache_ttl=0, clock=lambda: now)
    raw = Engine(EmbeddedBackend(store), aggregates=None, cache_ttl=0, clock=lambda: now)
    threads = store.query("SELECT current_setting('threads') AS t")[0]["t"]
    print(
        f"   engine: DuckDB with {threads} threads; largest creator {top} (its item {item}); load average {load_average()}"
    )

    legacy_table(engine, store, sq, now, top, args.repeat)

    owner, creator = Principal.owner(), Principal.creator(top)
    recorder = dashboard_questions(engine, now, [owner, creator], item)
    questions = list(recorder.questions.values())
    default_views = {(owner.scope, "30d", ""), (creator.scope, "30d", "")}
    print(
        f"\n   The dashboard's questions: {len(questions)} distinct queries from {len(CARDS)} cards x "
        f"{len(PERIODS)} periods x {len(FILTER_SETS)} filter choices x owner and creator "
        f"(load average {load_average()})"
    )
    started = time.perf_counter()
    for q in questions:
        q.wall, q.cpu, _ = measure(lambda q=q: engine.run(q.query, q.principal), args.repeat)
    print(f"   timed in {time.perf_counter() - started:.0f} s; load average {load_average()}")

    by_section: dict[str, list[Question]] = defaultdict(list)
    for q in questions:
        for section in {CARDS[c].section for c in q.cards}:
            by_section[section].append(q)
    print(
        f"   {'section':12} {'queries':>7} {'median':>9} {'p95':>9} {'max':>9} {'max cpu':>9}  slowest"
    )
    for section in ("overview", "content", "item", "revenue", "audience", "health"):
        qs = sorted(by_section.get(section, []), key=lambda q: q.wall)
        if not qs:
            continue
        walls = [q.wall * 1000 for q in qs]
        p95 = walls[min(len(walls) - 1, math.ceil(0.95 * len(walls)) - 1)]
        print(
            f"   {section:12} {len(qs):7} {statistics.median(walls):7.1f}ms {p95:7.1f}ms {walls[-1]:7.1f}ms "
            f"{qs[-1].cpu * 1000:7.1f}ms  {qs[-1].describe()}"
        )
    slowest = sorted(questions, key=lambda q: -q.wall)
    print("   the 12 slowest:")
    for q in slowest[:12]:
        print(f"     {q.wall * 1000:8.1f}ms (cpu {q.cpu * 1000:7.1f}ms)  {q.describe()}")
    worst = slowest[0].wall * 1000
    over = [q for q in questions if q.wall * 1000 > QUERY_GOAL_MS]
    print(
        f"   EVERY DASHBOARD QUERY: slowest {worst:.1f} ms = {worst / QUERY_GOAL_MS:.2f} x the 2 s goal; "
        f"{len(over)} of {len(questions)} over 2 s (the goal is set for 100M events)"
    )

    # Same answers: the raw rows (every question up to --raw-all-max, else those of the
    # default views and every Overview), SQLite (every question up to --sqlite-all-max).
    overview_cards = {c.id for c in section_cards("overview")}
    checked = [
        q
        for q in questions
        if n <= args.raw_all_max or q.views & default_views or q.cards & overview_cards
    ]
    wrong = [
        q
        for q in checked
        if not same_as_raw(engine.run(q.query, q.principal), raw.run(q.query, q.principal))
    ]
    print(
        f"   same answer as raw rows (values, intervals, row counts, flags): {len(checked) - len(wrong)} of {len(checked)} checked"
        + (f"; DIFFERENT: {[q.describe() for q in wrong[:5]]}" if wrong else "")
    )
    if sq is not None:
        plain = sq
        plain.row_factory = None
        chosen = (
            questions
            if n <= args.sqlite_all_max
            else [q for q in questions if q.views & default_views]
        )
        wrong = []
        sqlite_time = 0.0
        engine_time = 0.0
        for q in chosen:
            s = time.perf_counter()
            rows = sqlite_answer(plain, q.query, q.principal, now)
            sqlite_time += time.perf_counter() - s
            engine_time += q.wall
            keys = q.query.output_dimensions
            if not same_as_sqlite(engine.run(q.query, q.principal), rows, keys, q.query.metrics):
                wrong.append(q)
        print(
            f"   same answer as SQLite: {len(chosen) - len(wrong)} of {len(chosen)} questions"
            + (" (those of the default views)" if len(chosen) < len(questions) else " (all)")
            + f"; SQLite took {sqlite_time:.1f} s for them, the engine {engine_time:.1f} s "
            f"({sqlite_time / engine_time:.1f}x)"
            + (f"; DIFFERENT: {[q.describe() for q in wrong[:5]]}" if wrong else "")
        )
        plain.row_factory = sqlite3.Row

    # The whole Overview, per view.
    per_view: list[tuple[View, float, float, float]] = []
    for view, principal, filters in views_of([owner, creator]):
        qs = [q for q in questions if view in q.views and q.cards & overview_cards]
        wall, cpu, parallel = overview_times(engine, now, view, principal, filters, qs, args.repeat)
        per_view.append((view, wall, cpu, parallel))
    print(
        f"\n   THE WHOLE OVERVIEW ({len(overview_cards)} cards) per view (load average {load_average()}):"
    )
    print(f"   {'view':52} {'one after another':>18} {'(cpu)':>10} {'in parallel':>12}")
    for view, wall, cpu, parallel in per_view:
        if (
            view in default_views
            or wall == max(v[1] for v in per_view)
            or parallel == max(v[3] for v in per_view)
        ):
            print(
                f"   {view_name(view):52} {wall * 1000:16.1f}ms {cpu * 1000:8.1f}ms {parallel * 1000:10.1f}ms"
            )
    seq = sorted(v[1] for v in per_view)
    par = sorted(v[3] for v in per_view)
    owner_default = next(v for v in per_view if v[0] == (owner.scope, "30d", ""))
    print(
        f"   over all {len(per_view)} views: one after another median {statistics.median(seq) * 1000:.1f} ms, "
        f"max {seq[-1] * 1000:.1f} ms; in parallel median {statistics.median(par) * 1000:.1f} ms, max {par[-1] * 1000:.1f} ms"
    )
    print(
        f"   WHOLE OVERVIEW (owner, 30 days): one after another {owner_default[1] * 1000:.1f} ms = "
        f"{owner_default[1] * 1000 / OVERVIEW_GOAL_MS:.2f} x the 300 ms goal; in parallel {owner_default[3] * 1000:.1f} ms = "
        f"{owner_default[3] * 1000 / OVERVIEW_GOAL_MS:.2f} x; worst view {max(seq[-1], par[-1]) * 1000:.1f} ms = "
        f"{max(seq[-1], par[-1]) * 1000 / OVERVIEW_GOAL_MS:.2f} x (the goal is set for 10M events)"
    )
    print(f"   load average now {load_average()}")
    if sq is not None:
        sq.close()
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--with-100m", action="store_true", help="add 100,000,000 events")
    parser.add_argument(
        "--sqlite-max", type=int, default=10_000_000, help="largest size also loaded into SQLite"
    )
    parser.add_argument(
        "--sqlite-all-max",
        type=int,
        default=1_000_000,
        help="largest size where SQLite answers every question (above: those of the default views)",
    )
    parser.add_argument(
        "--raw-all-max",
        type=int,
        default=10_000_000,
        help="largest size where every answer is checked against raw rows (above: default views and the Overview)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse data files of an earlier run in --dir (same sizes)",
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="generate the data files, then stop (with --reuse, a later run uses them)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.with_100m:
        sizes.append(100_000_000)
    print(f"edgemetrics query benchmark: {os.cpu_count()} cores, DuckDB embedded store vs SQLite")
    print(f"load average at start: {load_average()} (other work on this machine slows both)")
    for n in sizes:
        run_size(n, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
