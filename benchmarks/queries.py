# ruff: noqa: E501  (long lines are SQL text)
"""Latency of every dashboard query on the embedded store, against a straightforward SQLite
implementation answering the same questions on the same rows, measured in the same run.

    python benchmarks/queries.py                 # 1M and 10M events
    python benchmarks/queries.py --sizes 1000000 # one size
    python benchmarks/queries.py --with-100m     # also 100M (DuckDB only unless --sqlite-max)

For each size: synthetic events are bulk-loaded into an ``EmbeddedStore`` with SQL
(``benchmarks/synthetic.py``), copied row by row into SQLite (same columns, no index: the
30-day window spans the whole table, where an index on ``timestamp`` only slows SQLite
down; loaded in batches through the ``sqlite3`` module), then each dashboard query runs
through ``Engine`` (cache off; median of ``--repeat`` runs after one warm-up) and as plain
SQLite SQL (one run). The answers are compared (relative tolerance 1e-6) and both
latencies and their ratio are printed, with the embedded run's CPU time (all DuckDB
threads), which shows the work done when other jobs share the machine's two cores. "Overview" is the sum of its queries run one after
another, and also the wall time when they run in parallel as the page loads its cards.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import generate

from edgemetrics.layout import columns
from edgemetrics.query import EmbeddedBackend, Engine, Principal, Query, TimeRange
from edgemetrics.store import DATASETS, EmbeddedStore

C = columns("content")
M = columns("commerce")
P = columns("platform")
L = columns("pipeline")


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


def _weighted_quantile(table: str, value: str, where: str, key: str | None, level: float) -> str:
    part = f"PARTITION BY {key} " if key else ""
    k = f"{key}, " if key else ""
    return (
        f"WITH g AS (SELECT {k}{value} AS v, sum(_sample_interval) AS w FROM {table} "
        f"WHERE {where} GROUP BY {k}v), "
        f"c AS (SELECT *, sum(w) OVER ({part}ORDER BY v ROWS UNBOUNDED PRECEDING) AS cw, "
        f"sum(w) OVER ({part.strip()}) AS tw FROM g) "
        f"SELECT {k}min(CASE WHEN cw >= tw * {level} THEN v END) AS q FROM c"
        + (f" GROUP BY {key}" if key else "")
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
                f"JOIN ({_weighted_quantile('edgemetrics_platform', P['duration_ms'], _range(s, e) + ' AND ' + P['type'] + chr(61) + repr('api_call'), 'index1', 0.95)}) b "
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
                f"{_weighted_quantile('edgemetrics_platform', P['duration_ms'], _range(s, e) + ' AND ' + P['type'] + chr(61) + repr('db_query'), None, 0.95)})) "
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


def _has_meta(store: EmbeddedStore) -> bool:
    rows = store.query(
        "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'bench_meta'"
    )
    return bool(rows[0]["n"])


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


def _norm(v: Any) -> Any:
    if isinstance(v, datetime):
        return int(v.timestamp())
    if isinstance(v, float) and v.is_integer() and abs(v) > 1e6:
        return int(v)
    return v


def _same(
    engine_rows: list[dict[str, Any]],
    sqlite_rows: list[dict[str, Any]],
    keys: tuple[str, ...],
    metrics: tuple[str, ...],
) -> bool:
    def index(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        return {tuple(_norm(r[k]) for k in keys): r for r in rows}

    a, b = index(engine_rows), index(sqlite_rows)
    if a.keys() != b.keys():
        return False
    for key, ra in a.items():
        for m in metrics:
            x, y = ra[m], b[key][m]
            if x is None or y is None:
                if x is not y:
                    return False
            elif not math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-9):
                return False
    return True


def run_size(n: int, workdir: str, repeat: int, sqlite_max: int, reuse: bool) -> None:
    path = os.path.join(workdir, f"bench-{n}.duckdb")
    sqlite_path = os.path.join(workdir, f"bench-{n}.sqlite")
    store = None
    now = datetime.now(UTC).replace(microsecond=0)
    if reuse and os.path.exists(path):
        store = EmbeddedStore(path)
        meta = store.query("SELECT * FROM bench_meta") if _has_meta(store) else []
        if meta and meta[0]["n"] == n:
            now = meta[0]["generated_at"].replace(tzinfo=UTC)
            print(f"\n== {n:,} events: reusing {path} (generated {now.isoformat()})")
        else:
            store.close()
            store = None
    if store is None:
        for p in (path, path + ".wal", sqlite_path):
            if os.path.exists(p):
                os.remove(p)
        if n > UNIQUE_INDEX_MAX:
            _tables_without_unique_index(path)
        store = EmbeddedStore(path)
        t0 = time.perf_counter()
        generate(store, n, now=now)
        store.execute("CREATE TABLE bench_meta (n BIGINT, generated_at TIMESTAMP)")
        store.execute("INSERT INTO bench_meta VALUES (?, ?)", [n, now.replace(tzinfo=None)])
        print(f"\n== {n:,} events: generated in DuckDB in {time.perf_counter() - t0:.1f} s")
    window = TimeRange.between(now - timedelta(days=30), now + timedelta(seconds=1))
    assert window.start is not None and window.end is not None
    s_ms, e_ms = int(window.start.timestamp() * 1000), int(window.end.timestamp() * 1000)
    top = store.query(
        "SELECT index1 FROM edgemetrics_content GROUP BY index1 ORDER BY count(*) DESC LIMIT 1"
    )[0]["index1"]
    sq = None
    if n <= sqlite_max:
        if not os.path.exists(sqlite_path):
            took = load_sqlite(store, sqlite_path)
            print(f"   copied into SQLite in {took:.1f} s")
        sq = sqlite3.connect(sqlite_path)
        sq.row_factory = sqlite3.Row
    engine = Engine(EmbeddedBackend(store), cache_ttl=0)
    # cpu: CPU time of this process (all DuckDB threads) for the same run: the work done,
    # which other load on a shared machine does not inflate the way it inflates wall time.
    print(
        f"   {'query':42} {'embedded':>11} {'(cpu)':>11} {'sqlite':>11} {'ratio':>8}  same answer"
    )
    overview_cpu = 0.0
    overview_e = overview_s = 0.0
    worst = 0.0
    for b in benches(window, top):
        engine.run(b.query, b.principal)  # warm-up
        times = []
        cpu = []
        for _ in range(repeat):
            t = time.perf_counter()
            c = time.process_time()
            result = engine.run(b.query, b.principal)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        e_t = statistics.median(times)
        e_cpu = statistics.median(cpu)
        overview_cpu += e_cpu if b.overview else 0.0
        worst = max(worst, e_t)
        line = f"   {b.name:42} {e_t * 1000:9.1f}ms {e_cpu * 1000:9.1f}ms"
        if sq is not None:
            t = time.perf_counter()
            rows = [dict(r) for r in sq.execute(b.sqlite(s_ms, e_ms)).fetchall()]
            s_t = time.perf_counter() - t
            same = _same(
                [{**r.dimensions, **r.metrics} for r in result.rows], rows, b.keys, b.query.metrics
            )
            line += f" {s_t * 1000:9.1f}ms {s_t / e_t:7.1f}x  {'yes' if same else 'NO'}"
            if b.overview:
                overview_s += s_t
        else:
            line += f" {'-':>11} {'-':>8}  -"
        if b.overview:
            overview_e += e_t
        print(line)
    overview = [b for b in benches(window, top) if b.overview]
    with ThreadPoolExecutor(len(overview)) as pool:
        walls = []
        for _ in range(repeat):
            t = time.perf_counter()
            list(pool.map(lambda b: engine.run(b.query, b.principal), overview))
            walls.append(time.perf_counter() - t)
    line = (
        f"   {'OVERVIEW, queries one after another':42} {overview_e * 1000:9.1f}ms "
        f"{overview_cpu * 1000:9.1f}ms"
    )
    if sq is not None:
        line += f" {overview_s * 1000:9.1f}ms {overview_s / overview_e:7.1f}x"
    print(line)
    print(f"   {'OVERVIEW, cards in parallel (wall)':42} {statistics.median(walls) * 1000:9.1f}ms")
    print(
        f"   slowest single query: {worst * 1000:.1f} ms; load average now {os.getloadavg()[0]:.2f}"
    )
    if sq is not None:
        sq.close()
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--with-100m", action="store_true", help="add 100,000,000 events")
    parser.add_argument(
        "--sqlite-max", type=int, default=10_000_000, help="largest size also loaded into SQLite"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse data files of an earlier run in --dir (same sizes)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.with_100m:
        sizes.append(100_000_000)
    print(f"edgemetrics query benchmark: {os.cpu_count()} cores, DuckDB embedded store vs SQLite")
    print(
        f"load average at start: {os.getloadavg()[0]:.2f} (other work on this machine slows both)"
    )
    for n in sizes:
        run_size(n, args.dir, args.repeat, args.sqlite_max, args.reuse)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
