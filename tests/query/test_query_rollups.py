"""Daily rollups (DuckDB and a real PostgreSQL), the rollup CLI, and ranges past 90 days."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from query_aesim import ChdbBackend, FakeSqlApi, load
from query_data import point, reset

from edgemetrics.query import (
    CloudflareBackend,
    EmbeddedBackend,
    Engine,
    Filter,
    Principal,
    Query,
    QueryError,
    TimeRange,
)
from edgemetrics.query.rollup import DuckDBRollups, PostgresRollups, add_command, build
from edgemetrics.retention import enforce_retention
from edgemetrics.store import EmbeddedStore

NOW = datetime(2024, 5, 30, 12, tzinfo=UTC)
DAY0 = datetime(2024, 1, 1, tzinfo=UTC)  # 150 days before NOW: past raw retention
DAYS = 150


def history() -> list[Any]:
    """Events on every other day of 150, with sampling, hostile values and health data."""
    out = []
    for d in range(0, DAYS, 2):
        t = DAY0 + timedelta(days=d, hours=d % 24)
        si = 1 if d % 3 else 4
        for creator, n in (("alice", 2), ("bob", 1), ("o'neil\\", 1)):
            for i in range(n):
                out.append(
                    point(
                        "content",
                        {
                            "type": "view",
                            "creator_id": creator,
                            "content_id": f"{creator}-{i}",
                            "country": "FR" if i else "DE",
                            "new_visitor": 1,
                            "device_class": "mobile",
                        },
                        t + timedelta(minutes=i),
                        si,
                    )
                )
            out.append(
                point(
                    "content",
                    {"type": "play_start", "creator_id": creator, "content_id": f"{creator}-0"},
                    t,
                    si,
                )
            )
            out.append(
                point(
                    "content",
                    {"type": "complete", "creator_id": creator, "content_id": f"{creator}-0"},
                    t,
                    1,
                )
            )
        out.append(
            point(
                "commerce",
                {
                    "type": "purchase",
                    "creator_id": "bob",
                    "amount_minor": 250 + d,
                    "currency": "EUR" if d % 4 else "USD",
                },
                t,
                1,
            )
        )
        out.append(
            point(
                "platform",
                {
                    "type": "api_call",
                    "index1": "app GET /x",
                    "status_code": 500 if d % 5 == 0 else 200,
                    "duration_ms": 10 + d,
                    "calls": 1,
                },
                t,
                si,
            )
        )
    return out


QUERIES = [
    Query(("views", "unique_visitors", "plays", "completion_rate"), ("country",)),
    Query(("views",), ("creator",), bucket="month"),
    Query(("views",), ("content",), bucket="day", order_by=("-views",), limit=7, offset=2),
    Query(("purchases", "revenue", "net_revenue"), ("currency",)),
    Query(("conversion_rate", "views"), ("device_class",)),
    Query(("api_calls", "error_rate", "avg_response_time"), ("status_class",), bucket="week"),
    Query(
        ("views",),
        filters=(Filter("country", "ne", "FR"), Filter("creator", "in", ("alice", "o'neil\\"))),
    ),
]


def _all_time(q: Query) -> Query:
    from dataclasses import replace

    return replace(q, time_range=TimeRange.preset("all"))


def _same(a: Any, b: Any) -> None:
    assert [r.dimensions for r in a.rows] == [r.dimensions for r in b.rows]
    for ra, rb in zip(a.rows, b.rows, strict=True):
        for m in ra.metrics:
            for x, y in ((ra.metrics[m], rb.metrics[m]), (ra.ci[m], rb.ci[m])):
                assert (x is None) == (y is None), (m, ra, rb)
                if x is not None:
                    assert x == pytest.approx(y, rel=1e-9, abs=1e-9), (m, ra, rb)
        assert (ra.row_count, ra.estimated) == (rb.row_count, rb.estimated)


@pytest.fixture()
def year(shared_store: EmbeddedStore) -> EmbeddedStore:
    reset(shared_store)
    shared_store.write(history())
    return shared_store


def _engines(store: EmbeddedStore, rollups: Any) -> tuple[Engine, Engine]:
    clock = lambda: NOW  # noqa: E731
    raw_only = Engine(EmbeddedBackend(store), cache_ttl=0, raw_days=10_000, clock=clock)
    split = Engine(EmbeddedBackend(store), rollups, cache_ttl=0, clock=clock)
    return raw_only, split


def test_duckdb_rollups_answer_like_raw_data(year: EmbeddedStore, tmp_path: Any) -> None:
    rollups = DuckDBRollups(tmp_path / "rollups.duckdb")
    report = build(EmbeddedBackend(year), rollups, now=NOW)
    assert report.days_built == 3 * DAYS  # three families hold data; every day up to yesterday
    raw_only, split = _engines(year, rollups)
    for q in QUERIES:
        for principal in (
            Principal.owner(),
            Principal.creator("alice"),
            Principal.creator("o'neil\\"),
        ):
            if principal.role == "creator" and "api_calls" in q.metrics:
                continue
            a = raw_only.run(_all_time(q), principal)
            b = split.run(_all_time(q), principal)
            assert b.sources == ("rollup", "raw")
            _same(a, b)


def test_postgres_rollups_answer_like_raw_data(year: EmbeddedStore, postgres_dsn: str) -> None:
    rollups = PostgresRollups(postgres_dsn)
    build(EmbeddedBackend(year), rollups, now=NOW, rebuild=True)
    raw_only, split = _engines(year, rollups)
    for q in QUERIES:
        for principal in (Principal.owner(), Principal.creator("bob")):
            if principal.role == "creator" and "api_calls" in q.metrics:
                continue
            _same(raw_only.run(_all_time(q), principal), split.run(_all_time(q), principal))


def test_build_is_idempotent_resumable_and_backfills(
    year: EmbeddedStore, postgres_dsn: str
) -> None:
    rollups = PostgresRollups(postgres_dsn)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM edgemetrics_rollup_days")
        conn.execute("DELETE FROM edgemetrics_rollup_content")
    # An interrupted run: only January was built.
    first = build(
        EmbeddedBackend(year), rollups, until=date(2024, 1, 31), families=("content",), now=NOW
    )
    assert first.days_built == 31

    def content_rows() -> list[Any]:
        with psycopg.connect(postgres_dsn) as conn:
            return conn.execute(
                "SELECT * FROM edgemetrics_rollup_content ORDER BY 1, 2, 3, 4, 5, 6"
            ).fetchall()

    january = content_rows()
    resumed = build(EmbeddedBackend(year), rollups, families=("content",), now=NOW)
    assert resumed.days_skipped == 31 and resumed.days_built == DAYS - 31
    again = build(EmbeddedBackend(year), rollups, families=("content",), now=NOW)
    assert again.days_built == 0
    full = content_rows()
    assert full[: len(january)] == january
    # A lost day is backfilled, and only that day.
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM edgemetrics_rollup_days WHERE day = '2024-03-01'")
    fill = build(EmbeddedBackend(year), rollups, families=("content",), now=NOW)
    assert fill.built == [("content", date(2024, 3, 1))]
    assert content_rows() == full


def test_rollups_from_the_cloudflare_backend(year: EmbeddedStore, tmp_path: Any) -> None:
    data = history()
    load(data)
    with FakeSqlApi() as api:
        cf = CloudflareBackend("acc", "tok", base_url=api.base_url)
        rollups = DuckDBRollups(tmp_path / "cf.duckdb")
        build(cf, rollups, now=NOW)
        local = DuckDBRollups(tmp_path / "local.duckdb")
        build(EmbeddedBackend(year), local, now=NOW)
        for q in QUERIES:
            a = Engine(cf, rollups, cache_ttl=0, clock=lambda: NOW).run(
                _all_time(q), Principal.owner()
            )
            b = Engine(EmbeddedBackend(year), local, cache_ttl=0, clock=lambda: NOW).run(
                _all_time(q), Principal.owner()
            )
            _same(a, b)
            c = Engine(ChdbBackend(), cache_ttl=0, raw_days=10_000, clock=lambda: NOW).run(
                _all_time(q), Principal.owner()
            )  # type: ignore[arg-type]
            _same(a, c)


def test_old_ranges_after_retention_still_answer(year: EmbeddedStore, tmp_path: Any) -> None:
    rollups = DuckDBRollups(tmp_path / "r.duckdb")
    build(EmbeddedBackend(year), rollups, now=NOW)
    raw_only, split = _engines(year, rollups)
    q = _all_time(Query(("views", "plays"), ("creator",)))
    before = raw_only.run(q, Principal.owner())
    report = enforce_retention(year, now=NOW)
    assert report.deleted["edgemetrics_content"] > 0
    assert year.query("SELECT min(timestamp) AS t FROM edgemetrics_content")[0]["t"] >= (
        NOW - timedelta(days=90)
    ).replace(tzinfo=None)
    _same(before, split.run(q, Principal.owner()))
    assert raw_only.run(q, Principal.owner()).rows != before.rows


def test_quantiles_and_hours_past_90_days_are_refused(year: EmbeddedStore, tmp_path: Any) -> None:
    rollups = DuckDBRollups(tmp_path / "r.duckdb")
    _, split = _engines(year, rollups)
    with pytest.raises(QueryError, match="raw_only"):
        split.run(_all_time(Query(("p95_response_time",))), Principal.owner())
    with pytest.raises(QueryError, match="daily"):
        split.run(_all_time(Query(("views",), bucket="hour")), Principal.owner())
    # Within 90 days both work from raw data.
    recent = TimeRange.between(NOW - timedelta(days=30), NOW)
    assert split.run(
        Query(("p95_response_time",), time_range=recent), Principal.owner()
    ).sources == ("raw",)


def test_rollup_cli(year: EmbeddedStore, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.duckdb"
    store = EmbeddedStore(path)
    store.write(history()[:50])
    store.close()
    parser = argparse.ArgumentParser(prog="edgemetrics")
    add_command(parser.add_subparsers())
    args = parser.parse_args(["rollup", "--store", str(path), "--until", "2024-01-10"])
    assert args.func(args) == 0
    first = capsys.readouterr().out
    built = int(re.search(r"built (\d+) day", first).group(1))  # type: ignore[union-attr]
    assert built >= 10  # ten days of content alone
    args = parser.parse_args(["rollup", "--store", str(path), "--until", "2024-01-10"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "built 0 day(s)" in out and f"{built} day(s) already built" in out
