"""Derived tables (edgemetrics.query.aggregates) give the raw rows' answer: rows, values,
intervals, row counts and flags, with sampled rows, across every raw/derived boundary,
after late writes and deletions, through retention, and while maintenance commits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from query_compare import queries, same
from query_data import T0, WINDOW_DAYS, point, points, reset

from edgemetrics.query import EmbeddedBackend, Engine, Filter, Principal, Query, TimeRange
from edgemetrics.query.aggregates import (
    AGG_PREFIX,
    DEFAULT_SPECS,
    SEGMENTS_TABLE,
    Aggregates,
    AggregateSpec,
    SortedRows,
    TenantRows,
)
from edgemetrics.retention import Retention, enforce_retention
from edgemetrics.store import EmbeddedStore

# The defaults, and specs that exercise what they do not: sums kept per tenant, a creator
# dimension, hourly per-tenant rows.
SPECS = (
    *DEFAULT_SPECS,
    AggregateSpec(
        "t_audience",
        "content",
        ("content", "country", "device_class", "authenticated"),
        tenant=True,
    ),
    AggregateSpec("t_sales", "commerce", ("currency", "country"), tenant=True, grain="hour"),
    AggregateSpec("o_creators", "content", ("creator", "content"), grain="hour"),
)


def clear(store: EmbeddedStore) -> None:
    """Empty raw and derived tables of a store shared by a module's tests."""
    reset(store)
    for row in store.query(
        "SELECT table_name FROM information_schema.tables WHERE table_name LIKE ?",
        [AGG_PREFIX + "%"],
    ):
        if row["table_name"] not in ("edgemetrics_agg_specs", "edgemetrics_agg_state"):
            store.execute(f"DELETE FROM {row['table_name']}")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(tmp_path_factory.mktemp("agg") / "em.duckdb")
    yield s
    s.close()


def engines(store: EmbeddedStore, aggregates: Aggregates, now: datetime) -> tuple[Engine, Engine]:
    derived = Engine(EmbeddedBackend(store), aggregates=aggregates, cache_ttl=0, clock=lambda: now)
    raw = Engine(EmbeddedBackend(store), aggregates=None, cache_ttl=0, clock=lambda: now)
    return derived, raw


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    data=points(max_size=80),
    hours=st.integers(0, (WINDOW_DAYS + 1) * 24),
    qs=st.lists(queries(), min_size=1, max_size=5),
)
def test_derived_tables_answer_as_raw_rows(
    store: EmbeddedStore, data: list[Any], hours: int, qs: list[tuple[Query, Principal]]
) -> None:
    # Built up to a random hour of the data: whole days, hours, and rows after both.
    clear(store)
    store.write(data)
    now = T0 + timedelta(hours=hours, minutes=17)
    # row_group_rows=1: a content or country filter reads the sorted rows, as in a large
    # store.
    aggregates = Aggregates(
        store, SPECS, settle_s=0, branch_rows=0, row_group_rows=1, clock=lambda: now
    )
    aggregates.refresh()
    derived, raw = engines(store, aggregates, now)
    for query, principal in qs:
        same(derived.run(query, principal), raw.run(query, principal))
    assert aggregates.drifts == 0


@pytest.fixture()
def month(store: EmbeddedStore) -> tuple[EmbeddedStore, datetime]:
    """Views, plays, abandons and purchases every 90 minutes for 20 days (two creators, some
    rows sampled), API calls with 5xx answers; built up to 13:00 of the last day."""
    clear(store)
    rows = []
    for i in range(20 * 16):
        t = T0 + timedelta(minutes=90 * i + 7)
        creator = ("alice", "bob")[i % 2]
        si = 4 if i % 7 == 0 else 1
        audience = {"creator_id": creator, "content_id": f"{creator}-{i % 3}", "country": "FR"}
        for kind in ("view", "play_start", "abandon", "complete"):
            fields = {"type": kind, **audience, "position": float(i % 50), "new_visitor": 1}
            rows.append(point("content", fields, t, si))
        sale = {"type": "purchase", **audience, "amount_minor": 500, "currency": "EUR"}
        rows.append(point("commerce", sale, t, 1))
        call = {"type": "api_call", "index1": "app GET /a", "status_code": 500 if i % 5 else 200}
        rows.append(point("platform", {**call, "calls": 1, "duration_ms": float(i)}, t, si))
    store.write(rows)
    return store, T0 + timedelta(days=19, hours=13)


