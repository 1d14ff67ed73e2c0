"""The engine as the dashboard uses it: presets, answers under sampling with intervals,
exact purchases, the Cloudflare SQL API over loopback, the cache, retention's schedule."""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from query_aesim import FakeSqlApi, load
from query_data import T0, point, reset

from edgemetrics.events import ApiCall, Purchase, View
from edgemetrics.layout import encode
from edgemetrics.query import (
    BackendAuthError,
    BackendQueryError,
    BackendTimeout,
    BackendUnavailable,
    CloudflareBackend,
    EmbeddedBackend,
    Engine,
    Filter,
    Principal,
    Query,
    QueryError,
    TimeRange,
)
from edgemetrics.retention import Retention
from edgemetrics.store import EmbeddedStore

DAY = TimeRange.between(T0, T0 + timedelta(days=1))


def test_presets_follow_the_local_calendar() -> None:
    now = datetime(2024, 3, 31, 1, 30, tzinfo=UTC)  # 03:30 in Paris, the DST change day
    today = TimeRange.preset("today", tz="Europe/Paris").resolve(now)
    assert today.start == datetime(2024, 3, 30, 23, tzinfo=UTC)  # local midnight, UTC+1 then
    week = TimeRange.preset("7d", tz="Europe/Paris").resolve(now)
    assert week.start == datetime(2024, 3, 24, 23, tzinfo=UTC)
    assert TimeRange.preset("90d").resolve(now).start == datetime(2024, 1, 2, tzinfo=UTC)
    assert TimeRange.preset("all").resolve(now).start.year == 2000
    with pytest.raises(QueryError, match="preset"):
        TimeRange.preset("1y")
    with pytest.raises(QueryError, match="tz"):
        TimeRange.preset("7d", tz="Mars/Base")


def test_bad_queries_name_the_field_and_rule(shared_store: EmbeddedStore) -> None:
    cases = [
        (lambda: Query(()), "metrics"),
        (lambda: Query(("views",), limit=0), "limit"),
        (lambda: Query(("views",), bucket="year"), "bucket"),
        (lambda: Filter("country", "in", ()), "min_items"),
        (lambda: Filter("country", "eq", ("a",)), "type"),
        (lambda: TimeRange.between(T0, T0), "ordered"),
        (lambda: TimeRange.between(T0.replace(tzinfo=None), T0), "aware"),
    ]
    for make, rule in cases:
        with pytest.raises(QueryError, match=rule):
            make()
    engine = Engine(EmbeddedBackend(shared_store), cache_ttl=0)
    with pytest.raises(QueryError, match=r"split by currency .*\[requires\]"):
        engine.run(Query(("revenue",), time_range=DAY), Principal.owner())
    with pytest.raises(QueryError, match="applicable"):
        engine.run(Query(("views",), ("endpoint",), time_range=DAY), Principal.owner())
    with pytest.raises(QueryError, match=r"status_class\.value"):
        engine.run(
            Query(("api_calls",), filters=(Filter("status_class", "eq", "5"),), time_range=DAY),
            Principal.owner(),
        )


def test_sampled_answers_are_estimates_with_intervals(shared_store: EmbeddedStore) -> None:
    reset(shared_store)
    # 30 rows standing for 10 views each, 5 exact rows: 305 views.
    data = [
        point(
            "content",
            {"type": "view", "creator_id": "big", "country": "FR"},
            T0 + timedelta(seconds=i),
            10,
        )
        for i in range(30)
    ]
    data += [
        point("content", {"type": "view", "creator_id": "small", "country": "DE"}, T0, 1)
        for _ in range(5)
    ]
    shared_store.write(data)
    engine = Engine(EmbeddedBackend(shared_store), cache_ttl=0)
    total = engine.run(Query(("views",), time_range=DAY), Principal.owner())
    assert total.value("views") == 305 and total.row_count == 35 and total.estimated
    low, high = total.rows[0].ci["views"]
    half = 1.959963984540054 * math.sqrt(30 * 10 * 9)
    assert (low, high) == pytest.approx((305 - half, 305 + half))
    small = engine.run(Query(("views",), time_range=DAY), Principal.creator("small"))
    assert not small.estimated and small.rows[0].ci["views"] == (5.0, 5.0)


def test_quantile_interval_under_sampling(shared_store: EmbeddedStore) -> None:
    reset(shared_store)
    data = [
        point(
            "platform",
            {
                "type": "api_call",
                "index1": "app GET /x",
                "status_code": 200,
                "duration_ms": float(i),
                "calls": 1,
            },
            T0,
            3 if i > 100 else 1,
        )
        for i in range(1, 201)
    ]
    shared_store.write(data)
    engine = Engine(EmbeddedBackend(shared_store), cache_ttl=0)
    r = engine.run(
        Query(("p50_response_time", "p95_response_time"), time_range=DAY), Principal.owner()
    )
    assert r.estimated
    for name in ("p50_response_time", "p95_response_time"):
        value = r.value(name)
        low, high = r.rows[0].ci[name]
        assert low < value < high
    # Weighted: durations over 100 count three times, so the median moves from 100 to 134.
    assert r.value("p50_response_time") == 134.0