DASHBOARD_LIKE = [
    (("views", "watch_time", "purchases"), ()),
    (("views", "unique_visitors", "completion_rate"), ("content",)),
    (("revenue", "purchases"), ("currency",)),
    (("views",), ("country",)),
    (("plays", "abandons", "abandon_position_p50", "abandon_position_p90"), ()),
    (("api_calls", "error_rate", "avg_response_time", "p95_response_time"), ("endpoint",)),
    (("avg_abandon_position", "conversion_rate"), ()),
]


def _ranges(now: datetime) -> list[TimeRange]:
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    return [
        TimeRange.preset("7d"),
        TimeRange.preset("30d"),
        TimeRange.preset("today"),
        # starts inside a built day, ends inside built hours
        TimeRange.between(day - timedelta(days=3, hours=5, minutes=3), now - timedelta(hours=2)),
        # starts inside built hours, ends in the raw tail
        TimeRange.between(day + timedelta(hours=4, minutes=30), now),
        # one hour, all raw
        TimeRange.between(now - timedelta(minutes=50), now),
        # before any data up to the middle of it
        TimeRange.between(T0 - timedelta(days=5), T0 + timedelta(days=4, minutes=1)),
    ]


def test_every_boundary_between_derived_and_raw_rows(
    month: tuple[EmbeddedStore, datetime],
) -> None:
    store, now = month
    aggregates = Aggregates(store, SPECS, settle_s=0, branch_rows=0, clock=lambda: now)
    report = aggregates.refresh()
    days = {(s.t1 - s.t0) for s in aggregates.segments("content")}
    assert timedelta(days=1) in days and timedelta(hours=1) in days  # days and hours built
    derived, raw = engines(store, aggregates, now)
    used = set()
    for metrics, dims in DASHBOARD_LIKE:
        for rng in _ranges(now):
            for bucket in (None, "day", "hour"):
                for principal in (Principal.owner(), Principal.creator("alice")):
                    if principal.role == "creator" and "api_calls" in metrics:
                        continue
                    q = Query(metrics, dims, time_range=rng, bucket=bucket)
                    a = derived.run(q, principal)
                    same(a, raw.run(q, principal))
                    used.update(a.sources)
    assert {"aggregate", "raw"} <= used
    assert report.segments_built > 0 and aggregates.drifts == 0


def test_sampled_rows_give_the_same_estimates_and_intervals(
    month: tuple[EmbeddedStore, datetime],
) -> None:
    store, now = month
    aggregates = Aggregates(store, SPECS, settle_s=0, branch_rows=0, clock=lambda: now)
    aggregates.refresh()
    derived, raw = engines(store, aggregates, now)
    q = Query(
        ("views", "completion_rate", "avg_abandon_position"), time_range=TimeRange.preset("30d")
    )
    a, b = derived.run(q, Principal.owner()), raw.run(q, Principal.owner())
    same(a, b)
    assert a.estimated and "aggregate" in a.sources
    low, high = a.rows[0].ci["views"]
    assert low < a.rows[0]["views"] < high  # a real interval, as from raw rows


def test_a_late_event_inside_covered_time_is_answered_then_repaired(
    month: tuple[EmbeddedStore, datetime],
) -> None:
    store, now = month
    aggregates = Aggregates(store, SPECS, settle_s=0, branch_rows=0, clock=lambda: now)
    aggregates.refresh()
    derived, raw = engines(store, aggregates, now)
    q = Query(("views",), ("content",), time_range=TimeRange.preset("30d"))
    before = derived.run(q, Principal.owner())
    late = {"type": "view", "creator_id": "alice", "content_id": "alice-0", "country": "FR"}
    store.write([point("content", late, T0 + timedelta(days=2, hours=3), 1)])
    after = derived.run(q, Principal.owner())
    same(after, raw.run(q, Principal.owner()))
    assert after.rows[0]["views"] == before.rows[0]["views"] + 1
    assert aggregates.drifts >= 1 and after.sources == ("raw",)
    report = aggregates.refresh()
    assert report.segments_repaired == 1
    drifts = aggregates.drifts
    repaired = derived.run(q, Principal.owner())
    same(repaired, raw.run(q, Principal.owner()))
    assert "aggregate" in repaired.sources and aggregates.drifts == drifts


def test_deleted_rows_are_not_counted(month: tuple[EmbeddedStore, datetime]) -> None:
    store, now = month
    aggregates = Aggregates(store, SPECS, settle_s=0, branch_rows=0, clock=lambda: now)
    aggregates.refresh()
    derived, raw = engines(store, aggregates, now)
    # As erasure does: delete some rows in the middle of covered time.
    store.execute("DELETE FROM edgemetrics_content WHERE blob2 = 'bob-1'")
    q = Query(("views",), ("content",), time_range=TimeRange.preset("30d"))
    same(derived.run(q, Principal.owner()), raw.run(q, Principal.owner()))
    aggregates.refresh()
    result = derived.run(q, Principal.owner())
    same(result, raw.run(q, Principal.owner()))
    assert "bob-1" not in [r["content"] for r in result.rows] and "aggregate" in result.sources


def test_an_old_row_before_covered_time_is_covered_again(
    month: tuple[EmbeddedStore, datetime],
) -> None:
    store, now = month
    aggregates = Aggregates(store, SPECS, settle_s=0, branch_rows=0, clock=lambda: now)
    aggregates.refresh()
    first = aggregates.segments("content")[0].t0
    old = {"type": "view", "creator_id": "alice", "content_id": "alice-9"}
    store.write([point("content", old, first - timedelta(days=40), 1)])
    derived, raw = engines(store, aggregates, now)
    q = Query(("views",), ("content",), time_range=TimeRange.preset("all"))
    same(derived.run(q, Principal.owner()), raw.run(q, Principal.owner()))
    aggregates.refresh()
    assert aggregates.segments("content")[0].t0 == first - timedelta(days=40)
    result = derived.run(q, Principal.owner())
    same(result, raw.run(q, Principal.owner()))
    assert "aggregate" in result.sources


def test_retention_trims_derived_rows_with_the_raw_rows(
    month: tuple[EmbeddedStore, datetime],
) -> None:
    store, now = month
    aggregates = Aggregates(store, SPECS, settle_s=0, branch_rows=0, clock=lambda: now)
    aggregates.refresh()
    # Keep ten and a half days: the cutoff falls inside a built day.
    report = enforce_retention(store, now=now, raw_days=10, rollup_days=400, aggregates=aggregates)
    assert report.deleted["edgemetrics_content"] > 0
    derived, raw = engines(store, aggregates, now)
    for metrics, dims in DASHBOARD_LIKE:
        q = Query(metrics, dims, time_range=TimeRange.preset("30d"))
        result = derived.run(q, Principal.owner())
        same(result, raw.run(q, Principal.owner()))
    assert aggregates.drifts == 0  # trimmed in the same transaction: nothing stale seen
    assert aggregates.segments("content")[0].t0 <= report.cutoff_raw