def test_purchases_are_exact_and_split_by_currency(shared_store: EmbeddedStore) -> None:
    reset(shared_store)
    events = [
        Purchase(
            amount_minor=999,
            currency="EUR",
            transaction_id=f"t{i}",
            creator_id="c1",
            timestamp=T0 + timedelta(minutes=i),
        )
        for i in range(3)
    ]
    events.append(
        Purchase(
            amount_minor=500, currency="USD", transaction_id="u", creator_id="c1", timestamp=T0
        )
    )
    shared_store.write([encode(e) for e in events])
    engine = Engine(EmbeddedBackend(shared_store), cache_ttl=0)
    r = engine.run(
        Query(("purchases", "revenue"), ("currency",), time_range=DAY), Principal.creator("c1")
    )
    assert [(x["currency"], x["purchases"], x["revenue"]) for x in r.rows] == [
        ("EUR", 3, 2997),
        ("USD", 1, 500),
    ]
    assert not r.estimated and r.rows[0].ci["revenue"] == (2997, 2997)


def test_cloudflare_backend_over_loopback(shared_store: EmbeddedStore) -> None:
    events = [
        View(content_id="v1", creator_id="c1", country="FR", timestamp=T0),
        ApiCall(method="GET", route="/a", status_code=503, duration_ms=12.5, timestamp=T0),
    ]
    load([encode(e) for e in events])
    with FakeSqlApi() as api:
        good = CloudflareBackend("acc", "tok", base_url=api.base_url, backoff=0.01)
        engine = Engine(good, cache_ttl=0)
        assert (
            engine.run(Query(("views",), ("country",), time_range=DAY), Principal.owner()).rows[0][
                "views"
            ]
            == 1
        )
        assert api.requests[-1].endswith(" FORMAT JSON")
        r = engine.run(
            Query(("error_rate", "p95_response_time"), ("endpoint",), time_range=DAY),
            Principal.owner(),
        )
        assert (r.rows[0]["endpoint"], r.rows[0]["error_rate"], r.rows[0]["p95_response_time"]) == (
            "app GET /a",
            1.0,
            12.5,
        )
        with pytest.raises(BackendAuthError, match="401"):
            CloudflareBackend("acc", "wrong", base_url=api.base_url).run("SELECT 1")
        with pytest.raises(BackendQueryError, match="rejected"):
            good.run("SELECT nosuchcolumn FROM edgemetrics_content")
        api.fail_next = 2
        assert good.run("SELECT 1 AS one") == [{"one": 1}]
        api.fail_next = 10
        with pytest.raises(BackendUnavailable, match="4 attempts"):
            good.run("SELECT 1 AS one")
        api.fail_next = 0
        api.delay = 0.5
        with pytest.raises(BackendTimeout):
            CloudflareBackend("acc", "tok", base_url=api.base_url, timeout=0.1).run("SELECT 1")


def test_cache_expires_after_its_ttl(shared_store: EmbeddedStore) -> None:
    reset(shared_store)
    shared_store.write([encode(View(content_id="v", creator_id="c", timestamp=T0))])
    engine = Engine(EmbeddedBackend(shared_store), cache_ttl=0.3)
    q = Query(("views",), time_range=DAY)
    assert engine.run(q, Principal.owner()).value("views") == 1
    shared_store.write([encode(View(content_id="v", creator_id="c", timestamp=T0))])
    hit = engine.run(q, Principal.owner())
    assert hit.cached and hit.value("views") == 1
    time.sleep(0.35)
    fresh = engine.run(q, Principal.owner())
    assert not fresh.cached and fresh.value("views") == 2


def test_retention_runs_on_a_schedule(shared_store: EmbeddedStore) -> None:
    reset(shared_store)
    now = datetime.now(UTC)
    old = encode(View(content_id="old", creator_id="c", timestamp=now - timedelta(days=91)))
    recent = encode(View(content_id="new", creator_id="c", timestamp=now - timedelta(days=89)))
    shared_store.write([old, recent])
    retention = Retention(every_s=0.05)
    retention.start(shared_store)
    try:
        deadline = time.monotonic() + 10
        while retention.runs < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        late = encode(View(content_id="old2", creator_id="c", timestamp=now - timedelta(days=100)))
        shared_store.write([late])
        runs = retention.runs
        while retention.runs < runs + 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        retention.stop()
    left = [r["blob2"] for r in shared_store.query("SELECT blob2 FROM edgemetrics_content")]
    assert left == ["new"]
    assert retention.deleted == 2
    assert not any(t.name == "edgemetrics-retention" for t in threading.enumerate())