def test_a_changed_spec_is_rebuilt(month: tuple[EmbeddedStore, datetime]) -> None:
    store, now = month
    Aggregates(store, SPECS, settle_s=0, branch_rows=0, clock=lambda: now).refresh()
    narrower = (AggregateSpec("t_audience", "content", ("country",), tenant=True),)
    aggregates = Aggregates(store, narrower, settle_s=0, branch_rows=0, clock=lambda: now)
    assert aggregates.segments("content") == []  # started over
    aggregates.refresh()
    derived, raw = engines(store, aggregates, now)
    q = Query(("views",), ("country",), time_range=TimeRange.preset("30d"))
    result = derived.run(q, Principal.creator("bob"))
    same(result, raw.run(q, Principal.creator("bob")))
    assert "aggregate" in result.sources
    gone = store.query(
        "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = ?",
        [AGG_PREFIX + "content_audience"],
    )
    assert gone[0]["n"] == 0  # a spec no longer configured is dropped


def test_an_interrupted_refresh_resumes(month: tuple[EmbeddedStore, datetime]) -> None:
    store, now = month
    aggregates = Aggregates(store, SPECS, settle_s=0, branch_rows=0, clock=lambda: now)
    calls = {"n": 0}
    build = aggregates._build

    def failing(*args: Any, **kw: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        build(*args, **kw)

    aggregates._build = failing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        aggregates.refresh()
    derived, raw = engines(store, aggregates, now)
    q = Query(("views", "plays"), ("content",), time_range=TimeRange.preset("30d"))
    same(derived.run(q, Principal.owner()), raw.run(q, Principal.owner()))
    # The run of days committed; the run of hours after them did not.
    assert [s.t1 - s.t0 for s in aggregates.segments("content")] == [timedelta(days=1)] * 19
    aggregates._build = build  # type: ignore[method-assign]
    aggregates.refresh()
    result = derived.run(q, Principal.owner())
    same(result, raw.run(q, Principal.owner()))
    assert aggregates.segments("content")[-1].t1 == datetime(
        now.year, now.month, now.day, now.hour, tzinfo=UTC
    )


def test_answers_stay_exact_while_maintenance_commits(
    month: tuple[EmbeddedStore, datetime],
) -> None:
    """Queries on two threads while a third rebuilds every segment over and over: each
    query reads one snapshot, so no answer mixes old and new segments."""
    store, now = month
    aggregates = Aggregates(store, SPECS, settle_s=0, branch_rows=0, clock=lambda: now)
    aggregates.refresh()
    derived, raw = engines(store, aggregates, now)
    queries_ = [Query(m, d, time_range=r) for m, d in DASHBOARD_LIKE[:4] for r in _ranges(now)[:4]]
    expected = {q: raw.run(q, Principal.owner()) for q in queries_}
    stop = threading.Event()
    errors: list[BaseException] = []

    def rebuild() -> None:
        while not stop.is_set():
            for s in aggregates.segments("content")[-30:]:
                aggregates._build("content", s.t0, s.t1, s.t1 - s.t0, replacing=True)

    def ask() -> None:
        try:
            for _ in range(3):
                for q in queries_:
                    same(derived.run(q, Principal.owner()), expected[q])
        except BaseException as exc:
            errors.append(exc)

    builder = threading.Thread(target=rebuild)
    askers = [threading.Thread(target=ask) for _ in range(2)]
    builder.start()
    for t in askers:
        t.start()
    for t in askers:
        t.join()
    stop.set()
    builder.join()
    assert not errors, errors[0]


def test_retention_maintains_them_and_the_engine_reads_them(tmp_path: Any) -> None:
    now = datetime.now(UTC)
    store = EmbeddedStore(tmp_path / "em.duckdb", retention=Retention(maintain_every_s=0.05))
    try:
        views = [
            point("content", {"type": "view", "creator_id": "c", "content_id": "v"}, t, 1)
            for t in (now - timedelta(days=2), now - timedelta(hours=3))
            for _ in range(20)  # many raw rows, few derived ones: the derived read is cheaper
        ]
        store.write(views)
        retention = store.retention
        assert retention is not None and retention.aggregates is not None
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while not retention.aggregates.segments("content") and datetime.now(UTC) < deadline:
            threading.Event().wait(0.05)
        # The thread may still be mid-run (table sizes, which routing reads, are measured
        # at its end): one more run waits for it, under the same lock, and finds it done.
        retention.aggregates.refresh()
        retention.aggregates.branch_rows = 0  # so few rows would read faster raw
        engine = Engine(EmbeddedBackend(store), cache_ttl=0)
        result = engine.run(Query(("views",), time_range=TimeRange.preset("7d")), Principal.owner())
        assert result.value("views") == 40 and "aggregate" in result.sources
    finally:
        store.close()
    assert not any(t.name == "edgemetrics-retention" for t in threading.enumerate())


def test_copied_rows_hold_no_user_or_session_ids(month: tuple[EmbeddedStore, datetime]) -> None:
    store, now = month
    Aggregates(store, SPECS, settle_s=0, branch_rows=0, clock=lambda: now).refresh()
    assert any(isinstance(spec, SortedRows) for spec in SPECS)
    for spec in SPECS:
        if isinstance(spec, TenantRows | SortedRows):
            cols = {
                r["column_name"]
                for r in store.query(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                    [spec.table],
                )
            }
            from edgemetrics.layout import columns

            assert columns(spec.family)["user_id"] not in cols
            assert columns(spec.family)["session_id"] not in cols
    assert store.query(f"SELECT count(*) AS n FROM {SEGMENTS_TABLE}")[0]["n"] > 0


def test_filters_with_hostile_values_match_the_literal(
    month: tuple[EmbeddedStore, datetime],
) -> None:
    store, now = month
    hostile = ["x' OR '1'='1", "nul\x00mid", "\\", "é中文🙂"]
    rows = [
        point(
            "content",
            {"type": "view", "creator_id": "alice", "country": v},
            T0 + timedelta(hours=i),
            1,
        )
        for i, v in enumerate(hostile)
    ]
    store.write(rows)
    aggregates = Aggregates(store, SPECS, settle_s=0, branch_rows=0, clock=lambda: now)
    aggregates.refresh()
    derived, raw = engines(store, aggregates, now)
    for v in hostile:
        for op in ("eq", "ne"):
            q = Query(
                ("views",),
                ("country",),
                filters=(Filter("country", op, v),),
                time_range=TimeRange.preset("30d"),
            )
            a = derived.run(q, Principal.owner())
            same(a, raw.run(q, Principal.owner()))
            assert "aggregate" in a.sources
        assert [r["country"] for r in a.rows if r["country"] == v] == []


def test_item_questions_read_the_item_rows_and_answer_as_raw_rows(
    month: tuple[EmbeddedStore, datetime],
) -> None:
    """An owner's question about one item (or a few): totals, days, hours, local days,
    quantiles and breakdowns, at every boundary, read the rows sorted by item."""
    store, now = month
    aggregates = Aggregates(
        store, SPECS, settle_s=0, branch_rows=0, row_group_rows=1, clock=lambda: now
    )
    aggregates.refresh()
    derived, raw = engines(store, aggregates, now)
    items = next(s for s in SPECS if isinstance(s, SortedRows) and s.by == ("content",))
    one = Filter("content", "eq", "alice-0")
    few = Filter("content", "in", ("alice-0", "bob-1", "nobody"))
    questions = [
        (("views", "plays", "completion_rate"), (), None, "UTC", (one,)),
        (("views",), (), "day", "UTC", (one,)),
        (("views",), (), "hour", "UTC", (one,)),
        (("views",), (), "day", "Europe/Paris", (one,)),
        (("plays", "abandon_position_p25", "abandon_position_p90"), (), None, "UTC", (one,)),
        (("views",), ("country",), None, "UTC", (one, Filter("country", "eq", "FR"))),
        (("views", "avg_abandon_position"), ("content",), None, "UTC", (few,)),
    ]
    read_items = 0
    for metrics, dims, bucket, tz, filters in questions:
        for rng in _ranges(now):
            q = Query(metrics, dims, filters=filters, time_range=rng, bucket=bucket, tz=tz)
            a = derived.run(q, Principal.owner())
            same(a, raw.run(q, Principal.owner()))
            if any(items.table in sql for sql in a.sql):
                read_items += 1
                assert "aggregate" in a.sources
    assert read_items >= len(questions) * 4  # every range the copy covers
    # Not narrowed to items (ne): the item rows are no help, and are not read.
    q = Query(("views",), filters=(Filter("content", "ne", "alice-0"),), time_range=_ranges(now)[1])
    a = derived.run(q, Principal.owner())
    same(a, raw.run(q, Principal.owner()))
    assert not any(items.table in sql for sql in a.sql)
    # A creator reads its tenant rows, never the item rows.
    q = Query(("views",), filters=(one,), time_range=_ranges(now)[1])
    a = derived.run(q, Principal.creator("alice"))
    same(a, raw.run(q, Principal.creator("alice")))
    assert not any(items.table in sql for sql in a.sql) and "aggregate" in a.sources


def test_copied_and_summed_rows_are_sorted_within_each_segment(
    month: tuple[EmbeddedStore, datetime],
) -> None:
    store, now = month
    Aggregates(store, SPECS, settle_s=0, branch_rows=0, clock=lambda: now).refresh()
    items = next(s for s in SPECS if isinstance(s, SortedRows) and s.by == ("content",))
    rows = store.query(
        f"SELECT date_trunc('day', timestamp) AS d, blob2 AS c FROM {items.table} "
        "WHERE timestamp < (SELECT max(t1) FROM edgemetrics_agg_segments "
        "WHERE family = 'content' AND t1 - t0 = INTERVAL 1 DAY)"
    )
    assert rows and rows == sorted(rows, key=lambda r: (r["d"], r["c"]))
    # Sum specs too, by their dimensions in order within each unit.
    spec = next(s for s in SPECS if isinstance(s, AggregateSpec) and s.name == "content_items")
    keyed = store.query(f"SELECT t, content, content_type FROM {spec.table}")
    assert keyed and keyed == sorted(keyed, key=lambda r: (r["t"], r["content"], r["content_type"]))
    raw_n = store.query("SELECT count(*) AS n FROM edgemetrics_content")[0]["n"]
    assert store.query(f"SELECT count(*) AS n FROM {items.table}")[0]["n"] <= raw_n


def test_lists_under_a_country_filter_read_the_rows_sorted_by_country(
    month: tuple[EmbeddedStore, datetime],
) -> None:
    store, now = month
    aggregates = Aggregates(
        store, SPECS, settle_s=0, branch_rows=0, row_group_rows=1, clock=lambda: now
    )
    aggregates.refresh()
    derived, raw = engines(store, aggregates, now)
    by_country = next(s for s in SPECS if isinstance(s, SortedRows) and s.by[0] == "country")
    audience = (
        Filter("country", "in", ("FR", "DE")),
        Filter("device_class", "eq", ""),
        Filter("authenticated", "eq", "anonymous"),
    )
    for rng in _ranges(now):
        q = Query(
            ("views", "watch_time", "avg_watch_time", "abandon_position_p50"),
            ("content", "content_type"),
            filters=audience,
            time_range=rng,
            order_by=("-views",),
        )
        a = derived.run(q, Principal.owner())
        same(a, raw.run(q, Principal.owner()))
    assert any(by_country.table in sql for sql in a.sql)
    q = Query(("views",), ("content",), filters=(Filter("country", "not_in", ("FR",)),))
    a = derived.run(q, Principal.owner())
    same(a, raw.run(q, Principal.owner()))
    assert not any(by_country.table in sql for sql in a.sql)
